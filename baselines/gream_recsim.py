"""The LLM recommender on RecSim: next-item SFT, then SRPO with the verifiable reward, the learned session reward, or
both, each run as a policy in `pbrl/RecSim-v0` for its clicks per session.

The claim tested (issue "GREAM ... fed by learned rewards"): a reward learned from session preferences on the logs
(`pbrl.rec.session_preferences`: windows compared by the clicks of the rest of their session) makes the LLM
recommender beat next-item imitation on long-term session return. Pipeline, one run folder per seed:

    data     `recsim-mixed` (a quarter each of random, popularity, click-chasing and planner sessions), `size` steps;
             a seeded 10 % of sessions held out for the offline next-item metrics
    ids      the catalog's item texts (dataset metadata) -> embeddings (MiniLM, `pbrl.rec.semantic_ids.embed_texts`,
             or seeded Gaussian vectors with --embed random) -> residual balanced k-means semantic IDs
    sft      chat records: seqrec = the items of the step's observation history (<= 5, oldest first) -> the item the
             user clicked at that step (every clicked logged step of the training sessions), plus item2index /
             index2item for every item; a BPE tokenizer with the ID tokens; a tiny Llama trained from scratch
             (`pbrl.llm.sft.train_sft`, max_masked_fraction 1.0 as in `pbrl.rec.gream`)
    reward   a step-wise MLP ensemble (`pbrl.rewards.train_reward`) on session preferences of the whole log;
             `pbrl.rec.session_reward.SessionReward` turns it into r(prompt, item): the member z-scored reward of
             recommending the item in the prompt's logged observation (what the relabeling gives a logged step)
    srpo     three runs from the SFT model on the same prompts (clicked training steps, target = the clicked item):
             verifiable = RSVR (graded code match to the clicked item); learned = reward "none" + r(p, i);
             both = RSVR + r(p, i) (`SessionReward.combined(1, 1)`); BGAE advantages, trie-constrained rollouts
    reason   the "reasoning SFT" row: the same SFT records plus reasoning chains (`pbrl.rec.reasoning`: five stages
             written from the simulator's latent user state, regenerated from the log's provenance by
             `pbrl_envs.recsim_data.logged_user_states`) at a seeded subset of the clicked training steps; a model of
             the same shape from scratch; decoded in reasoning mode (`pbrl.rec.decoding.reasoning_decode`: n samples
             ranked by total log-prob), offline on the same held-out steps and in the simulator on the same users,
             with its format failures, invalid IDs and think length beside direct mode's trie beams
    eval     offline: trie beam search on the held-out clicked steps, Recall@1/5/10, NDCG@5/10; in the simulator:
             the same seeded users for every row; each step the LLM's prompt is the observation's history, its
             recommendation the best trie beam whose item is not in that history; clicks per session and session length, beside the
             logged behaviour, the four behaviour policies (random, popular, click-model, planner oracle) on the
             same users and, with --iql-steps, IQL on the true and on the learned reward (`pbrl.policies`, its own
             evaluation users)

    PYTHONPATH=. python baselines/gream_recsim.py --budget smoke           # a few minutes on a loaded CPU
    PYTHONPATH=. python baselines/gream_recsim.py --budget small --seeds 0 1 2
    PYTHONPATH=. python baselines/gream_recsim.py --table-only results/records/gream_recsim-smoke \
        results/records/gream_recsim-small                                 # the table from the records

Records: results/records/gream_recsim-<budget>/seed_<s>.json (everything measured, with its settings and the
machine's load); results/gream_recsim.md (its header names the budget) is written from the records only. Runs: runs/gream_recsim/<budget>/.
Resumable per row: a seed whose record exists is not rerun; if it lacks the reasoning row only that row is computed
(from the same data and IDs, rebuilt and checked against the record) and added; a complete record is kept as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pbrl.errors import fail, run_script  # noqa: E402

BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"size": 4000, "queries": 1000, "length": 5, "reward_epochs": 20, "reward_hidden": 64, "levels": 2,
              "k": 16, "hidden": 64, "layers": 2, "sft_epochs": 3, "rl_steps": 40, "prompts_per_step": 16,
              "rollouts": 8, "rl_lr": 1e-4, "rl_prompts": 256, "eval_episodes": 20, "beams": 4,
              "offline_prompts": 100, "iql_steps": 0},
    "small": {"size": 20_000, "queries": 2000, "length": 5, "reward_epochs": 30, "reward_hidden": 128, "levels": 2,
              "k": 16, "hidden": 128, "layers": 3, "sft_epochs": 3, "rl_steps": 40, "prompts_per_step": 16,
              "rollouts": 8, "rl_lr": 1e-4, "rl_prompts": 1024, "eval_episodes": 100, "beams": 4,
              "offline_prompts": 300, "iql_steps": 3000},
}
# the reasoning row (reasoning-mode SFT and decoding), kept apart from BUDGETS so that records written before it existed
# keep their settings
REASON_BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"records": 400, "offline_samples": 10, "sim_samples": 4, "temperature": 0.7, "top_p": 0.9},
    "small": {"records": 2000, "offline_samples": 10, "sim_samples": 4, "temperature": 0.7, "top_p": 0.9},
}
REASON_ROW = "reasoning SFT"
EVAL_SEED = 20_000  # simulator users of the evaluation: seeds EVAL_SEED + e, apart from the data's seeds
RL_ROWS = {"verifiable": (1.0, 0.0), "learned": (0.0, 1.0), "both": (1.0, 1.0)}  # (verifiable, learned) weights
NO_HISTORY = "(none yet)"
TABLE = os.path.join("results", "gream_recsim.md")


def _say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------- prompts
def history_of(obs: np.ndarray, env) -> list[int]:
    """The observation's history items, oldest first (the env lists them most recent first, -1 = empty)."""
    ids = env.decode_history(obs)
    return [int(i) for i in ids[::-1] if i >= 0]


def prompt_text(history: list[int], ids) -> str:
    from pbrl.rec.align_data import HISTORY_SEP, PROMPTS

    inters = HISTORY_SEP.join(ids.item_text(i) for i in history) if history else NO_HISTORY
    return PROMPTS["seqrec"][0].format(inters=inters)


def sft_records(steps: np.ndarray, histories: list[list[int]], targets: np.ndarray, ids, texts: list[str]
                ) -> list[dict[str, Any]]:
    """seqrec records of the given steps, plus item2index / index2item for every catalog item."""
    recs = [{"messages": [{"role": "user", "content": prompt_text(h, ids)},
                          {"role": "assistant", "content": ids.item_text(int(t))}], "task": "seqrec", "item": int(t)}
            for h, t in zip(histories, targets)]
    for i, text in enumerate(texts):
        title = text.split(":")[0]
        recs.append({"messages": [{"role": "user", "content": f'Which item has the title: "{title}"?'},
                                  {"role": "assistant", "content": ids.item_text(i)}], "task": "item2index",
                     "item": i})
        recs.append({"messages": [{"role": "user", "content": f"What is the title and description of item "
                                                              f"{ids.item_text(i)}?"},
                                  {"role": "assistant", "content": text}], "task": "index2item"})
    return recs


def encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    from pbrl.llm.odpo import prompt_ids

    return [prompt_ids(tokenizer, {"messages": [{"role": "user", "content": t}]}) for t in texts]


# ----------------------------------------------------------------------------------------------- simulator
def run_policy_sessions(make_policy, episodes: int, env_cls) -> dict[str, float]:
    """Clicks per session and session length of a per-step policy (obs -> item) over the seeded users."""
    clicks, lengths = [], []
    for e in range(episodes):
        env = env_cls()
        obs, _ = env.reset(seed=EVAL_SEED + e)
        pol = make_policy(env)
        done, c, n = False, 0.0, 0
        while not done:
            obs, r, term, trunc, _ = env.step(pol(obs))
            c, n, done = c + r, n + 1, term or trunc
        clicks.append(c)
        lengths.append(n)
    return {"clicks": float(np.mean(clicks)), "clicks_std": float(np.std(clicks)), "length": float(np.mean(lengths)),
            "episodes": episodes}


def run_llm_sessions(model, tokenizer, ids, episodes: int, num_beams: int, env_cls, label: str) -> dict[str, Any]:
    """The LLM as a policy: all sessions step together; each step one trie-constrained beam search over the live
    sessions' prompts (their observation histories); recommended: the best beam whose item is not in the history
    (the top beam when all are)."""
    from tqdm.auto import tqdm

    from pbrl.llm.sampler import TokenTrie
    from pbrl.llm.tokenizer import end_of_turn_id
    from pbrl.rec.decoding import IdVocab, constrained_beam_search

    vocab = IdVocab(ids, tokenizer)
    trie, eos = TokenTrie(vocab.items), end_of_turn_id(tokenizer)
    envs = [env_cls() for _ in range(episodes)]
    obs = [env.reset(seed=EVAL_SEED + e)[0] for e, env in enumerate(envs)]
    clicks, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    live = list(range(episodes))
    recs: list[int] = []
    t0 = time.perf_counter()
    bar = tqdm(desc=f"sim/{label}", unit="step", leave=False)
    while live:
        prompts = encode_prompts(tokenizer, [prompt_text(history_of(obs[e], envs[e]), ids) for e in live])
        beams = constrained_beam_search(model, prompts, trie, vocab=vocab, eos_token_id=eos, num_beams=num_beams,
                                        pad_token_id=tokenizer.pad_token_id, batch_size=len(prompts))
        nxt = []
        for e, per in zip(live, beams):
            # the best beam whose item is not in the history (a recommender does not re-serve what was just
            # shown; the env penalises repeats); the top beam when every beam repeats one
            seen = set(history_of(obs[e], envs[e]))
            ranked = [bm.item for bm in per if bm.item is not None]  # the trie only emits catalog IDs
            fresh = [i for i in ranked if i not in seen]
            item = fresh[0] if fresh else ranked[0]
            recs.append(int(item))
            obs[e], r, term, trunc, _ = envs[e].step(item)
            clicks[e] += r
            lengths[e] += 1
            if not (term or trunc):
                nxt.append(e)
        bar.update(len(live))
        live = nxt
    bar.close()
    dt = time.perf_counter() - t0
    steps = int(lengths.sum())
    return {"clicks": float(clicks.mean()), "clicks_std": float(clicks.std()), "length": float(lengths.mean()),
            "episodes": episodes, "distinct_items": len(set(recs)), "seconds": dt, "steps_per_s": steps / dt,
            "mean_quality": float(np.mean(envs[0].catalog.quality[recs])),
            "mean_appeal": float(np.mean(envs[0].catalog.appeal[recs]))}


def run_reasoning_sessions(model, tokenizer, ids, episodes: int, r: dict[str, Any], max_new: int, env_cls,
                           label: str, seed: int) -> dict[str, Any]:
    """The reasoning-mode LLM as a policy: each step, n sampled responses per live session (its observation history
    in the reasoning prompt), items ranked by total log-prob (`pbrl.rec.decoding.reasoning_decode`); recommended:
    the best-ranked item not in the history (the top one when all are). A step where no sample names a valid item
    falls back to a seeded uniform item and is counted (`fallback_rate`)."""
    from tqdm.auto import tqdm

    from pbrl.llm.sampler import HFSampler
    from pbrl.llm.tokenizer import end_of_turn_id
    from pbrl.rec.decoding import reasoning_decode
    from pbrl.rec.reasoning import reasoning_prompt

    id_text = [ids.item_text(i) for i in range(ids.num_items)]
    sampler, eos = HFSampler(model), end_of_turn_id(tokenizer)
    envs = [env_cls() for _ in range(episodes)]
    obs = [env.reset(seed=EVAL_SEED + e)[0] for e, env in enumerate(envs)]
    clicks, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    live = list(range(episodes))
    recs: list[int] = []
    rng = np.random.default_rng(seed)
    n_samples = n_bad_format = n_bad_id = fallbacks = tokens = 0
    think_sum = 0.0
    t0 = time.perf_counter()
    bar = tqdm(desc=f"sim/{label}", unit="step", leave=False)
    rounds = 0
    while live:
        prompts = encode_prompts(tokenizer, [reasoning_prompt(history_of(obs[e], envs[e]), id_text) for e in live])
        res = reasoning_decode(sampler, prompts, tokenizer, ids, n=r["sim_samples"], temperature=r["temperature"],
                               top_p=r["top_p"], max_new_tokens=max_new, eos_token_id=eos, seed=seed * 1000 + rounds)
        rounds += 1
        n_samples += res.samples
        n_bad_format += res.format_failures
        n_bad_id += res.invalid_ids
        think_sum += res.think_tokens * (res.samples - res.format_failures)
        tokens += res.generated_tokens
        nxt = []
        for e, ranked in zip(live, res.ranked):
            seen = set(history_of(obs[e], envs[e]))
            fresh = [i for i, _ in ranked if i not in seen]
            if ranked:
                item = fresh[0] if fresh else ranked[0][0]
            else:  # no sample named a catalog item: a uniform item, counted
                item = int(rng.integers(envs[e].num_items))
                fallbacks += 1
            recs.append(int(item))
            obs[e], rew, term, trunc, _ = envs[e].step(item)
            clicks[e] += rew
            lengths[e] += 1
            if not (term or trunc):
                nxt.append(e)
        bar.update(len(live))
        bar.set_postfix_str(f"{tokens / (time.perf_counter() - t0):.0f} tok/s")
        live = nxt
    bar.close()
    dt = time.perf_counter() - t0
    steps = int(lengths.sum())
    well_formed = n_samples - n_bad_format
    return {"clicks": float(clicks.mean()), "clicks_std": float(clicks.std()), "length": float(lengths.mean()),
            "episodes": episodes, "distinct_items": len(set(recs)), "seconds": dt, "steps_per_s": steps / dt,
            "mean_quality": float(np.mean(envs[0].catalog.quality[recs])),
            "mean_appeal": float(np.mean(envs[0].catalog.appeal[recs])),
            "samples": n_samples, "format_failure_rate": n_bad_format / n_samples, "invalid_id_rate":
            n_bad_id / n_samples, "think_tokens": think_sum / well_formed if well_formed else 0.0,
            "fallback_rate": fallbacks / steps, "generated_tokens_per_s": tokens / dt}


# ----------------------------------------------------------------------------------------------- one seed
def prepare(budget: str, seed: int, embed: str, rec: dict[str, Any]) -> dict[str, Any]:
    """The seed's data, held-out split and semantic IDs (deterministic given budget, seed, embed); fills rec["data"],
    rec["ids"] and their timings."""
    from pbrl.rec.semantic_ids import embed_texts, semantic_ids_from_embeddings
    from pbrl_envs import RECIPES
    from pbrl_envs.recsim import RecSimEnv

    b = BUDGETS[budget]
    rec.setdefault("timings", {})

    def timed(name: str, t0: float) -> None:
        rec["timings"][name] = time.perf_counter() - t0

    # ---- data
    t0 = time.perf_counter()
    ds = RECIPES["recsim-mixed"].build(b["size"], seed)
    env0 = RecSimEnv()
    texts = list(ds.metadata["items"]["text"])
    n_sess = ds.num_episodes
    # held-out sessions: a seeded 10 % (the recipe stores its policies' sessions one policy after another)
    held = np.random.default_rng(seed).permutation(n_sess)[: max(1, n_sess // 10)]
    test_mask = np.isin(ds.episode_index_of(np.arange(ds.num_transitions)), held)  # [N]
    obs = ds.observations  # [N, obs_dim]
    hist = [history_of(o, env0) for o in obs]
    clicked = np.flatnonzero(ds.rewards > 0)
    train_steps, test_steps = clicked[~test_mask[clicked]], clicked[test_mask[clicked]]
    rec["data"] = {"transitions": ds.num_transitions, "sessions": n_sess, "clicked_train_steps": len(train_steps),
                   "clicked_test_steps": len(test_steps), "behaviour_clicks": float(ds.episode_returns().mean()),
                   "behaviour_length": float(ds.episode_lengths.mean()),
                   "ref_random": ds.metadata["ref_min_score"], "ref_planner": ds.metadata["ref_max_score"]}
    timed("data", t0)
    _say(f"[data] {ds.num_transitions} steps, {n_sess} sessions, behaviour {rec['data']['behaviour_clicks']:.2f} "
         f"clicks/session; {len(train_steps)} clicked training steps, {len(test_steps)} held out")

    # ---- semantic IDs
    t0 = time.perf_counter()
    if embed == "minilm":
        emb = embed_texts(texts, threads=1, progress=False)
    else:
        emb = np.random.default_rng(seed).normal(size=(len(texts), 32)).astype(np.float32)
    ids = semantic_ids_from_embeddings(emb, levels=b["levels"], k=b["k"], seed=0, progress=False)
    rec["ids"] = ids.stats()
    timed("ids", t0)
    _say(f"[ids] {ids.stats_line()}")
    return {"ds": ds, "env": env0, "texts": texts, "obs": obs, "hist": hist, "ids": ids, "train_steps": train_steps,
            "test_steps": test_steps}


def split_prompts(train_steps: np.ndarray, test_steps: np.ndarray, b: dict[str, Any], seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(SRPO prompt steps, offline evaluation steps): seeded draws, the same for every row of a seed."""
    rng = np.random.default_rng(seed)
    rl_steps = np.sort(rng.choice(train_steps, size=min(b["rl_prompts"], len(train_steps)), replace=False))
    off_steps = test_steps[np.sort(rng.choice(len(test_steps), size=min(b["offline_prompts"], len(test_steps)),
                                              replace=False))]
    return rl_steps, off_steps


def run_seed(budget: str, seed: int, embed: str, runs: str, prepared: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Every row but the reasoning one (`run_reasoning_row`); `prepared` receives the seed's data and IDs."""
    import torch

    from pbrl.llm.models import TinyLMConfig, load_model
    from pbrl.llm.sft import SftConfig, train_sft
    from pbrl.llm.tokenizer import load_tokenizer
    from pbrl.rec.align_data import alignment_tokenizer
    from pbrl.rec.gream import evaluate_model
    from pbrl.rec.session_reward import SessionReward, member_stats
    from pbrl.rec.sessions import session_preferences
    from pbrl.rec.srpo import SrpoConfig, train_srpo
    from pbrl.rewards.relabel import relabel
    from pbrl.rewards.train import RewardConfig, load_reward_model, train_reward
    from pbrl.utils import atomic_write_text, git_revision, load_note
    from pbrl_envs.recsim import RecSimEnv
    from pbrl_envs.recsim_data import POLICIES

    b = BUDGETS[budget]
    out = Path(runs) / budget / f"seed_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"budget": budget, "seed": seed, "settings": b, "embed": embed, "timings": {}}
    t_all = time.perf_counter()

    def timed(name: str, t0: float) -> None:
        rec["timings"][name] = time.perf_counter() - t0

    c = prepare(budget, seed, embed, rec)
    if prepared is not None:
        prepared.update(c)
    ds, env0, texts, obs, hist, ids = c["ds"], c["env"], c["texts"], c["obs"], c["hist"], c["ids"]
    train_steps, test_steps = c["train_steps"], c["test_steps"]

    # ---- SFT data, tokenizer, model
    t0 = time.perf_counter()
    records = sft_records(train_steps, [hist[t] for t in train_steps], ds.actions[train_steps], ids, texts)
    atomic_write_text(str(out / "sft.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    tok_dir = out / "tokenizer"
    alignment_tokenizer(records, ids, vocab_size=600).save_pretrained(str(tok_dir))
    sft_cfg = SftConfig(data=str(out / "sft.jsonl"), out=str(out / "sft"), tokenizer_path=str(tok_dir),
                        model=TinyLMConfig(hidden_size=b["hidden"], num_layers=b["layers"], num_heads=4,
                                           num_kv_heads=2, intermediate_size=3 * b["hidden"], max_position=512),
                        max_length=192, max_masked_fraction=1.0, batch_size=32, lr=1e-3, warmup_steps=20,
                        epochs=b["sft_epochs"], seed=seed, device="cpu", progress=True, checkpoint_every=100)
    sft = train_sft(sft_cfg)
    hist_rows = sft["history"]
    rec["sft"] = {"records": len(records), "steps": sft["step"], "num_parameters": sft["num_parameters"],
                  "first_loss": float(hist_rows[0]["sft/loss"]), "final_loss": float(hist_rows[-1]["sft/loss"])}
    timed("sft", t0)
    _say(f"[sft] {sft['step']} steps, loss {rec['sft']['first_loss']:.3f} -> {rec['sft']['final_loss']:.3f}, "
         f"{sft['num_parameters']:,} parameters, {rec['timings']['sft']:.0f} s")
    sft_model = out / "sft" / "model"
    tokenizer = load_tokenizer(sft_model)

    # ---- the learned session reward
    t0 = time.perf_counter()
    pairs = session_preferences(ds, b["queries"], b["length"], seed=seed)
    hidden = (b["reward_hidden"], b["reward_hidden"])
    train_reward(ds, pairs, RewardConfig(hidden=hidden, epochs=b["reward_epochs"], seed=seed), out_dir=out / "reward",
                 progress=False)
    rmodel = load_reward_model(out / "reward")
    rl_ds = relabel(ds, rmodel)
    corr = float(np.corrcoef(ds.episode_returns(), rl_ds.episode_returns())[0, 1])
    rl_steps, off_steps = split_prompts(train_steps, test_steps, b, seed)
    sreward = SessionReward(rmodel, obs[rl_steps], member_stats(ds, rmodel))
    cat = np.mean([sreward.catalog_scores(p) for p in range(len(rl_steps))], 0)  # [I] mean over the prompts
    rec["reward"] = {"pairs": len(pairs), "final": rmodel.info.get("final", {}), "corr_session_return": corr,
                     "corr_item_quality": float(np.corrcoef(cat, env0.catalog.quality)[0, 1]),
                     "corr_item_appeal": float(np.corrcoef(cat, env0.catalog.appeal)[0, 1])}
    timed("reward", t0)
    _say(f"[reward] corr(session return, learned) {corr:.3f}; the reward's mean item score vs quality "
         f"{rec['reward']['corr_item_quality']:.3f}, vs appeal {rec['reward']['corr_item_appeal']:.3f}")

    # ---- SRPO rows
    rl_prompts = encode_prompts(tokenizer, [prompt_text(hist[t], ids) for t in rl_steps])
    rl_targets = [int(a) for a in ds.actions[rl_steps]]
    models = {"next-item SFT": sft_model}
    rec["rl"] = {}
    for name, (wv, wl) in RL_ROWS.items():
        t0 = time.perf_counter()
        mode, extra = sreward.combined(wv, wl)
        cfg = SrpoConfig(out=str(out / f"srpo-{name}"), steps=b["rl_steps"], prompts_per_step=b["prompts_per_step"],
                         n=b["rollouts"], k=min(4, b["rollouts"]), reward=mode, advantage="bgae", decoding="trie",
                         lr=b["rl_lr"], seed=seed, device="cpu", progress=True, checkpoint_every=10)
        summ = train_srpo(cfg, sft_model, rl_prompts, rl_targets, ids, tokenizer, extra_reward=extra)
        h = summ["history"]
        rec["rl"][name] = {"reward_mode": mode, "weights": [wv, wl], "steps": len(h),
                           "first_reward": h[0]["srpo/reward"], "last_reward": h[-1]["srpo/reward"],
                           "first_exact": h[0]["srpo/exact"], "last_exact": h[-1]["srpo/exact"],
                           "kept_groups": float(np.mean([r["srpo/kept_groups"] for r in h]))}
        timed(f"srpo-{name}", t0)
        models[f"SRPO {name}"] = Path(summ["model"])
        _say(f"[srpo {name}] {len(h)} steps, reward {h[0]['srpo/reward']:.3f} -> {h[-1]['srpo/reward']:.3f}, exact "
             f"{h[0]['srpo/exact']:.3f} -> {h[-1]['srpo/exact']:.3f}, {rec['timings'][f'srpo-{name}']:.0f} s")

    # ---- evaluation: offline next-item metrics and sessions in the simulator
    off_prompts = encode_prompts(tokenizer, [prompt_text(hist[t], ids) for t in off_steps])
    off_targets = [int(a) for a in ds.actions[off_steps]]
    rec["rows"] = {}
    torch.manual_seed(seed)
    for name, mdir in models.items():
        t0 = time.perf_counter()
        model = load_model(mdir).eval()
        off = evaluate_model(model, off_prompts, off_targets, ids, tokenizer, "trie", num_beams=10, batch_size=32,
                             progress=False, label=name)
        off.pop("top1_items")
        sim = run_llm_sessions(model, tokenizer, ids, b["eval_episodes"], b["beams"], RecSimEnv, name)
        rec["rows"][name] = {"offline": off, "sim": sim}
        timed(f"eval-{name}", t0)
        _say(f"[eval {name}] clicks/session {sim['clicks']:.2f} (length {sim['length']:.1f}, {sim['distinct_items']} "
             f"distinct items, quality {sim['mean_quality']:.2f}, appeal {sim['mean_appeal']:.2f}); held-out "
             f"recall@10 {off['rec/recall@10']:.3f}, ndcg@10 {off['rec/ndcg@10']:.3f}")
    rec["behaviour_policies"] = {}
    for pname in ("random", "popular", "click", "planner"):
        cls = POLICIES[pname]
        rec["behaviour_policies"][pname] = run_policy_sessions(lambda env, c=cls: c(env, seed=seed + 1),
                                                                b["eval_episodes"], RecSimEnv)
    _say("[policies] " + ", ".join(f"{k} {v['clicks']:.2f}" for k, v in rec["behaviour_policies"].items()))
    if b["iql_steps"]:
        from pbrl.policies.base import default_config
        from pbrl.policies.trainer import train_policy

        rec["iql"] = {}
        for name, data in (("true reward", ds), ("session prefs", rl_ds)):
            s = train_policy("iql", data, default_config("iql", hidden=hidden, batch_size=256), steps=b["iql_steps"],
                             seed=seed, eval_every=0, eval_episodes=b["eval_episodes"],
                             out_dir=out / f"iql-{name.replace(' ', '_')}", progress=False, env_id="pbrl/RecSim-v0")
            rec["iql"][name] = float(s["last_return_mean"])
        _say("[iql] " + ", ".join(f"{k} {v:.2f}" for k, v in rec["iql"].items()))
    rec.update({"seconds": time.perf_counter() - t_all, "git_revision": git_revision(), "threads":
                torch.get_num_threads(), "cores": os.cpu_count(), "load_note": load_note(),
                "load_average": list(os.getloadavg())})
    return rec


def run_reasoning_row(budget: str, seed: int, embed: str, runs: str, rec: dict[str, Any],
                      c: dict[str, Any] | None = None) -> None:
    """The "reasoning SFT" row, added to `rec` (a seed's record; the other rows are left as they are): SFT from
    scratch on the next-item SFT's records plus reasoning chains written from the simulator's truth
    (`pbrl.rec.reasoning`) at a seeded subset of the clicked training steps, then reasoning-mode decoding offline (n
    samples ranked by log-prob, the same held-out steps as the other rows) and in the simulator (the same users).
    `c`: the seed's prepared data (rebuilt when None, and checked against the record's)."""
    import torch

    from pbrl.llm.models import TinyLMConfig, load_model
    from pbrl.llm.sampler import HFSampler
    from pbrl.llm.sft import SftConfig, train_sft
    from pbrl.llm.tokenizer import end_of_turn_id, load_tokenizer, render_chat
    from pbrl.rec.align_data import alignment_tokenizer
    from pbrl.rec.decoding import reasoning_decode, target_rank
    from pbrl.rec.metrics import metrics_from_ranks
    from pbrl.rec.reasoning import UserStates, add_reasoning_tokens, reasoning_prompt, reasoning_records
    from pbrl.utils import atomic_write_text, git_revision, load_note
    from pbrl_envs.recsim import RecSimEnv
    from pbrl_envs.recsim_data import catalog_facts, logged_user_states

    b, r = BUDGETS[budget], REASON_BUDGETS[budget]
    out = Path(runs) / budget / f"seed_{seed}"
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    if c is None:
        check: dict[str, Any] = {}
        c = prepare(budget, seed, embed, check)
        for key in ("data", "ids"):  # the rebuilt data and IDs must be the record's, or the rows do not compare
            if json.loads(json.dumps(check[key])) != rec[key]:
                fail(f"seed {seed}: the rebuilt {key} differ from the record's ({check[key]} vs {rec[key]}); the "
                     "record came from other code or settings")
    ds, env0, texts, hist, ids = c["ds"], c["env"], c["texts"], c["hist"], c["ids"]
    train_steps, test_steps = c["train_steps"], c["test_steps"]
    timings: dict[str, float] = {}

    # ---- reasoning chains at a seeded subset of the clicked training steps, from the regenerated latent state
    t0 = time.perf_counter()
    states = logged_user_states(ds)
    pick = np.sort(np.random.default_rng(seed + 7).choice(train_steps, size=min(r["records"], len(train_steps)),
                                                          replace=False))
    clk = [[bool(x) for x, i in zip(env0.decode_clicks(ds.observations[t])[::-1],
                                    env0.decode_history(ds.observations[t])[::-1]) if i >= 0] for t in pick]
    sub = UserStates(states.interest[pick], states.boredom[pick], states.satisfaction[pick])
    id_text = [ids.item_text(i) for i in range(ids.num_items)]
    reasoning = reasoning_records([hist[t] for t in pick], clk, ds.actions[pick], sub, catalog_facts(env0), id_text,
                                  boredom_weight=env0.w_boredom / env0.w_interest)
    records = sft_records(train_steps, [hist[t] for t in train_steps], ds.actions[train_steps], ids, texts)
    records += reasoning
    atomic_write_text(str(out / "sft-reasoning.jsonl"), "".join(json.dumps(x) + "\n" for x in records))
    tok = alignment_tokenizer(records, ids, vocab_size=600)
    add_reasoning_tokens(tok)
    tok_dir = out / "tokenizer-reasoning"
    tok.save_pretrained(str(tok_dir))
    lengths = [len(tok(render_chat(tok, x["messages"]), add_special_tokens=True)["input_ids"]) for x in reasoning]
    answer_len = [len(tok(x["messages"][1]["content"], add_special_tokens=False)["input_ids"]) for x in reasoning]
    max_length = -(-(max(lengths) + 8) // 32) * 32
    max_new = max(answer_len) + 32  # room for the longest training chain, its EOS and some slack
    timings["reason-data"] = time.perf_counter() - t0
    _say(f"[reason-data] {len(reasoning)} reasoning chains (tokens per record {np.mean(lengths):.0f} mean, "
         f"{max(lengths)} max; response {np.mean(answer_len):.0f} mean), {len(records)} SFT records in all")

    # ---- SFT (the next-item SFT's shape and schedule; overlong chats are refused, not cut)
    t0 = time.perf_counter()
    sft_cfg = SftConfig(data=str(out / "sft-reasoning.jsonl"), out=str(out / "sft-reasoning"),
                        tokenizer_path=str(tok_dir),
                        model=TinyLMConfig(hidden_size=b["hidden"], num_layers=b["layers"], num_heads=4,
                                           num_kv_heads=2, intermediate_size=3 * b["hidden"], max_position=512),
                        max_length=max_length, overlong="refuse", max_masked_fraction=1.0, batch_size=32, lr=1e-3,
                        warmup_steps=20, epochs=b["sft_epochs"], seed=seed, device="cpu", progress=True,
                        checkpoint_every=100)
    sft = train_sft(sft_cfg)
    h = sft["history"]
    timings["sft"] = time.perf_counter() - t0
    _say(f"[reason-sft] {sft['step']} steps, loss {h[0]['sft/loss']:.3f} -> {h[-1]['sft/loss']:.3f}, "
         f"{timings['sft']:.0f} s")
    mdir = out / "sft-reasoning" / "model"
    tokenizer = load_tokenizer(mdir)
    model = load_model(mdir).eval()
    eos = end_of_turn_id(tokenizer)

    # ---- offline: the same held-out clicked steps as the other rows
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    _, off_steps = split_prompts(train_steps, test_steps, b, seed)
    prompts = encode_prompts(tokenizer, [reasoning_prompt(hist[t], id_text) for t in off_steps])
    targets = [int(a) for a in ds.actions[off_steps]]
    sampler = HFSampler(model)
    ranks: list[int] = []
    agg = {"samples": 0, "format": 0, "ids": 0, "think": 0.0}
    miss = np.iinfo(np.int64).max // 2
    for i in range(0, len(prompts), 32):
        res = reasoning_decode(sampler, prompts[i: i + 32], tokenizer, ids, n=r["offline_samples"],
                               temperature=r["temperature"], top_p=r["top_p"], max_new_tokens=max_new,
                               eos_token_id=eos, seed=seed * 1000 + i)
        for ranked, tgt in zip(res.ranked, targets[i: i + 32]):
            k = target_rank([item for item, _ in ranked], tgt)
            ranks.append(miss if k is None else k)
        agg["samples"] += res.samples
        agg["format"] += res.format_failures
        agg["ids"] += res.invalid_ids
        agg["think"] += res.think_tokens * (res.samples - res.format_failures)
    off = metrics_from_ranks(np.array(ranks, dtype=np.float64), (1, 5, 10))
    well = agg["samples"] - agg["format"]
    off.update({"rec/invalid_rate": (agg["format"] + agg["ids"]) / agg["samples"],
                "rec/format_failure_rate": agg["format"] / agg["samples"],
                "rec/invalid_id_rate": agg["ids"] / agg["samples"],
                "think_tokens": agg["think"] / well if well else 0.0, "users": len(prompts)})
    timings["eval-offline"] = time.perf_counter() - t0
    _say(f"[reason-eval] held-out recall@10 {off['rec/recall@10']:.3f}, ndcg@10 {off['rec/ndcg@10']:.3f}, format "
         f"failures {off['rec/format_failure_rate']:.3f}, invalid IDs {off['rec/invalid_id_rate']:.3f}, think "
         f"{off['think_tokens']:.0f} tokens, {timings['eval-offline']:.0f} s")

    # ---- in the simulator: the same users as every row
    t0 = time.perf_counter()
    sim = run_reasoning_sessions(model, tokenizer, ids, b["eval_episodes"], r, max_new, RecSimEnv, REASON_ROW,
                                 seed)
    timings["eval-sim"] = time.perf_counter() - t0
    _say(f"[reason-sim] clicks/session {sim['clicks']:.2f} (length {sim['length']:.1f}, {sim['distinct_items']} "
         f"distinct items, quality {sim['mean_quality']:.2f}); format failures {sim['format_failure_rate']:.3f}, "
         f"invalid IDs {sim['invalid_id_rate']:.3f}, fallback steps {sim['fallback_rate']:.3f}, think "
         f"{sim['think_tokens']:.0f} tokens, {timings['eval-sim']:.0f} s")
    rec["rows"][REASON_ROW] = {"offline": off, "sim": sim}
    rec["reasoning"] = {"settings": r, "records": len(records), "reasoning_records": len(reasoning),
                        "sft_steps": sft["step"], "num_parameters": sft["num_parameters"],
                        "first_loss": float(h[0]["sft/loss"]), "final_loss": float(h[-1]["sft/loss"]),
                        "max_length": max_length, "max_new_tokens": max_new,
                        "record_tokens_mean": float(np.mean(lengths)), "timings": timings,
                        "seconds": time.perf_counter() - t_all, "git_revision": git_revision(),
                        "threads": torch.get_num_threads(), "load_note": load_note(),
                        "load_average": list(os.getloadavg())}


# ----------------------------------------------------------------------------------------------- table
def reasoning_section(recs: list[dict[str, Any]]) -> list[str]:
    """Reasoning mode vs direct mode on the seeds that have both: the numbers, then a computed verdict."""
    def ms(vals: list[float], f: str = ".2f") -> str:
        return f"{np.mean(vals):{f}}" + (f" ± {np.std(vals):{f}}" if len(vals) > 1 else "")

    d = [r["rows"]["next-item SFT"] for r in recs]
    q = [r["rows"][REASON_ROW] for r in recs]
    md = ["", f"## Reasoning mode vs direct mode (seeds {', '.join(str(r['seed']) for r in recs)})", "",
          "| mode | clicks / session | recall@10 (held out) | ndcg@10 | invalid answers offline (format / ID) | "
          "invalid answers in the simulator (format / ID) | think tokens | steps without a valid answer |",
          "|---|---|---|---|---|---|---|---|",
          f"| direct: next-item SFT, trie beams | {ms([x['sim']['clicks'] for x in d])} | "
          f"{ms([x['offline']['rec/recall@10'] for x in d], '.3f')} | "
          f"{ms([x['offline']['rec/ndcg@10'] for x in d], '.3f')} | "
          f"{ms([x['offline']['rec/invalid_rate'] for x in d], '.3f')} (trie: none possible) | - | 0 | 0 |",
          f"| reasoning: reasoning SFT, samples ranked by log-prob | {ms([x['sim']['clicks'] for x in q])} | "
          f"{ms([x['offline']['rec/recall@10'] for x in q], '.3f')} | "
          f"{ms([x['offline']['rec/ndcg@10'] for x in q], '.3f')} | "
          f"{ms([x['offline']['rec/format_failure_rate'] for x in q], '.3f')} / "
          f"{ms([x['offline']['rec/invalid_id_rate'] for x in q], '.3f')} | "
          f"{ms([x['sim']['format_failure_rate'] for x in q], '.3f')} / "
          f"{ms([x['sim']['invalid_id_rate'] for x in q], '.3f')} | "
          f"{ms([x['offline']['think_tokens'] for x in q], '.0f')} | "
          f"{ms([x['sim']['fallback_rate'] for x in q], '.3f')} |", ""]
    diff = np.array([y["sim"]["clicks"] - x["sim"]["clicks"] for x, y in zip(d, q)])  # [seeds]
    se = np.array([np.hypot(x["sim"]["clicks_std"], y["sim"]["clicks_std"]) / np.sqrt(y["sim"]["episodes"])
                   for x, y in zip(d, q)])
    above, below = int(np.sum(diff > 2 * se)), int(np.sum(diff < -2 * se))
    rdiff = np.array([y["offline"]["rec/recall@10"] - x["offline"]["rec/recall@10"] for x, y in zip(d, q)])
    verdict = ("better than" if above == len(recs) else "worse than" if below == len(recs) else
               "not distinguishable from")
    md.append("- Reasoning vs direct mode, clicks per session: per seed difference " +
              ", ".join(f"{x:+.2f} (2 SE {2 * e:.2f})" for x, e in zip(diff, se)) +
              f"; above 2 SE in {above} of {len(recs)} seeds, below in {below}: on session return reasoning mode "
              f"is {verdict} direct mode at this budget (better / worse = beyond 2 SE in every seed).")
    sign = ("reasoning mode does worse in every seed" if np.all(rdiff < 0) else
            "reasoning mode does better in every seed" if np.all(rdiff > 0) else "the sign differs between seeds")
    md.append("- Held-out recall@10, reasoning minus direct: " + ", ".join(f"{x:+.3f}" for x in rdiff) + f" ({sign}).")
    fb = float(np.mean([x["sim"]["fallback_rate"] for x in q]))
    rand = float(np.mean([r["behaviour_policies"]["random"]["clicks"] for r in recs]))
    md.append(f"- {fb:.0%} of reasoning mode's simulator steps had no valid answer among the samples and served a "
              f"uniform item (the random policy: {rand:.2f} clicks per session), so its session return "
              + ("is mostly that fallback's." if fb > 0.5 else "comes mostly from its own answers."))
    md.append(f"- Distinct items served by reasoning mode over all its sessions: "
              f"{ms([x['sim']['distinct_items'] for x in q], '.0f')} (direct next-item SFT: "
              f"{ms([x['sim']['distinct_items'] for x in d], '.0f')}); mean quality "
              f"{ms([x['sim']['mean_quality'] for x in q])} vs {ms([x['sim']['mean_quality'] for x in d])}, mean "
              f"appeal {ms([x['sim'].get('mean_appeal', np.nan) for x in q])} vs "
              f"{ms([x['sim'].get('mean_appeal', np.nan) for x in d])}.")
    qc = float(np.mean([x["sim"]["clicks"] for x in q]))
    best = max(("random", "popular", "click"), key=lambda p: np.mean([r["behaviour_policies"][p]["clicks"]
                                                                       for r in recs]))
    bc = float(np.mean([r["behaviour_policies"][best]["clicks"] for r in recs]))
    md.append(f"- Against the behaviour policies (not the oracle): reasoning mode {qc:.2f} clicks per session, the best "
              f"of the random, popular and click policies {bc:.2f} ({best}): reasoning mode "
              + ("does not beat it." if qc <= bc else "beats it."))
    return md


def paper_setup_section(rec: dict[str, Any], reasoned: bool) -> list[str]:
    """GREAM's setup (the paper column of gream_llm's PAPER_SETUP) beside this budget's, row by row."""
    from baselines.gream_llm import PAPER_SETUP

    b, d = rec["settings"], rec["data"]
    here = {
        "data": f"RecSim-v0 logs (recsim-mixed, {d['sessions']} sessions), a 10 % session hold-out; plus clicks "
                "per session in the simulator, which the paper has no counterpart of",
        "item text": "the simulator catalogue's item texts, embedded by all-MiniLM-L6-v2 (384-d)",
        "semantic IDs": f"residual balanced k-means, {b['levels']} levels x K = {b['k']}, dedup token for collisions",
        "model": f"a randomly initialised Llama of {rec['sft']['num_parameters']:,} parameters",
        "alignment SFT": f"seqrec on clicked steps, item2index, index2item; {b['sft_epochs']} epochs"
                         + ("; a reasoning row adds five-stage chains from the simulator's latent state" if reasoned
                            else ""),
        "RL": f"{b['rl_steps']} steps x {b['prompts_per_step']} prompts x {b['rollouts']} rollouts, lr {b['rl_lr']}; "
              "the verifiable reward, a learned session reward, or both",
        "evaluation": f"{b['beams']} trie beams per simulator step; offline {b['offline_prompts']} held-out clicked "
                      "steps, 10 beams",
    }
    return ["", "## The paper's setup beside this one", "",
            "GREAM (Hong et al. 2025, arXiv 2510.20815) reports Recall@1/5/10 and NDCG@5/10 on Amazon categories with "
            "a 4B pre-trained LLM; it has no simulator and no learned reward. The project's paper notes record its "
            "setup and code, not its table's numbers, so none are copied here; data, model scale and RL budget "
            "differ by orders of magnitude.", "",
            "| | paper (GREAM, official code GRRM) | here |", "|---|---|---|"] + \
        [f"| {row} | {paper} | {here[row]} |" for row, paper, _ in PAPER_SETUP]


def write_table(records: list[dict[str, Any]], path: str | None, paper: bool = True) -> str:
    """The results markdown from the records only: per row mean ± std over seeds; a computed verdict line; with
    `paper`, the paper's setup beside this one."""
    from pbrl.errors import PbrlError
    from pbrl.utils import atomic_write_text

    if not records:
        raise PbrlError("records: none to write a table from")
    recs = sorted(records, key=lambda r: r["seed"])
    b, budget = recs[0]["settings"], recs[0]["budget"]

    def ms(vals: list[float], f: str = ".2f") -> str:
        return f"{np.mean(vals):{f}}" + (f" ± {np.std(vals):{f}}" if len(vals) > 1 else "")

    d = recs[0]["data"]
    direct = [n for n in recs[0]["rows"] if n != REASON_ROW]  # the rows every record has
    reasoned = [r for r in recs if REASON_ROW in r["rows"]]  # records that have the reasoning row too
    md = [f"# GREAM on RecSim: the LLM recommender in the simulator ({budget} budget)", "",
          "Generated by `python baselines/gream_recsim.py --table-only <records>` from the run records; do not edit.",
          "", "## Budget", "",
          f"- data: recsim-mixed, {d['transitions']} logged steps ({d['sessions']} sessions), seeds "
          f"{', '.join(str(r['seed']) for r in recs)}; a seeded 10 % of sessions held out",
          f"- semantic IDs: {recs[0]['embed']} embeddings of the catalog texts, {b['levels']} levels x {b['k']} codes",
          f"- SFT: tiny Llama from scratch, hidden {b['hidden']}, {b['layers']} layers "
          f"({recs[0]['sft']['num_parameters']:,} parameters), {b['sft_epochs']} epochs of {recs[0]['sft']['records']} "
          "records (seqrec on clicked steps + item2index + index2item)",
          f"- reward: step MLP ensemble ({b['reward_hidden']}x2, 3 members), {b['queries']} session-preference pairs "
          f"of {b['length']} steps, {b['reward_epochs']} epochs at most; member z-score",
          f"- SRPO: {b['rl_steps']} steps x {b['prompts_per_step']} prompts x {b['rollouts']} rollouts, lr "
          f"{b['rl_lr']}, BGAE, trie rollouts, {b['rl_prompts']} prompts (clicked training steps)",
          f"- simulator: {b['eval_episodes']} sessions (users seeded {EVAL_SEED}+e, the same for every row), the best of "
          f"{b['beams']} trie beams per step whose item is not in the history; offline: {b['offline_prompts']} held-out clicked steps, 10 beams",
          f"- machine: CPU, {recs[0]['threads']} torch thread(s), {recs[0]['cores']} cores shared with other work "
          f"(load average {recs[0]['load_average'][0]:.1f} at the end of seed {recs[0]['seed']}); "
          f"{ms([r['seconds'] for r in recs], '.0f')} s per seed"]
    if reasoned:
        rr, rs = reasoned[0]["reasoning"], reasoned[0]["reasoning"]["settings"]
        md.append(f"- reasoning SFT (seeds {', '.join(str(r['seed']) for r in reasoned)}): the same model shape and "
                  f"schedule from scratch on the next-item SFT's records plus {rr['reasoning_records']} reasoning "
                  "chains at a seeded subset of the clicked training steps (five stages written from the simulator's "
                  "latent user state, `pbrl.rec.reasoning`; about "
                  f"{ms([r['reasoning']['record_tokens_mean'] for r in reasoned], '.0f')} tokens per chain record); "
                  f"decoded by sampling (T {rs['temperature']}, top-p {rs['top_p']}, at most "
                  f"{rr['max_new_tokens']} new tokens) and ranking the answers by total log-prob: "
                  f"{rs['offline_samples']} samples per held-out step, {rs['sim_samples']} per simulator step (the "
                  "best-ranked item not in the history; a uniform item when no sample names one); "
                  f"{ms([r['reasoning']['seconds'] for r in reasoned], '.0f')} s per seed (load average "
                  f"{reasoned[0]['reasoning']['load_average'][0]:.1f} at the end of seed {reasoned[0]['seed']})")
    md += ["",
          "## Clicks per session in RecSim-v0", "",
          "| row | clicks / session | session length | distinct items | mean quality | recall@10 (held out) | "
          "ndcg@10 |", "|---|---|---|---|---|---|---|"]
    md.append(f"| logged behaviour (recsim-mixed) | {ms([r['data']['behaviour_clicks'] for r in recs])} | "
              f"{ms([r['data']['behaviour_length'] for r in recs], '.1f')} | - | - | - | - |")
    for p in ("random", "popular", "click", "planner"):
        v = [r["behaviour_policies"][p] for r in recs]
        md.append(f"| {p} policy{' (oracle)' if p == 'planner' else ''} | {ms([x['clicks'] for x in v])} | "
                  f"{ms([x['length'] for x in v], '.1f')} | - | - | - | - |")
    if all("iql" in r for r in recs):
        for k in recs[0]["iql"]:
            md.append(f"| IQL, {k} (own evaluation users) | {ms([r['iql'][k] for r in recs])} | - | - | - | - | - |")
    for name, part in [(n, recs) for n in direct] + ([(REASON_ROW, reasoned)] if reasoned else []):
        rows = [r["rows"][name] for r in part]
        label = name if len(part) == len(recs) else f"{name} (seeds {', '.join(str(r['seed']) for r in part)})"
        md.append(f"| LLM {label} | {ms([x['sim']['clicks'] for x in rows])} | "
                  f"{ms([x['sim']['length'] for x in rows], '.1f')} | "
                  f"{ms([x['sim']['distinct_items'] for x in rows], '.0f')} | "
                  f"{ms([x['sim']['mean_quality'] for x in rows])} | "
                  f"{ms([x['offline']['rec/recall@10'] for x in rows], '.3f')} | "
                  f"{ms([x['offline']['rec/ndcg@10'] for x in rows], '.3f')} |")
    md += ["", "## The learned reward and the RL runs", "",
           f"- corr(session return, learned return) over the logged sessions: "
           f"{ms([r['reward']['corr_session_return'] for r in recs], '.3f')}; the reward's mean score of each item "
           f"(over the SRPO prompts) vs item quality {ms([r['reward']['corr_item_quality'] for r in recs], '.3f')}, "
           f"vs appeal {ms([r['reward']['corr_item_appeal'] for r in recs], '.3f')}"]
    for name in RL_ROWS:
        v = [r["rl"][name] for r in recs]
        md.append(f"- SRPO {name} (reward {v[0]['reward_mode']}, weights verifiable/learned {v[0]['weights']}): "
                  f"rollout reward {ms([x['first_reward'] for x in v], '.3f')} -> "
                  f"{ms([x['last_reward'] for x in v], '.3f')} (first -> last step), exact match "
                  f"{ms([x['first_exact'] for x in v], '.3f')} -> {ms([x['last_exact'] for x in v], '.3f')}")
    sft_c = np.array([r["rows"]["next-item SFT"]["sim"]["clicks"] for r in recs])
    md += ["", "## Reading (computed from the records)", ""]
    wins = []
    for name in ("SRPO learned", "SRPO both"):
        c = np.array([r["rows"][name]["sim"]["clicks"] for r in recs])
        diff = c - sft_c  # [seeds]
        # per seed: the difference against 2 standard errors of the two rows' session means
        se = np.array([np.hypot(r["rows"][name]["sim"]["clicks_std"], r["rows"]["next-item SFT"]["sim"]["clicks_std"])
                       / np.sqrt(r["rows"][name]["sim"]["episodes"]) for r in recs])
        above = int(np.sum(diff > 2 * se))
        below = int(np.sum(diff < -2 * se))
        wins.append(above == len(recs))
        md.append(f"- {name} vs next-item SFT, clicks per session: {c.mean():.2f} vs {sft_c.mean():.2f}; per seed "
                  f"difference " + ", ".join(f"{d:+.2f} (2 SE {2 * e:.2f})" for d, e in zip(diff, se)) +
                  f": above 2 SE in {above} of {len(recs)} seeds, below in {below}.")
    distinct = [r["rows"][n]["sim"]["distinct_items"] for r in recs for n in direct]
    off = {n: np.mean([r["rows"][n]["offline"]["rec/recall@10"] for r in recs]) for n in direct}
    md.append(f"- Every direct-mode LLM row serves only {min(distinct)}-{max(distinct)} distinct items over all its sessions: "
              "it cycles a few items (the history filter keeps it off repeats) rather than personalising; mean "
              "quality of the served items / session length: " + ", ".join(
                  f"{n} {np.mean([r['rows'][n]['sim']['mean_quality'] for r in recs]):.2f} / "
                  f"{np.mean([r['rows'][n]['sim']['length'] for r in recs]):.1f}" for n in direct) + ".")
    md.append(f"- Offline held-out recall@10 moves the other way: SFT {off['next-item SFT']:.3f}, SRPO learned "
              f"{off['SRPO learned']:.3f}, SRPO both {off['SRPO both']:.3f} (the learned reward pulls the policy away "
              "from the logged next click).")
    verdict = ("supported" if all(wins) and len(recs) >= 3 else
               "suggested but not established (every seed above 2 SE, fewer than 3 seeds)" if all(wins)
               else "not supported")
    md.append(f"- The claim (learned session rewards make the LLM recommender beat next-item imitation on session "
              f"return) is {verdict} at this budget (supported = above 2 SE in each of at least 3 seeds for both "
              f"learned-reward rows); {len(recs)} seed(s) of {recs[0]['settings']['eval_episodes']} sessions, a tiny "
              f"model, far below the planner oracle.")
    if reasoned:
        md += reasoning_section(reasoned)
    if paper:  # once per file: the last budget's section carries it
        md += paper_setup_section(recs[0], bool(reasoned))
    text = "\n".join(md) + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--embed", choices=["minilm", "random"], default="minilm")
    ap.add_argument("--runs", default="runs/gream_recsim")
    ap.add_argument("--records", default=None, help="default results/records/gream_recsim-<budget>")
    ap.add_argument("--table-only", metavar="RECORDS", nargs="+", default=None,
                    help="write the table from records folders (one section per budget, in the order given)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-reasoning", action="store_true", help="skip the reasoning row (it can be added later)")
    ap.add_argument("--table", default=TABLE, help="where the markdown table goes")
    args = ap.parse_args()
    from pbrl.utils import atomic_write_json

    if args.table_only:
        from pbrl.utils import atomic_write_text

        parts = [write_table([json.loads(p.read_text()) for p in sorted(Path(f).glob("seed_*.json"))], None,
                             paper=i == len(args.table_only) - 1)
                 for i, f in enumerate(args.table_only)]
        text = "\n".join(parts)
        atomic_write_text(args.table, text)
        print(text)
        return
    import torch

    torch.set_num_threads(args.threads)
    records = Path(args.records or os.path.join("results", "records", f"gream_recsim-{args.budget}"))
    records.mkdir(parents=True, exist_ok=True)
    recs = []
    for seed in args.seeds:
        path = records / f"seed_{seed}.json"
        prepared: dict[str, Any] = {}
        if path.is_file():  # resume per row: finished rows are kept, never redone
            rec = json.loads(path.read_text())
            if rec.get("budget") != args.budget or rec.get("seed") != seed or rec.get("embed") != args.embed:
                fail(f"{path}: a record of budget {rec.get('budget')}, seed {rec.get('seed')}, embed "
                     f"{rec.get('embed')}, not {args.budget}/{seed}/{args.embed}")
            if REASON_ROW in rec["rows"]:
                _say(f"seed {seed}: {path} holds every row; kept as it is (delete it to redo the seed)")
                recs.append(rec)
                continue
            _say(f"seed {seed}: {path} holds the rows {', '.join(rec['rows'])}; adding the {REASON_ROW} row only")
            prepared_or_none = None
        else:
            rec = run_seed(args.budget, seed, args.embed, args.runs, prepared)
            atomic_write_json(str(path), rec)  # the rows so far: a later run adds the reasoning row
            _say(f"recorded {path} ({rec['seconds']:.0f} s)")
            prepared_or_none = prepared
        if not args.no_reasoning:
            run_reasoning_row(args.budget, seed, args.embed, args.runs, rec, prepared_or_none)
            atomic_write_json(str(path), rec)
            _say(f"recorded the {REASON_ROW} row in {path} ({rec['reasoning']['seconds']:.0f} s)")
        recs.append(rec)
    print(write_table(recs, args.table))


if __name__ == "__main__":
    run_script(main)
