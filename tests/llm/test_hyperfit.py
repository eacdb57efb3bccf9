"""`pbrl llm hyperfit` / `pbrl llm textstats`: the recipes, the selection by hand, the loop stops at its loss
threshold on planted data, a resumed run equals an uninterrupted one, bad inputs are one line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm.hyperfit import HyperfitConfig, LlmHyperfit, LlmTextstats, hyperfit, resolved, select_sequences
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.pretrain import _save_pretrained
from pbrl.llm.tokenizer import word_tokenizer
from pbrl.runs import read_rows

WORDS = ["red", "blue", "cat", "dog", "sees", "the", "a", "tree", "box", "runs"]


def _docs(n: int, length: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, length)) for _ in range(n)]


@pytest.fixture
def base(tmp_path):
    """A tiny random-init model (32 positions) with a word tokenizer, saved as a model folder, and a corpus of 12
    planted documents of 20 words (one token each)."""
    docs = _docs(12, 20)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(docs) + "\n", encoding="utf-8")
    tok = word_tokenizer(docs)
    model = build_model(TinyLMConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, max_position=32),
                        backend="hf_sdpa", seed=0)
    _save_pretrained(tmp_path / "base", model, tok)
    return tmp_path / "base", corpus


def _cfg(base, out, **kw) -> HyperfitConfig:
    model, corpus = base
    c = dict(model_path=str(model), corpus=str(corpus), out=str(out), num_sequences=4, seq_length=16, batch_size=2,
             lr=1e-2, epochs=4, eval_contexts=2, context_tokens=4, new_tokens=8, ttr_last=4, val_sequences=2,
             progress=False, device="cpu")
    c.update(kw)
    return HyperfitConfig(**c)


def test_recipes_and_selection_by_hand():
    paper, code = resolved(HyperfitConfig(recipe="paper")), resolved(HyperfitConfig(recipe="code"))
    assert (paper.epochs, paper.lr, paper.weight_decay, paper.selection) == (20, 1e-6, 0.0, "random")
    assert (code.epochs, code.lr, code.weight_decay, code.selection) == (30, 5e-6, 0.01, "first")
    assert resolved(HyperfitConfig(recipe="code", epochs=3)).epochs == 3  # a field given wins over the recipe
    ids = [[1] * 5, [1] * 2, [1] * 6, [1] * 9, [1] * 4]  # documents 0, 2, 3 have L = 5 tokens
    first, counts = select_sequences(ids, resolved(HyperfitConfig(recipe="code", num_sequences=2, seq_length=5)))
    assert first == [0, 2] and counts == {"documents": 5, "eligible": 3, "too_short": 2}
    cfg = resolved(HyperfitConfig(recipe="paper", num_sequences=2, seq_length=5, seed=3))
    drawn, _ = select_sequences(ids, cfg)
    ref = sorted(np.random.default_rng(3).choice(3, 2, replace=False))
    assert drawn == [[0, 2, 3][i] for i in ref]
    with pytest.raises(PbrlError, match="3 of 5 documents have seq_length 5 tokens, fewer than num_sequences 4"):
        select_sequences(ids, dataclasses.replace(cfg, num_sequences=4))


def test_stops_at_the_loss_threshold(tmp_path, base):
    res = hyperfit(_cfg(base, tmp_path / "run", epochs=200, stop_loss=0.3, eval_every=1000))
    losses = [r["hyperfit/epoch_loss"] for r in res["history"] if "hyperfit/epoch_loss" in r]
    assert res["stopped_at_loss"] and res["done"] and res["epoch"] == len(losses) < 200
    assert losses[-1] < 0.3 <= min(losses[:-1])  # the first epoch under the threshold, and not one later
    assert losses[0] > 1.5  # a random-init model starts near log(vocab): the planted sequences were learnt
    # the base model is measured before training and the model at the stop: TTR and validation loss rows
    evals = [r for r in res["history"] if "eval/ttr" in r]
    assert [r["epoch"] for r in evals] == [0, res["epoch"]] and evals[0]["step"] == 0
    assert evals[-1]["eval/val_loss"] > 0 and 0 < evals[-1]["eval/ttr"] <= 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_at_loss"] and summary["data"]["sequences"] == 4 and summary["data"]["too_short"] == 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    # 4 sequences in batches of 2: 2 steps per epoch
    assert res["step"] == 2 * res["epoch"]
    # a second call finds the run finished: no more epochs
    again = hyperfit(_cfg(base, tmp_path / "run", epochs=200, stop_loss=0.3, eval_every=1000))
    assert again["epoch"] == res["epoch"] and again["stopped_at_loss"]


def test_resume_matches_uninterrupted_run(tmp_path, base):
    full = hyperfit(_cfg(base, tmp_path / "full", batch_size=3))  # 4 sequences: batches of 3 and 1
    part = hyperfit(_cfg(base, tmp_path / "part", batch_size=3, stop_after=2))
    assert not part["done"] and part["epoch"] == 2 and not (tmp_path / "part" / "model").exists()
    rest = hyperfit(_cfg(base, tmp_path / "part", batch_size=3))
    assert rest["done"] and rest["epoch"] == 4 and rest["step"] == full["step"] == 8
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    rows = read_rows(tmp_path / "part" / "metrics.jsonl")
    steps = [r["step"] for r in rows if "hyperfit/loss" in r]
    assert steps == list(range(1, 9))  # no step twice
    assert [r["epoch"] for r in rows if "eval/ttr" in r] == [0, 1, 2, 3, 4]
    with pytest.raises(PbrlError, match="cannot resume, lr differs"):
        hyperfit(_cfg(base, tmp_path / "part", batch_size=3, lr=1e-3))


def test_bad_inputs_are_one_line(tmp_path, base):
    model, corpus = base
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(PbrlError, match="holds no documents"):
        hyperfit(_cfg(base, tmp_path / "a", corpus=str(empty)))
    with pytest.raises(PbrlError, match="seq_length: 40 tokens, longer than the model's context of 32 positions"):
        hyperfit(_cfg(base, tmp_path / "b", seq_length=40))
    with pytest.raises(PbrlError, match="context_tokens \\+ new_tokens: 36 tokens, longer than the model's context"):
        hyperfit(_cfg(base, tmp_path / "c", new_tokens=32))
    with pytest.raises(PbrlError, match="12 documents have seq_length 21 tokens"):
        hyperfit(_cfg(base, tmp_path / "d", seq_length=21, context_tokens=2, new_tokens=4))
    with pytest.raises(PbrlError, match="model_path: expected a local HF model folder"):
        hyperfit(_cfg(base, tmp_path / "e", model_path=""))
    with pytest.raises(PbrlError, match="no held-out document has 4 tokens"):
        hyperfit(_cfg(base, tmp_path / "f", num_sequences=12))
    assert not (tmp_path / "b").exists() and not (tmp_path / "d").exists()  # refused before anything is written


def test_commands(tmp_path, base, capsys):
    model, corpus = base
    LlmHyperfit(model_path=str(model), corpus=str(corpus), out=str(tmp_path / "hf"), num_sequences=4, seq_length=16,
                batch_size=2, lr=1e-2, epochs=30, eval_contexts=2, context_tokens=4, new_tokens=8, ttr_last=4,
                val_sequences=2, eval_every=100, progress=False, device="cpu", threads=1).run()
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    # 30 epochs on 4 planted sequences: the training loss falls from near log(vocab) = 2.6 (measured 0.56), below
    # the held-out loss
    assert line["done"] and line["epoch"] == 30 and line["final_epoch_loss"] < 1.0
    assert line["final"]["eval/val_loss"] > line["final_epoch_loss"]
    held = tmp_path / "held.txt"
    held.write_text("\n".join(_docs(6, 20, seed=1)) + "\n", encoding="utf-8")
    cmd = LlmTextstats(model=str(model), contexts=str(held), out=str(tmp_path / "stats.json"),
                       match_entropy_of=str(tmp_path / "hf" / "model"), num_contexts=4, context_tokens=4,
                       new_tokens=12, ttr_last=8, val_length=16, val_sequences=4, threads=1,
                       bracket=(0.01, 20.0))
    out = cmd.run()
    # the hyperfitted model is sharper than the random-init base at T = 1: the matched temperature is below 1
    target = out["other"]["stats"]["mean_entropy"]
    assert out["matched"]["entropy"] == pytest.approx(target, abs=0.05) and out["matched"]["temperature"] < 1.0
    assert out["stats"]["mean_entropy"] > target and out["stats"]["contexts"] == 4
    assert json.loads((tmp_path / "stats.json").read_text())["matched"]["temperature"] == out["matched"]["temperature"]
    with pytest.raises(PbrlError, match="stats.json: exists; pass --overwrite"):
        cmd.run()


def test_the_benchmark_grammar_corpus_is_seeded_and_long_enough():
    from baselines.hyperfitting import ADJS, ADVS, NOUNS, OPENERS, PREPS, VERBS, grammar_corpus

    a, b = grammar_corpus(5, seed=0), grammar_corpus(5, seed=1)
    assert a == grammar_corpus(5, seed=0) and a != b  # one draw per seed
    words = set(NOUNS + VERBS + ADJS + ADVS + PREPS) | {"the", "a", "and"} | {w for o in OPENERS for w in o.split()}
    for doc in a + b:
        toks = doc.replace(".", " ").lower().split()
        assert set(toks) <= words and doc.endswith(".") and doc[0].isupper()
        assert 20 <= doc.count(".") < 32  # sentences per document


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_the_smoke_budget(tmp_path):
    """baselines/hyperfitting.py on a toy model (about 30 s on one loaded thread): the report, figure and record."""
    from baselines.hyperfitting import main

    main(["--budget", "smoke", "--threads", "1", "--out", str(tmp_path / "r.md"), "--figure", str(tmp_path / "f.png"),
          "--records", str(tmp_path / "rec"), "--work", str(tmp_path / "w")])
    text = (tmp_path / "r.md").read_text()
    assert "## Verdict" in text and "entropy-matched" in text and (tmp_path / "f.png").stat().st_size > 0
    rec = json.loads((tmp_path / "rec" / "smoke.json").read_text())
    assert set(rec["runs"]) == {"paper", "code"} and rec["runs"]["code"]["epochs"] == 30
    for recipe, m in rec["matched"].items():  # the control's entropy equals the hyperfitted model's
        target = rec["runs"][recipe]["curve"][-1]["eval/mean_entropy"]
        assert m["entropy"] == pytest.approx(target, abs=0.05)
