"""baselines/sft_throughput.py: argument checks, the tokens/s and bound arithmetic by hand, a tiny run of its measuring
function (same conversations and trained tokens in every mode, TRL's packed batch attends within documents), and
the unpadded varlen row it relies on (log-probs equal the dense-mask reference, float64)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from baselines.sft_throughput import BenchConfig, main, measure, summarize
from pbrl.errors import PbrlError
from pbrl.llm.attention import model_branch_logps, unpadded, use_backend
from pbrl.llm.models import TinyLMConfig, build_model
from pbrl.llm.prefix_sharing import TokenizedPair, build_batch


def test_arguments_are_checked_before_any_work(tmp_path):
    with pytest.raises(PbrlError, match="--steps: expected a positive whole number"):
        main(["--steps", "0"])
    with pytest.raises(PbrlError, match="--warmup: expected 0 <= warmup < steps"):
        main(["--steps", "3", "--warmup", "3"])
    with pytest.raises(PbrlError, match="the folder does not exist"):
        main(["--out", str(tmp_path / "no" / "x.md")])
    assert not list(tmp_path.iterdir())


def test_tokens_per_second_and_bound_by_hand():
    cfg = BenchConfig(warmup=1)
    step = lambda s, n, slots=None: {"seconds": s, "tokens": n, "trained": 1, **({"slots": slots} if slots else {})}  # noqa: E731
    runs = {  # two rounds of three steps; the first step is the warm-up
        "pbrl_packed": [[step(9, 10, 12), step(1, 100, 120), step(2, 50, 60)],
                        [step(9, 10, 12), step(3, 100, 120), step(2, 50, 60)]],
        "pbrl_padded": [[step(9, 10, 20), step(4, 100, 200), step(4, 50, 100)],
                        [step(9, 10, 20), step(4, 100, 200), step(6, 50, 100)]],
    }
    res = summarize(cfg, runs)
    # packed: medians 2 and 2 -> 150 tokens / 4 s; padded: medians 4 and 5 -> 150 / 9 s
    assert res["modes"]["pbrl_packed"]["tokens_per_s"] == pytest.approx(37.5)
    assert res["modes"]["pbrl_padded"]["tokens_per_s"] == pytest.approx(150 / 9)
    assert res["packed_over_padded"] == pytest.approx(9 / 4)
    assert res["bound"] == pytest.approx(300 / 150)  # padded slots / real tokens of the timed steps
    assert res["efficiency"] == pytest.approx(9 / 8)
    assert res["modes"]["pbrl_packed"]["trained_epoch"] == 3


def test_unpadded_row_keeps_every_logp_float64():
    pairs = [TokenizedPair([1, 2, 3], [4, 5], [6]), TokenizedPair([7], [8, 9, 10], [11, 12]),
             TokenizedPair([13, 14], [15], [16, 17, 18]), TokenizedPair([19], [20], [21])]
    batch = build_batch(pairs, "packed_shared", pack_length=12)
    assert batch.input_ids.shape[0] > 1 and batch.num_tokens < batch.input_ids.numel()  # rows with padding
    flat = unpadded(batch)
    assert flat.input_ids.shape == (1, batch.num_tokens)
    keep = batch.doc >= 0
    assert flat.input_ids[0].tolist() == batch.input_ids[keep].tolist()
    assert flat.slots[0].tolist() == batch.slots[keep].tolist()
    # documents stay contiguous runs with distinct ids: one per (old row, document)
    runs = torch.unique_consecutive(flat.doc[0])
    assert runs.tolist() == list(range(len(runs))) == list(range(int((batch.doc.amax(1) + 1).sum())))
    model = build_model(TinyLMConfig(vocab_size=32, hidden_size=16, num_heads=2, num_kv_heads=1,
                                     intermediate_size=32), backend="sdpa", dtype=torch.float64, seed=0)
    with torch.no_grad():
        want = model_branch_logps(model, batch)  # the dense-mask reference on the padded rows
        use_backend(model, "varlen")
        got = model_branch_logps(model, batch)  # one unpadded row
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_tiny_run_trains_every_mode_on_the_same_tokens():
    cfg = BenchConfig(model=TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                         intermediate_size=64, max_position=256),
                      vocab_size=300, corpus_docs=200, batch_size=6, steps=3, warmup=1, rounds=1)
    lines: list[str] = []
    res = measure(cfg, log=lines.append)
    modes = res["modes"]
    assert set(modes) == {"pbrl_packed", "pbrl_padded", "trl_packed"}
    assert len({m["tokens_epoch"] for m in modes.values()}) == 1  # the same conversations
    assert len({m["trained_epoch"] for m in modes.values()}) == 1  # the same assistant-only tokens
    assert res["trl_cross_document_logit_diff"] < 1e-4  # TRL's flattened packed batch attends within documents
    assert res["trl_steps"] <= cfg.steps and all(m["tokens_per_s"] > 0 for m in modes.values())
    assert modes["pbrl_padded"]["slots"] > modes["pbrl_padded"]["tokens"]  # padding was counted
    assert res["efficiency"] == pytest.approx(res["packed_over_padded"] / res["bound"])
    assert any("no cross-document attention" in line for line in lines)
    with pytest.raises(PbrlError, match="--rounds"):
        measure(dataclasses.replace(cfg, rounds=0))
