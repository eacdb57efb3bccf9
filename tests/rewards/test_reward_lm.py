"""The LM reward learner (pbrl.rewards.lm_learner; its file API pbrl.rewards.lm): segmentation rules, the location
normalizer, densification, the learner contract (train, reload, score through the shared entry points), learning on
the chat task, bad input."""

import json
import math

import numpy as np
import pytest
import torch

from pbrl.cli import main
from pbrl.errors import PbrlError
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.prefs_data import PreferenceRecord
from pbrl.llm.tokenizer import word_tokenizer
from pbrl.rewards import RewardConfig, RewardLearner, get_learner, load_reward_model, train_reward
from pbrl.rewards.lm import load_lm_reward
from pbrl.rewards.lm_learner import (
    LMRewardConfig,
    LMRewardLearner,
    build_rows,
    dense_rewards,
    evaluate_lm_pairs,
    next_token_entropy,
    token_rewards,
    tokenize_lm_pairs,
)
from pbrl.rewards.normalizers import location_apply, location_fit, location_points
from pbrl.rewards.segment import SegmenterConfig
from pbrl_envs.chat import make_tasks, preference_pairs

TINY = TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _learner(kind: str, threshold: float | None = None, ensemble: int = 1) -> LMRewardLearner:
    """An untrained learner over a 10-word vocabulary (ids: <pad> 0, <unk> 1, <bos> 2, <eos> 3, ...)."""
    tok = word_tokenizer(["a b c d e f g h i j"], chat=True)
    cfg = RewardConfig(model="lm", ensemble=ensemble,
                       segmenter=SegmenterConfig(kind=kind, entropy_threshold=threshold))
    tiny = TinyLMConfig(**{**TINY.__dict__, "vocab_size": len(tok)})
    backbones = [build_model(tiny, seed=m) for m in range(ensemble)]
    ref = build_model(tiny, seed=99) if kind == "entropy" else None
    return LMRewardLearner(cfg, tok, backbones, ref, 64)


def _ends(model, prompt, response, signal=None):
    """Response-token indices that end a segment (signal: the reference entropy at every row position)."""
    ids, mask = build_rows([prompt], [response], model.stop_ids, model.bandit)
    sig = None if signal is None else torch.tensor([signal], dtype=torch.float32)
    ends = model.ends(mask, sig)[0]
    return torch.nonzero(ends[len(prompt):]).flatten().tolist()


# ----------------------------------------------------------------------------------------------- segmentation
def test_c0_is_every_token_cinf_is_one_segment_at_eos():
    eos = 3
    prompt, response = [2, 7, 8], [9, 10, 11, 12, eos]
    token = _learner("entropy", threshold=0.0)
    assert token.segmenter.kind == "step"
    assert _ends(token, prompt, response) == [0, 1, 2, 3]  # every token but the stop token
    bandit = _learner("entropy", threshold=math.inf)
    assert bandit.segmenter.kind == "query" and bandit.bandit
    assert _ends(bandit, prompt, response) == [4]  # one segment, ending at EOS
    # a response without a stop token (cut at the length limit): its last token ends the last segment
    assert _ends(token, prompt, response[:-1]) == [0, 1, 2, 3]
    assert _ends(bandit, prompt, response[:-1]) == [3]


def test_entropy_boundaries_response_only_and_the_eos_minus_1_rule():
    seg = _learner("entropy", threshold=1.0)
    prompt, eos = [2, 7, 8], 3
    response = [9, 10, 11, 12, 13, eos]  # row positions 3..8
    # H_t at row position t is the entropy of token t+1: t ends a segment when H_t > c (boundary before t+1)
    #          prompt (high, ignored) | response: 0    1    2    3    4    EOS
    signal = [5.0, 5.0, 5.0] + [0.1, 2.0, 0.1, 0.1, 0.1, 3.0]
    # token 1 ends a segment; the boundary on EOS moves to EOS-1 (token 4), which always ends the last segment
    assert _ends(seg, prompt, response, signal) == [1, 4]
    # EOS-1 already a boundary: the one on EOS is dropped, not doubled
    signal2 = [0.0] * 3 + [0.1, 0.1, 0.1, 0.1, 2.0, 3.0]
    assert _ends(seg, prompt, response, signal2) == [4]
    # a response that is only its stop token keeps one segment on it
    assert _ends(seg, prompt, [eos], [0.0] * 3 + [3.0]) == [0]


def test_next_token_entropy_equals_the_naive_sum_and_ignores_right_padding():
    lm = build_model(TinyLMConfig(**{**TINY.__dict__, "vocab_size": 20}), seed=1).eval()
    row = torch.tensor([[2, 5, 7, 9, 11]])
    padded = torch.tensor([[2, 5, 7, 9, 11], [2, 5, -1, -1, -1]])
    h = next_token_entropy(lm, row)
    with torch.no_grad():
        p = torch.softmax(lm(input_ids=row).logits.double(), -1)
    naive = -(p * p.log()).sum(-1)
    torch.testing.assert_close(h.double(), naive, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(next_token_entropy(lm, padded)[0], h[0], rtol=1e-5, atol=1e-5)


def test_sequence_score_is_the_mean_of_the_segment_end_values():
    model = _learner("step", ensemble=2)
    prompt, response = [2, 7], [9, 10, 11, 3]
    ids, mask = build_rows([prompt], [response], model.stop_ids, model.bandit)
    out = model.output(ids, mask)  # [M, 1, T]
    score = (out.values * out.weights).sum(-1)[:, 0]
    with torch.no_grad():
        v = model.net.values(ids.expand(2, -1, -1))[:, 0]  # [M, T]
    naive = v[:, 2:5].mean(-1)  # response tokens 0..2 (the stop token at row position 5 excluded)
    torch.testing.assert_close(score, naive)


# ----------------------------------------------------------------------------------------------- normalizer
def test_location_normalizer_with_zero_slopes_is_the_scalar_one():
    rng = np.random.default_rng(0)
    v, p = rng.normal(2.0, 3.0, 50), rng.uniform(0.01, 1.0, 50)
    np.testing.assert_allclose(location_apply(v, p, (0.0, 1.5, 0.0, 2.5)), (v - 1.5) / 2.5)
    # the bandit model's positions are all 1: the fit is the scalar normalizer (slopes 0, mean, std)
    a_mu, b_mu, a_sd, b_sd = location_fit(v, np.ones(50), bins=None)
    assert a_mu == a_sd == 0.0
    assert b_mu == pytest.approx(v.mean()) and b_sd == pytest.approx(v.std())
    np.testing.assert_allclose(location_apply(v, np.ones(50), (a_mu, b_mu, a_sd, b_sd)), (v - v.mean()) / v.std())


def test_location_fit_recovers_a_positional_drift_keyed_by_k_over_K():
    rng = np.random.default_rng(1)
    ks = np.concatenate([np.arange(1, kk + 1) / kk for kk in rng.integers(1, 8, 3000)])  # p = k/K
    lnp = np.log(ks)
    v = (0.8 * lnp + 0.9) + (0.5 * lnp + 3.7) * rng.standard_normal(len(ks))
    a_mu, b_mu, a_sd, b_sd = location_fit(v, ks, bins=None)
    assert a_mu == pytest.approx(0.8, abs=0.15) and b_mu == pytest.approx(0.9, abs=0.15)
    assert a_sd == pytest.approx(0.5, abs=0.15) and b_sd == pytest.approx(3.7, abs=0.15)
    # the sigma floor holds where the fitted line would go below it
    assert location_apply(np.array([1.0]), np.array([1e-6]), (0.0, 0.0, 1.0, 1.0), sigma_floor=0.5)[0] == 2.0


def test_location_points_group_by_three_decimal_keys_by_hand():
    # keys 0.333 (two units), 0.5 (one unit: left out), 1.0 (three units)
    p = np.array([1 / 3, 1 / 3, 0.5, 1.0, 1.0, 1.0])
    v = np.array([1.0, 3.0, 9.0, 0.0, 1.0, 5.0])
    x, mean, std = location_points(v, p, bins=None)
    np.testing.assert_allclose(x, [math.log(1 / 3), 0.0])
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(std, [1.0, np.std([0.0, 1.0, 5.0])])
    # the fit is the Huber line through exactly these points (two points: the line through both)
    a_mu, b_mu, a_sd, b_sd = location_fit(v, p, bins=None)
    assert a_mu == pytest.approx(0.0, abs=1e-6) and b_mu == pytest.approx(2.0, abs=1e-6)
    assert a_sd * math.log(1 / 3) + b_sd == pytest.approx(1.0, abs=1e-4) and b_sd == pytest.approx(std[1], abs=1e-4)


# ----------------------------------------------------------------------------------------------- densification
def test_densified_rewards_of_a_segment_sum_to_its_normalized_reward():
    model = _learner("entropy", threshold=1.0)
    model.norm = {"a_mu": 0.3, "b_mu": 0.1, "a_sigma": 0.2, "b_sigma": 1.5, "sigma_floor": 0.1, "segments": 0}
    prompt, response = [2, 7, 8], [9, 10, 11, 12, 13, 3, 0]  # a pad token after the stop token
    signal = [0.0] * 3 + [0.1, 2.0, 0.1, 0.1, 0.1, 0.1, 0.1]
    ends = torch.zeros(len(response), dtype=torch.bool)
    ends[_ends(model, prompt, response, signal)] = True  # ends at tokens 1 and 4
    values = np.array([[1.7, -0.6]])  # [M, K]
    seg = {"values": values, "ends": ends.numpy(), "position": np.array([0.5, 1.0])}
    r = dense_rewards(model, seg).double()
    norm = model.normalized(seg)  # [(1.7 - mu(1/2)) / sigma(1/2), (-0.6 - mu(1)) / sigma(1)]
    lnp = math.log(0.5)
    assert norm[0] == pytest.approx((1.7 - (0.3 * lnp + 0.1)) / (0.2 * lnp + 1.5))
    assert norm[1] == pytest.approx((-0.6 - 0.1) / 1.5)
    assert r[:2].sum() == pytest.approx(norm[0]) and r[2:5].sum() == pytest.approx(norm[1])
    torch.testing.assert_close(r[:2], torch.full((2,), norm[0] / 2, dtype=torch.float64))
    assert (r[5:] == 0).all()  # 0 on the stop token and after it
    seg["values"] = np.array([[1e4, -1e4]])
    assert dense_rewards(model, seg).abs().max() == 10.0  # clamped


# ----------------------------------------------------------------------------------------------- learner
@pytest.fixture(scope="module")
def chat_pairs():
    train = preference_pairs(make_tasks(240, 0, "train"), 0)
    held = preference_pairs(make_tasks(120, 1, "heldout"), 1)
    rec = lambda rows: [PreferenceRecord(r["prompt"], r["chosen"], r["rejected"]) for r in rows]  # noqa: E731
    return rec(train), rec(held), held


@pytest.fixture(scope="module")
def trained(chat_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_rm")
    torch.set_num_threads(1)
    cfg = RewardConfig(model="lm", ensemble=2, lr=1e-3, batch_size=32, epochs=3, early_stop=False,
                       segmenter=SegmenterConfig(kind="entropy", entropy_quantile=0.8), lm=LMRewardConfig(tiny=TINY))
    return train_reward(chat_pairs[0], None, cfg, out_dir=out, progress=False), out


def test_lm_learner_contract_train_reload_score(trained, chat_pairs):
    model, out = trained
    assert get_learner("lm") is LMRewardLearner and model.kind == "lm"
    assert isinstance(model, RewardLearner) and model.members == 2
    assert model.threshold is not None and model.norm["segments"] > 0
    pts = model.norm["points"]  # the points the stored lines were fitted to, for the normalizer figure
    assert len(pts["ln_p"]) == len(pts["mean"]) == len(pts["std"]) > 1 and max(pts["ln_p"]) == 0.0
    loaded = load_reward_model(out)
    assert type(loaded) is LMRewardLearner and load_lm_reward(out).threshold == model.threshold
    pairs = tokenize_lm_pairs(chat_pairs[1][:8], model.tokenizer, model.length)
    a, b = token_rewards(model, pairs.prompt, pairs.chosen), token_rewards(loaded, pairs.prompt, pairs.chosen)
    assert [len(x) for x in a] == [len(r) for r in pairs.chosen]
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
        assert x.dtype == torch.float32 and x.abs().max() <= 10
    assert evaluate_lm_pairs(loaded, pairs) == evaluate_lm_pairs(model, pairs)
    # units (the protocol's relabeling view): one per segment, lengths covering each response through its last end
    raw = model.units(pairs)
    seg = model.segments(pairs.prompt * 2, pairs.chosen + pairs.rejected)
    assert raw.values.shape == (2, sum(len(x["lengths"]) for x in seg)) == (2, len(raw.unit_length))
    np.testing.assert_array_equal(raw.values, np.concatenate([x["values"] for x in seg], 1))
    assert len(raw.unit_of) == sum(len(r) for r in pairs.chosen + pairs.rejected)
    assert raw.unit_length.sum() == sum(int(np.flatnonzero(x["ends"])[-1]) + 1 for x in seg)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "lm" and cfg["normalizer"] == model.norm
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_tiny_lm_reward_learns_the_chat_preferences(trained, chat_pairs):
    """Held-out prompts (the other split): the ensemble ranks chosen over rejected well above chance."""
    model, _ = trained
    held = tokenize_lm_pairs(chat_pairs[1], model.tokenizer, model.length)
    ev = evaluate_lm_pairs(model, held)
    assert ev["accuracy"] > 0.65, ev


def test_cli_report_and_relabel_a_jsonl_of_responses(trained, chat_pairs, tmp_path, capsys):
    model, out = trained
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(r) + "\n" for r in chat_pairs[2][:20]))
    assert main(["reward", "report", str(held), "--reward", str(out), "--threads", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["model"] == "lm" and rep["pairs/count"] == 20 and "response/spearman" in rep
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["chosen"]}) + "\n"
                                 for r in chat_pairs[2][:5]))
    scored = tmp_path / "scored.jsonl"
    assert main(["relabel", str(responses), "--reward", str(out), "--out", str(scored), "--threads", "1"]) == 0
    rows = [json.loads(x) for x in scored.read_text().splitlines()]
    pairs = tokenize_lm_pairs(
        [PreferenceRecord(r["prompt"], r["chosen"], r["chosen"]) for r in chat_pairs[2][:5]], model.tokenizer,
        model.length)
    expected = token_rewards(model, pairs.prompt, pairs.chosen)
    for row, e in zip(rows, expected):
        np.testing.assert_allclose(row["token_rewards"], e.numpy(), atol=1e-4)
    capsys.readouterr()
    assert main(["relabel", str(responses), "--reward", str(out), "--out", str(scored)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err


def test_bad_input_gets_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "", "chosen": "a", "rejected": "b"}) + "\n")
    assert main(["reward", "train", str(bad), "--model", "lm", "--out", str(tmp_path / "rm")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"pbrl: error: {bad}: record 0: empty prompt (a reward needs a prompt to answer)"
    assert not (tmp_path / "rm").exists()
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "a b", "chosen": " ".join(["a"] * 30), "rejected": "b"}) + "\n")
    assert main(["reward", "train", str(long), "--model", "lm", "--out", str(tmp_path / "rm"),
                 "--lm.max-length", "16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"pbrl: error: {long}: record 0: prompt + chosen is ") and "context of 16" in err
    assert not (tmp_path / "rm").exists()
    model = _learner("step")
    with pytest.raises(PbrlError, match="longer than the reward model's context of 64"):
        token_rewards(model, [[2] * 40], [[5] * 30])
    with pytest.raises(PbrlError, match="empty prompt"):
        token_rewards(model, [[]], [[5, 3]])


def test_learner_names_stay_importable_from_lm():
    # the learner moved to lm_learner; `from pbrl.rewards.lm import X` (train.py, ppo, the registry) keeps working
    # and gets the very same objects (moved, not copied)
    from pbrl.rewards import lm as lm_module
    from pbrl.rewards import lm_learner

    public = [n for n in dir(lm_learner) if not n.startswith("_")
              and getattr(getattr(lm_learner, n), "__module__", "") == lm_learner.__name__]
    assert {"LMRewardLearner", "LMRewardConfig", "token_rewards", "build_rows"} <= set(public)
    for name in public:
        assert getattr(lm_module, name) is getattr(lm_learner, name), name
    assert set(public) <= set(lm_module.__all__)
    assert get_learner("lm") is LMRewardLearner

