"""GREAM's reasoning curriculum from RecSim's ground truth: the five-stage chains against hand-written facts, the
latent states regenerated from a log against the simulator's own dynamics, the records in the SFT data path, bad
input, `pbrl rec reason-data`, and reasoning-mode decoding on a tiny trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.rec.decoding import parse_answer, rank_samples, reasoning_decode
from pbrl.rec.reasoning import (
    STAGES,
    ItemFacts,
    UserStates,
    add_reasoning_tokens,
    reasoning_chain,
    reasoning_prompt,
    reasoning_records,
)
from pbrl.rec.semantic_ids import SemanticIds

torch.set_num_threads(1)

# a hand-built catalog: 5 items over 3 topics
ITEMS = ItemFacts(topics=np.array([0, 1, 2, 1, 2]), topic_names=("music", "film", "news"),
                  appeal=np.array([0.5, 0.9, 0.2, 0.35, 0.8]), quality=np.array([0.4, -0.6, 0.1, 0.72, -0.3]))
IDS = SemanticIds(codes=np.array([[1, 1], [1, 2], [2, 1], [2, 2], [3, 1]]), dedup=np.zeros(5, dtype=np.int64), k=3)
ID_TEXT = [IDS.item_text(i) for i in range(5)]


def test_chain_states_the_truth_in_five_ordered_stages():
    interest = np.array([0.2, 0.7, -0.4])  # film is the top latent interest, news disliked
    boredom = np.array([0.0, 2.0, 0.0])  # ... but film bores: u - 0.4 b = [0.2, -0.1, -0.4] -> music now
    # history oldest first: music clicked, film clicked, news skipped, news clicked (a click on a disliked topic)
    text = reasoning_chain([0, 1, 2, 4], [True, True, False, True], 3, interest, boredom, 0.57, ITEMS, ID_TEXT,
                           boredom_weight=0.4)
    a, b, c, d, e = ID_TEXT
    assert text == (
        f"<think>Evidence: clicked {a} music, {b} film, {e} news; skipped {c} news.\n"
        "Preference: likes film (0.7) and music (0.2); dislikes news (-0.4).\n"
        "Intent: wants music now (interest 0.2, boredom 0.0); satisfaction 0.6.\n"
        f"Recommendation: {d}, a film item of quality 0.7 and appeal 0.3.\n"
        f"Denoised history: {a}, {b}.</think><answer>{d}</answer>")  # the skip and the news click are noise
    think = text.split("</think>")[0]
    where = [think.index(f"{s}:") for s in STAGES]
    assert where == sorted(where)  # every stage, in the paper's order
    top = ITEMS.topic_names[int(np.argmax(interest))]
    assert think.split("Preference: likes ")[1].startswith(top)  # the first interest named is the argmax
    assert IDS.item_of(parse_answer(text)) == 3  # the answer parses back to the logged item


def test_chain_edge_cases_empty_history_and_no_liked_topic():
    text = reasoning_chain([], [], 0, np.array([-0.1, -0.5, -0.2]), np.zeros(3), 0.9, ITEMS, ID_TEXT)
    assert "Evidence: clicked none; skipped none." in text and "Denoised history: none." in text
    assert "Preference: likes no topic; dislikes film (-0.5)." in text
    assert "Intent: wants music now" in text  # argmax of u - 0.4 b over [-0.1, -0.5, -0.2]
    assert IDS.item_of(parse_answer(text)) == 0
    assert "(none yet)" in reasoning_prompt([], ID_TEXT) and ID_TEXT[2] in reasoning_prompt([2], ID_TEXT)


def _states(n: int, k: int = 3) -> UserStates:
    rng = np.random.default_rng(0)
    return UserStates(rng.uniform(-1, 1, (n, k)), rng.uniform(0, 1, (n, k)), rng.uniform(0, 1, n))


def test_records_and_bad_input():
    recs = reasoning_records([[0, 1], [2]], [[True, False], [True]], [3, 4], _states(2), ITEMS, ID_TEXT)
    assert [r["task"] for r in recs] == ["reasoning", "reasoning"] and [r["item"] for r in recs] == [3, 4]
    assert [m["role"] for m in recs[0]["messages"]] == ["user", "assistant"]
    assert IDS.item_of(parse_answer(recs[1]["messages"][1]["content"])) == 4
    assert len(reasoning_records([[0, 1], [2]], [[True, False], [True]], [3, 4], _states(2), ITEMS, ID_TEXT,
                                 min_history=2)) == 1  # the paper's history-length rule
    with pytest.raises(PbrlError, match="step 1: item id 9 is not in the catalog"):
        reasoning_records([[0], [9]], [[True], [True]], [3, 4], _states(2), ITEMS, ID_TEXT)
    with pytest.raises(PbrlError, match="step 0: item id -1"):
        reasoning_records([[0]], [[True]], [-1], _states(1), ITEMS, ID_TEXT)
    with pytest.raises(PbrlError, match="3 user states and 2 targets"):
        reasoning_records([[0], [1]], [[True], [True]], [3, 4], _states(3), ITEMS, ID_TEXT)
    with pytest.raises(PbrlError, match="interest has shape"):
        reasoning_records([[0]], [[True]], [3], _states(1, k=4), ITEMS, ID_TEXT)
    with pytest.raises(PbrlError, match="semantic IDs cover 4 items but the catalog has 5"):
        reasoning_records([[0]], [[True]], [3], _states(1), ITEMS, ID_TEXT[:4])
    with pytest.raises(PbrlError, match="2 history items but 1 click flags"):
        reasoning_records([[0, 1]], [[True]], [3], _states(1), ITEMS, ID_TEXT)


def test_records_load_in_the_sft_data_path(tmp_path):
    from pbrl.llm.sft import encode_chats, read_chats
    from pbrl.rec.align_data import alignment_tokenizer

    recs = reasoning_records([[0, 1], [2], []], [[True, False], [True], []], [3, 4, 1], _states(3), ITEMS, ID_TEXT)
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    chats = read_chats(path)
    tok = alignment_tokenizer(recs, IDS, vocab_size=300)
    assert add_reasoning_tokens(tok) == 4
    assert len(tok("<think>x</think><answer>", add_special_tokens=False)["input_ids"]) == 4  # 3 tags + "x"
    examples, counts = encode_chats(tok, chats, max_length=512, max_masked_fraction=1.0)
    assert counts["kept"] == 3 and counts["truncated"] == 0


# ----------------------------------------------------------------------------------------------- the simulator's state
def test_logged_states_follow_the_simulators_dynamics_and_bad_logs_are_refused():
    from pbrl.data.dataset import EpisodeDataset
    from pbrl.data.recipes import get_recipe
    from pbrl_envs.recsim import RecSimEnv
    from pbrl_envs.recsim_data import collect_sessions, logged_user_states

    ds = get_recipe("recsim-mixed").build(800, 1)
    st = logged_user_states(ds)
    env = RecSimEnv()
    assert len(st) == ds.num_transitions and st.interest.shape == (800, env.num_topics)
    first = np.zeros(ds.num_transitions, dtype=bool)
    first[ds.episode_starts[:-1]] = True  # each session's first step
    # a new user has no boredom and a satisfaction drawn from U(0.5, 0.8)
    assert np.all(st.boredom[first] == 0) and np.all((st.satisfaction[first] >= 0.5) & (st.satisfaction[first] <= 0.8))
    # within a session: b_{t+1} = decay * (b_t + onehot(topic of the recommended item)), the env's rule
    nxt = np.flatnonzero(~first[1:]) + 1  # steps whose previous step is in the same session
    onehot = np.eye(env.num_topics)[env.catalog.topics[ds.actions[nxt - 1]]]
    np.testing.assert_allclose(st.boredom[nxt], env.boredom_decay * (st.boredom[nxt - 1] + onehot), atol=1e-12)
    # a click moves satisfaction by the env's formula (exactly, unless clipped at 0 or 1)
    clicked = nxt[ds.rewards[nxt - 1] > 0]
    prev, item = clicked - 1, ds.actions[clicked - 1]
    topic = env.catalog.topics[item]
    rows = np.arange(len(prev))
    want = np.clip(st.satisfaction[prev] + env.sat_click * (env.catalog.quality[item]
                   + 0.5 * st.interest[prev, topic] - 0.5 * st.boredom[prev, topic]), 0, 1)
    np.testing.assert_allclose(st.satisfaction[clicked], want[rows], atol=1e-12)

    with pytest.raises(PbrlError, match="no RecSim recipe provenance"):
        logged_user_states(collect_sessions("random", num_transitions=50, seed=0))
    eps = [ds.episode(i) for i in range(ds.num_episodes)]
    a = eps[0].actions.copy()
    a[0] = (a[0] + 1) % env.num_items
    eps[0] = type(eps[0])(eps[0].observations, a, eps[0].rewards, eps[0].terminations, eps[0].truncations)
    changed = EpisodeDataset.from_episodes(eps, metadata=ds.metadata, observation_space=env.observation_space,
                                           action_space=env.action_space)
    with pytest.raises(PbrlError, match="does not replay from its provenance"):
        logged_user_states(changed)


def test_decode_clicks_reads_the_observation():
    from pbrl_envs.recsim import RecSimEnv

    env = RecSimEnv()
    env.reset(seed=3)
    seen = []
    for item in (4, 9, 4):
        obs, r, *_ = env.step(item)
        seen.append(r > 0)
    assert env.decode_history(obs)[:3].tolist() == [4, 9, 4]  # most recent first
    assert env.decode_clicks(obs)[:3].tolist() == seen[::-1] and not env.decode_clicks(obs)[3:].any()


def test_reason_data_command(tmp_path, capsys):
    from pbrl.cli import main
    from pbrl.data.recipes import get_recipe
    from pbrl.utils import read_json_lines

    ds = get_recipe("recsim-mixed").build(600, 0)
    ds.to_minari("pbrl/recsim/mixed-v0")
    ids = SemanticIds(codes=np.stack([np.arange(100) % 16 + 1, np.arange(100) // 16 + 1], 1),
                      dedup=np.zeros(100, dtype=np.int64), k=16)
    ids.save(tmp_path / "semantic_ids.json")
    out = tmp_path / "reason.jsonl"
    assert main(["rec", "reason-data", "pbrl/recsim/mixed-v0", "--ids", str(tmp_path), "--out", str(out)]) == 0
    rows = [r for _, r in read_json_lines(out)]
    clicked = np.flatnonzero(ds.rewards > 0)
    assert len(rows) == len(clicked) and [r["item"] for r in rows] == ds.actions[clicked].tolist()
    assert all(ids.item_of(parse_answer(r["messages"][1]["content"])) == r["item"] for r in rows)
    capsys.readouterr()
    # refusals: one line each, the output left alone
    before = out.read_text()
    assert main(["rec", "reason-data", "pbrl/recsim/mixed-v0", "--ids", str(tmp_path), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == before
    small = SemanticIds(codes=ids.codes[:50], dedup=ids.dedup[:50], k=16)
    small.save(tmp_path / "s" / "semantic_ids.json")
    assert main(["rec", "reason-data", "pbrl/recsim/mixed-v0", "--ids", str(tmp_path / "s"), "--out",
                 str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pbrl: error:") and "IDs for 50 items" in err[0]
    assert not (tmp_path / "x.jsonl").exists()


# ----------------------------------------------------------------------------------------------- reasoning mode
def test_reasoning_decode_on_a_tiny_trained_model_returns_catalog_items_ranked_by_logprob():
    from pbrl.llm.models import TinyLMConfig, build_model
    from pbrl.llm.odpo import prompt_ids
    from pbrl.llm.sampler import HFSampler, SamplingConfig
    from pbrl.llm.tokenizer import end_of_turn_id, render_chat
    from pbrl.rec.align_data import alignment_tokenizer

    recs = reasoning_records([[0, 1], [2], [4, 3]], [[True, False], [True], [False, True]], [3, 4, 1], _states(3),
                             ITEMS, ID_TEXT)
    tok = alignment_tokenizer(recs, IDS, vocab_size=300)
    add_reasoning_tokens(tok)
    model = build_model(TinyLMConfig(vocab_size=len(tok), hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2,
                                     intermediate_size=96, max_position=512), seed=0)
    seqs = [tok(render_chat(tok, r["messages"]), add_special_tokens=True)["input_ids"] for r in recs]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):  # memorise the three chains
        loss = sum(model(input_ids=torch.tensor([s]), labels=torch.tensor([s])).loss for s in seqs) / 3
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    prompts = [prompt_ids(tok, {"messages": [r["messages"][0]]}) for r in recs]
    eos = end_of_turn_id(tok)
    kw = dict(n=6, temperature=0.7, top_p=0.9, max_new_tokens=260, eos_token_id=eos, seed=5)
    res = reasoning_decode(HFSampler(model), prompts, tok, IDS, **kw)
    assert res.samples == 18 and res.think_tokens > 20
    assert all(0 <= item < 5 for per in res.ranked for item, _ in per)  # only catalog items come back
    assert sum(len(per) > 0 for per in res.ranked) == 3  # the trained model answers every prompt
    assert {item for per in res.ranked for item, _ in per} <= {3, 4, 1}  # the memorised answers
    # the ranking against a naive reference on the same samples: each item's best total log-prob, decreasing
    gen = HFSampler(model).generate(prompts, SamplingConfig(**kw))
    for per, toks, lps in zip(res.ranked, gen.tokens, gen.logprobs):
        items = [IDS.item_of(p) if (p := parse_answer(tok.decode(y, skip_special_tokens=False).replace(
            tok.convert_ids_to_tokens(eos), ""))) is not None else None for y in toks]
        assert per == rank_samples(items, [sum(x) for x in lps])
        best = {}
        for i, lp in zip(items, lps):
            if i is not None:
                best[i] = max(best.get(i, -np.inf), sum(lp))
        assert [i for i, _ in per] == sorted(best, key=lambda i: (-best[i], i))


def test_results_section_computes_the_verdict_from_the_records():
    from baselines.gream_recsim import REASON_ROW, reasoning_section

    def row(clicks, std, recall, **sim):
        return {"sim": {"clicks": clicks, "clicks_std": std, "episodes": 100, "distinct_items": 6,
                        "mean_quality": 0.3, **sim},
                "offline": {"rec/recall@10": recall, "rec/ndcg@10": recall / 2, "rec/invalid_rate": 0.0,
                            "rec/format_failure_rate": 0.5, "rec/invalid_id_rate": 0.1, "think_tokens": 100.0}}

    reason = {"format_failure_rate": 0.6, "invalid_id_rate": 0.05, "fallback_rate": 0.7}
    pols = {"random": {"clicks": 7.0}, "popular": {"clicks": 6.0}, "click": {"clicks": 8.0}}
    recs = [{"seed": s, "behaviour_policies": pols,
             "rows": {"next-item SFT": row(5.0, 3.0, 0.5), REASON_ROW: row(c, 4.0, 0.1, **reason)}}
            for s, c in ((0, 3.0), (1, 4.5))]
    text = "\n".join(reasoning_section(recs))
    # 2 SE = 2 * hypot(3, 4) / sqrt(100) = 1.00: seed 0 is 2.00 below, seed 1 only 0.50 below
    assert "per seed difference -2.00 (2 SE 1.00), -0.50 (2 SE 1.00); above 2 SE in 0 of 2 seeds, below in 1" in text
    assert "reasoning mode is not distinguishable from direct mode" in text
    assert "-0.400, -0.400 (reasoning mode does worse in every seed)" in text
    assert "70% of reasoning mode's simulator steps had no valid answer" in text and "mostly that fallback's" in text
    assert "reasoning mode 3.75 clicks per session, the best of the random, popular and click policies 8.00 (click): " \
        "reasoning mode does not beat it." in text
    recs[1]["rows"][REASON_ROW]["sim"]["clicks"] = 2.0  # now below 2 SE in both seeds
    assert "reasoning mode is worse than direct mode" in "\n".join(reasoning_section(recs))
