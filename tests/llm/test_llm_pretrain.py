"""`pbrl llm pretrain`: rows and schedule by hand, the loss falls, the saved model reads back, resume is exact,
bad corpora are one error line."""

from __future__ import annotations

import json
import math

import pytest
import torch
import tyro

from pbrl.errors import PbrlError
from pbrl.llm.commands import LlmPretrain
from pbrl.llm.models import TinyLMConfig, build_model, load_model
from pbrl.llm.pretrain import PretrainConfig, chunk_rows, lm_loss, lr_at, pretrain, read_corpus, token_stream
from pbrl.llm.tokenizer import IM_END, IM_START, load_tokenizer, word_tokenizer

ANIMALS, PLACES = ["cat", "dog", "bird", "fox"], ["mat", "log", "tree", "box"]
DOCS = [f"the {a} sat on the {p} and the {a} was happy." for a in ANIMALS for p in PLACES] * 8
SMALL = TinyLMConfig(hidden_size=32, intermediate_size=64)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    return path


def _cfg(corpus, out, **kw) -> PretrainConfig:
    base = dict(corpus=str(corpus), out=str(out), vocab_size=300, model=SMALL, seq_length=32, batch_size=8,
                steps=12, warmup_steps=3, lr=3e-3, progress=False, checkpoint_every=100)
    base.update(kw)
    return PretrainConfig(**base)


def test_rows_stream_and_schedule_by_hand():
    tok = word_tokenizer(["a b c"])
    a, b, c, eos = tok.convert_tokens_to_ids(["a", "b", "c", "<eos>"])
    stream = token_stream(tok, ["a b", "c"])
    assert stream.tolist() == [a, b, eos, c, eos]
    rows = chunk_rows(torch.arange(10), 3)  # (10 - 1) // 3 = 3 rows of 4, sharing one token with the next
    assert rows.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    with pytest.raises(PbrlError, match="too few for one row"):
        chunk_rows(torch.arange(3), 3)
    cfg = PretrainConfig(lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    # warmup 0.5, 1.0; then cosine over 10 - 2 = 8 steps from 1.0 to 0.1: at p = 0.5 it is 0.55
    assert [lr_at(s, cfg, 10) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert lr_at(6, cfg, 10) == pytest.approx(0.55) and lr_at(10, cfg, 10) == pytest.approx(0.1)
    assert lr_at(4, cfg, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_loss_falls_and_saved_model_reads_back(tmp_path, corpus):
    model_cfg = TinyLMConfig(hidden_size=64, intermediate_size=128)  # ~93k parameters with the 300-token BPE
    res = pretrain(_cfg(corpus, tmp_path / "run", model=model_cfg, steps=100, warmup_steps=10))
    losses = [r["pretrain/loss"] for r in res["history"]]
    assert 80_000 < res["num_parameters"] < 120_000 and res["done"] and len(losses) == 100
    assert losses[0] > math.log(300) - 1 and losses[-1] < 0.5 * losses[0]
    assert res["final"]["perf/tokens_per_s"] > 0 and res["final"]["pretrain/tokens"] == 100 * 8 * 32

    tok = load_tokenizer(tmp_path / "run" / "model", chat=True)
    assert tok.convert_tokens_to_ids([IM_START, IM_END]) != [tok.unk_token_id] * 2 and len(tok) == 300
    model = load_model(tmp_path / "run" / "model", backend="hf_sdpa").eval()
    rows = chunk_rows(token_stream(tok, read_corpus(corpus)), 32)[:8]
    # the same weights as the final checkpoint, built afresh: the same loss on a batch
    ref = build_model(TinyLMConfig(**{**model_cfg.__dict__, "vocab_size": 300}), backend="hf_sdpa").eval()
    ref.load_state_dict(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        loaded, direct = float(lm_loss(model, rows)), float(lm_loss(ref, rows))
    assert loaded == direct and loaded < 0.5 * losses[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["done"] and summary["step"] == 100
    rows_logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows_logged] == list(range(1, 101))


def test_resume_matches_uninterrupted_run(tmp_path, corpus):
    full = pretrain(_cfg(corpus, tmp_path / "full"))
    part = pretrain(_cfg(corpus, tmp_path / "part", stop_after=5))
    assert not part["done"] and part["step"] == 5 and not (tmp_path / "part" / "model").exists()
    resumed = pretrain(_cfg(corpus, tmp_path / "part"))
    assert resumed["done"]
    assert [r["pretrain/loss"] for r in resumed["history"]] == [r["pretrain/loss"] for r in full["history"]]
    assert [r["pretrain/lr"] for r in resumed["history"]] == [r["pretrain/lr"] for r in full["history"]]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


def test_resume_refuses_other_settings_and_data(tmp_path, corpus):
    pretrain(_cfg(corpus, tmp_path / "r", steps=2))
    with pytest.raises(PbrlError, match="cannot resume, lr differs"):
        pretrain(_cfg(corpus, tmp_path / "r", steps=2, lr=1e-3))
    with pytest.raises(PbrlError, match="cannot resume, steps differs"):  # the cosine's length
        pretrain(_cfg(corpus, tmp_path / "r", steps=4))
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(DOCS)) + "\n", encoding="utf-8")
    with pytest.raises(PbrlError, match="cannot resume, corpus_sha256 differs"):
        pretrain(_cfg(other, tmp_path / "r", steps=2))


@pytest.mark.parametrize("kind", ["missing", "empty", "latin1", "latin1_jsonl", "no_text", "short"])
def test_bad_corpus_is_one_error_line(tmp_path, kind):
    path = tmp_path / ("c.jsonl" if kind in ("latin1_jsonl", "no_text") else "c.txt")
    expected = {
        "missing": "no such corpus file",
        "empty": "holds no documents",
        "latin1": r"c.txt:2: not UTF-8 text",
        "latin1_jsonl": r"c.jsonl:1: not UTF-8 text",
        "no_text": r"c.jsonl:2: expected an object with a `text` string",
        "short": "batch_size: 8 rows per step, but the corpus gives only",
    }[kind]
    if kind == "empty":
        path.write_text("\n  \n\n")
    elif kind == "latin1":
        path.write_bytes(b"fine line\ncaf\xe9\n")
    elif kind == "latin1_jsonl":
        path.write_bytes(b'{"text": "caf\xe9"}\n')
    elif kind == "no_text":
        path.write_text('{"text": "a b"}\n{"body": "a b"}\n')
    elif kind == "short":
        path.write_text("the cat sat on the mat\n" * 20)
    with pytest.raises(PbrlError, match=expected) as e:
        pretrain(_cfg(path, tmp_path / "out"))
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_jsonl_corpus_gives_the_txt_run(tmp_path, corpus):
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    assert read_corpus(jsonl) == read_corpus(corpus) == DOCS
    a = pretrain(_cfg(corpus, tmp_path / "a", steps=3))
    b = pretrain(_cfg(jsonl, tmp_path / "b", steps=3))
    assert [r["pretrain/loss"] for r in a["history"]] == [r["pretrain/loss"] for r in b["history"]]


def test_command_parses_and_runs(tmp_path, corpus, capsys):
    out = tmp_path / "cmd"
    cmd = tyro.cli(LlmPretrain, args=[str(corpus), "--out", str(out), "--steps", "3", "--seq-length", "16",
                                      "--batch-size", "4", "--vocab-size", "300", "--model.hidden-size", "32",
                                      "--model.intermediate-size", "64", "--threads", "1", "--no-progress"])
    before = torch.get_num_threads()
    try:
        cmd.run()
    finally:
        torch.set_num_threads(before)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"pbrl llm pretrain on {corpus}: 1 thread")
    summary = json.loads(lines[-2])
    assert summary["step"] == 3 and summary["done"] and lines[-1] == f"wrote {out}/model, {out}/metrics.jsonl"
    assert json.loads((out / "config.json").read_text())["config"]["seq_length"] == 16
    assert (out / "model" / "config.json").is_file() and (out / "tokenizer" / "tokenizer.json").is_file()
