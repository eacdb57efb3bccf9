"""Data-parallel `pbrl llm sft`: two torchrun processes (gloo DDP on CPU through accelerate) reach the
single-process losses and weights; batch_size must divide by processes x grad_accum."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import pbrl.llm.sft as sft
from pbrl.cli import main
from pbrl.errors import PbrlError
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.sft import SftConfig, train_sft
from pbrl.llm.tokenizer import word_tokenizer

WORDS = "a b c d e f g h reverse sort the letters please answer".split()


@pytest.fixture
def setup(tmp_path):
    rows = []
    for i in range(24):  # reverse-the-letters chats of varied lengths, so the processes' shares differ in tokens
        letters = [WORDS[(i * 3 + j) % 8] for j in range(2 + i % 5)]
        rows.append({"messages": [{"role": "user", "content": "reverse " + " ".join(letters)},
                                  {"role": "assistant", "content": " ".join(reversed(letters))}]})
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    word_tokenizer([" ".join(WORDS)], chat=True).save_pretrained(tmp_path / "tok")
    return data, tmp_path / "tok"


def test_batch_must_divide_by_processes_times_grad_accum(tmp_path, setup, monkeypatch):
    data, tok = setup
    # what a 2-process launch hands the trainer (the check comes before the accelerator is used)
    monkeypatch.setattr(sft, "multi_process_accelerator", lambda device: SimpleNamespace(num_processes=2, process_index=0,
                                                                            device=torch.device("cpu")))
    cfg = SftConfig(data=str(data), out=str(tmp_path / "out"), tokenizer_path=str(tok), batch_size=6, grad_accum=2,
                    max_length=32, model=TinyLMConfig(hidden_size=32, intermediate_size=64), progress=False)
    with pytest.raises(PbrlError, match=r"^batch_size \(6\) must divide by processes x grad_accum \(2 x 2\)$"):
        train_sft(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process(tmp_path, setup):
    """Packed (varlen) with grad accumulation, float64: each process packs its own share and divides by the
    global trained-token count, so the losses and the final weights equal the single-process run's up to
    summation order (rtol 1e-9)."""
    pytest.importorskip("accelerate")
    from safetensors.torch import load_file

    data, tok = setup
    args = ["llm", "sft", str(data), "--tokenizer-path", str(tok), "--batch-size", "8", "--grad-accum", "2",
            "--steps", "3", "--warmup-steps", "1", "--lr", "1e-2", "--max-length", "32", "--dtype", "float64",
            "--backend", "varlen", "--model.hidden-size", "32", "--model.intermediate-size", "64", "--no-progress",
            "--threads", "1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pbrl.cli", *args,
           "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("data: 24 conversations") == 1  # the first process alone reports
    assert main([*args, "--out", str(tmp_path / "one")]) == 0

    def rows(d):
        return [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]

    ddp, one = rows("ddp"), rows("one")
    assert [r["step"] for r in ddp] == [1, 2, 3]  # written once, by rank 0
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["processes"] == 2
    for key in ("sft/loss", "sft/grad_norm", "sft/trained_tokens"):  # packing differs: padding too
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in one], rel=1e-9, abs=1e-12), key
    assert ddp[-1]["sft/loss"] < ddp[0]["sft/loss"]  # the steps did move the weights
    a = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    b = load_file(tmp_path / "one" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12)
