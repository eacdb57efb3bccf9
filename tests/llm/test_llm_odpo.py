"""Online DPO: best/worst pairing and dropped groups (hand-built), one round end to end with its folder and
resume, and a two-round run on a toy judge whose mean judged score rises."""

from __future__ import annotations

import json

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.odpo import JudgedPair, OdpoConfig, make_pairs, online_dpo, resolve_judge
from pbrl.llm.tokenizer import word_tokenizer
from pbrl.runs import is_run_folder

WORDS = "red blue green cat dog fox tree house one two three".split()


def words(_prompt, response: str) -> float:
    """Toy judge: the number of words of the response."""
    return float(len(response.split()))


def count_red(_row, response: str) -> float:
    """Toy judge: how often the token "red" occurs."""
    return float(response.split().count("red"))


def no_judge_call(_row, _response: str) -> float:
    """Stands in for count_red on a resume (same name in the run's fingerprint) and must not be called."""
    raise AssertionError("judged again")


no_judge_call.__qualname__ = "count_red"


def test_make_pairs_picks_best_and_worst_and_drops_identical_and_tied_groups():
    prompts = ["p0", "p1", "p2", "p3", "p4"]
    gens = [
        ["a b", "a", "a b c", "a"],  # scores 2 1 3 1: best index 2, worst the first 1 (index 1)
        ["x y", "x y", "x y"],  # identical (also tied): counted as identical
        ["u v", "w z", "q r"],  # different, all score 2: tied
        ["k", "k l m", "k l m"],  # best 3 twice: the first (index 1)
        ["s"],  # a single sample is an identical group
    ]
    pairs, counts = make_pairs(prompts, gens, words)
    assert counts == {"prompts": 5, "pairs": 2, "dropped_identical": 2, "dropped_tied": 1, "dropped_unfinished": 0}
    assert pairs == [
        JudgedPair("p0", "a b c", "a", 0, 2, 1, 3.0, 1.0),
        JudgedPair("p3", "k l m", "k", 3, 1, 0, 3.0, 1.0),
    ]
    # precomputed scores are used as given (the judge is not called)
    boom = lambda *_: (_ for _ in ()).throw(AssertionError("judge called"))  # noqa: E731
    pairs2, counts2 = make_pairs(["p"], [["a", "b"]], boom, scores=[[0.0, 5.0]])
    assert counts2["pairs"] == 1 and (pairs2[0].chosen, pairs2[0].rejected) == ("b", "a")
    with pytest.raises(PbrlError, match="judge: prompt 0 sample 1: expected a finite number"):
        make_pairs(["p"], [["a", "b"]], lambda _p, g: float("nan") if g == "b" else 0.0)
    with pytest.raises(PbrlError, match="one group per prompt"):
        make_pairs(["p", "q"], [["a", "b"]], words)


def test_a_response_cut_at_max_new_tokens_is_never_chosen():
    # the best-scoring sample of group 0 was cut (no end-of-turn token): as chosen it would teach not to stop, so
    # the best finished one is chosen; the cut one may still be rejected (group 1); group 2 has no finished
    # sample, group 3 none better than its worst: both dropped as unfinished
    prompts = ["p0", "p1", "p2", "p3"]
    gens = [["a b c d", "a b", "a"], ["a b", "a b c d e", "a"], ["a b", "a"], ["a b", "a", "x"]]
    finished = [[False, True, True], [True, False, False], [False, False], [False, True, True]]
    pairs, counts = make_pairs(prompts, gens, words, finished=finished)
    assert counts == {"prompts": 4, "pairs": 2, "dropped_identical": 0, "dropped_tied": 0, "dropped_unfinished": 2}
    assert [(q.prompt_index, q.chosen_index, q.rejected_index) for q in pairs] == [(0, 1, 2), (1, 0, 2)]
    # without the flags the cut best sample of group 0 is chosen (what earlier releases did)
    assert make_pairs(prompts, gens, words)[0][0].chosen == "a b c d"
    with pytest.raises(PbrlError, match="finished: expected one group per prompt"):
        make_pairs(prompts, gens, words, finished=finished[:2])


def test_resolve_judge():
    assert resolve_judge("json:dumps") is json.dumps
    with pytest.raises(PbrlError, match="module:function"):
        resolve_judge("json")
    with pytest.raises(PbrlError, match="cannot import 'no_such_module_x'"):
        resolve_judge("no_such_module_x:f")
    with pytest.raises(PbrlError, match="has no attribute 'nope'"):
        resolve_judge("json:nope")


def _model_folder(tmp_path, seed: int = 0):
    tok = word_tokenizer([" ".join(WORDS)], chat=True)
    model = build_model(TinyLMConfig(vocab_size=len(tok), hidden_size=32, num_layers=2, num_heads=4,
                                     num_kv_heads=2, intermediate_size=64), seed=seed)
    path = tmp_path / "base"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _prompts(tmp_path, n: int):
    path = tmp_path / "prompts.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"{WORDS[i % 5]} {WORDS[(i + 3) % 11]}"}], "id": i}
            for i in range(n)]
    rows[0] = {"prompt": "one two three", "id": 0}  # a plain prompt string is one user turn
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(tmp_path, **kw) -> OdpoConfig:
    dpo = kw.pop("dpo", DpoConfig(batch_size=8, epochs=1, lr=1e-3, progress=False, device="cpu"))
    return OdpoConfig(prompts=str(_prompts(tmp_path, kw.pop("num_prompts", 6))),
                      model_path=str(_model_folder(tmp_path)), out=str(tmp_path / "out"), n=4, temperature=1.0,
                      max_new_tokens=6, dpo=dpo, **kw)


def test_one_round_end_to_end_writes_its_folder_and_resumes(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, rounds=1)
    summary = online_dpo(cfg, count_red)
    out = tmp_path / "out"
    r1 = out / "round_1"
    assert is_run_folder(out) and is_run_folder(r1) and (r1 / "model" / "config.json").is_file()
    assert (r1 / "model" / "tokenizer.json").is_file()
    (row,) = summary["rounds"]
    assert row["odpo/prompts"] == 6
    assert row["odpo/pairs"] + row["odpo/dropped_identical"] + row["odpo/dropped_tied"] \
        + row["odpo/dropped_unfinished"] == 6
    assert row["odpo/pairs"] >= 1 and row["dpo/steps"] >= 1
    samples = [json.loads(x) for x in (r1 / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(len(s["tokens"]) == 4 for s in samples)
    flat = [count_red(None, t) for s in samples for t in s["texts"]]
    assert row["odpo/mean_score"] == pytest.approx(sum(flat) / len(flat))
    pairs = [json.loads(x) for x in (r1 / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == row["odpo/pairs"]
    for p in pairs:  # chosen = best of the row's finished samples and rejected = worst of all its samples
        s = samples[p["row"]]
        best_finished = max(v for v, r in zip(s["scores"], s["finish_reasons"]) if r == "eos")
        assert p["chosen_score"] == best_finished > p["rejected_score"] == min(s["scores"])
        assert count_red(None, p["chosen"]) == p["chosen_score"]
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1]
    assert "final_mean_score" in json.loads((out / "summary.json").read_text())

    # a resume skips the completed round: nothing is sampled or trained again
    import pbrl.llm.dpo as dpo_mod

    monkeypatch.setattr(dpo_mod, "train_dpo", lambda *a, **k: pytest.fail("retrained a completed round"))
    again = online_dpo(cfg, count_red)
    assert again["rounds"] == summary["rounds"]
    # a resume with other settings is refused with one line naming the key
    with pytest.raises(PbrlError, match="cannot resume, n differs"):
        online_dpo(OdpoConfig(**{**cfg.__dict__, "n": 3}), count_red)


def test_user_errors(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(PbrlError, match="n: expected >= 2"):
        online_dpo(OdpoConfig(**{**cfg.__dict__, "n": 1}), count_red)
    with pytest.raises(PbrlError, match="temperature: expected > 0"):
        online_dpo(OdpoConfig(**{**cfg.__dict__, "temperature": 0.0}), count_red)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "x"}\n')
    with pytest.raises(PbrlError, match=r"bad.jsonl:2: expected a field 'messages'"):
        online_dpo(OdpoConfig(**{**cfg.__dict__, "prompts": str(bad)}), count_red)
    with pytest.raises(PbrlError, match="judge: expected module:function"):
        online_dpo(cfg)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_two_rounds_raise_the_mean_judged_score(tmp_path):
    # measured with these settings for seeds 0-7 (round-1 samples, round-2 samples, final model): the ordering
    # held for all eight, the narrowest margins 0.45 -> 0.59 (round 1 -> 2) and 0.59 -> 1.53 (round 2 -> final);
    # seed 0 gives 0.39 -> 0.52 -> 3.09, with a mean DPO reward accuracy of 0.91 and 0.84 per round
    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, rounds=2, num_prompts=16, seed=0, chosen_must_finish=False,
               dpo=DpoConfig(batch_size=8, epochs=8, lr=5e-3, beta=0.1, progress=False, device="cpu"))
    cfg.n, cfg.max_new_tokens = 8, 8
    s = online_dpo(cfg, count_red)
    r1, r2 = s["rounds"]
    assert r2["odpo/mean_score"] > r1["odpo/mean_score"]  # round 2 samples the model round 1 trained
    assert s["final_mean_score"] > r2["odpo/mean_score"]
    assert r1["dpo/mean_reward_accuracy"] > 0.5 and r2["dpo/mean_reward_accuracy"] > 0.5


def test_command_resolves_a_module_function_judge_and_nested_dpo_flags(tmp_path, monkeypatch, capsys):
    from pbrl.cli import parse
    from pbrl.llm.odpo import LlmOdpo

    (tmp_path / "toy_judge_mod.py").write_text(
        "def judge(row, response):\n    return float(response.split().count('red'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg(tmp_path)
    argv = [cfg.prompts, "--model-path", cfg.model_path, "--out", cfg.out, "--n", "4",
            "--temperature", "1.0", "--max-new-tokens", "6", "--judge", "toy_judge_mod:judge",
            "--dpo.batch-size", "8", "--dpo.lr", "1e-3", "--dpo.no-progress", "--dpo.device", "cpu",
            "--no-final-eval"]
    cmd = parse(LlmOdpo, argv, "pbrl llm odpo", "online DPO")
    assert cmd.dpo.lr == 1e-3 and cmd.judge == "toy_judge_mod:judge"
    cmd.run()
    lines = capsys.readouterr().out.strip().splitlines()
    row = json.loads(lines[-2])
    assert row["step"] == 1 and row["odpo/pairs"] >= 1
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["config"]["judge"] == "toy_judge_mod:judge"
    assert "final_mean_score" not in json.loads((tmp_path / "out" / "summary.json").read_text())


def test_an_interrupted_round_resumes_on_its_saved_samples(tmp_path, monkeypatch):
    import pbrl.llm.dpo as dpo_mod

    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, final_eval=False)
    real = dpo_mod.train_dpo

    def killed(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dpo_mod, "train_dpo", killed)
    with pytest.raises(KeyboardInterrupt):
        online_dpo(cfg, count_red)
    samples = (tmp_path / "out" / "round_1" / "samples.jsonl").read_text()
    assert not (tmp_path / "out" / "round_1" / "round.json").exists()
    monkeypatch.setattr(dpo_mod, "train_dpo", real)
    (row,) = online_dpo(cfg, no_judge_call)["rounds"]  # the saved scores are used: nothing judged again
    assert (tmp_path / "out" / "round_1" / "samples.jsonl").read_text() == samples
    saved = [json.loads(x) for x in samples.splitlines()]
    flat = [v for s in saved for v in s["scores"]]
    assert row["odpo/mean_score"] == pytest.approx(sum(flat) / len(flat))
