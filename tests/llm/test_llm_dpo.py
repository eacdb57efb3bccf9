"""DPO losses (hand-computed), preference data IO, the trainer (learns, resumes, layout-independent) and CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pbrl.cli import main
from pbrl.errors import PbrlError
from pbrl.llm.dpo import DpoConfig, dpo_loss, hinge_loss, ipo_loss, resolve_backend, sigmoid_loss, train_dpo
from pbrl.llm.models import TinyLMConfig
from pbrl.llm.prefs_data import (
    PROFILES,
    PreferenceRecord,
    load_preferences,
    profile_lengths,
    save_preferences,
    synthetic_pairs,
    synthetic_records,
    tokenize_records,
)
from pbrl.llm.tokenizer import bpe_tokenizer, load_tokenizer, word_tokenizer

POL = torch.tensor([[-3.0, -5.0], [-4.0, -2.0]])
REF = torch.tensor([[-3.5, -4.5], [-4.0, -3.0]])  # margins h = (0.5) - (-0.5) = 1.0 and 0 - 1 = -1.0


def test_losses_by_hand():
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(sigmoid_loss(POL, REF, 0.5), torch.tensor([-math.log(s(0.5)), -math.log(s(-0.5))]))
    ls = sigmoid_loss(POL, REF, 0.5, label_smoothing=0.1)
    torch.testing.assert_close(ls[0], torch.tensor(-0.9 * math.log(s(0.5)) - 0.1 * math.log(s(-0.5))))
    torch.testing.assert_close(hinge_loss(POL, REF, 0.5), torch.tensor([0.5, 1.5]))
    lengths = torch.tensor([[2.0, 4.0], [1.0, 2.0]])
    # normalized margins: (-1.5 + 1.75) - (-1.25 + 1.125) = 0.375 ; (-4 + 4) - (-1 + 1.5) = -0.5 ; target 1/(2*0.5)=1
    torch.testing.assert_close(ipo_loss(POL, REF, 0.5, lengths), torch.tensor([0.625**2, 1.5**2]))
    nll = dpo_loss(POL, REF, lengths, loss="hinge", beta=0.5, nll_weight=2.0)
    torch.testing.assert_close(nll, torch.tensor([0.5 + 2 * 1.5, 1.5 + 2 * 4.0]))
    with pytest.raises(PbrlError, match="loss"):
        dpo_loss(POL, REF, lengths, loss="kto")  # type: ignore[arg-type]


def test_jsonl_roundtrip_and_errors(tmp_path):
    recs = [PreferenceRecord("a b", "c", "d e"), PreferenceRecord([{"role": "user", "content": "hi"}], "yo", "no")]
    save_preferences(recs, tmp_path / "p.jsonl")
    assert load_preferences(tmp_path / "p.jsonl") == recs
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"\n')
    with pytest.raises(PbrlError, match=r"bad.jsonl:2: invalid JSON"):
        load_preferences(tmp_path / "bad.jsonl")
    (tmp_path / "miss.jsonl").write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(PbrlError, match=r"miss.jsonl:1: missing field\(s\) rejected"):
        load_preferences(tmp_path / "miss.jsonl")
    with pytest.raises(PbrlError, match="no such preference file"):
        load_preferences(tmp_path / "none.jsonl")


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"prompt": "p", "chosen": "c", "rejected": "r"}]).save_to_disk(str(tmp_path / "ds"))
    assert load_preferences(tmp_path / "ds") == [PreferenceRecord("p", "c", "r")]


def test_tokenizers_and_chat_template(tmp_path):
    tok = word_tokenizer(["w1 w2 w3", "w4", "user assistant"])
    (pair,) = tokenize_records([PreferenceRecord("w1 w2", "w3", "w4 w1")], tok)
    assert pair.prompt == [tok.bos_token_id] + tok.convert_tokens_to_ids(["w1", "w2"])
    assert pair.chosen == tok.convert_tokens_to_ids(["w3"]) + [tok.eos_token_id]
    assert len(pair.rejected) == 3
    tok.save_pretrained(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok")("w1 w4")["input_ids"] == tok("w1 w4")["input_ids"]
    bpe = bpe_tokenizer(["héllo world " * 20], vocab_size=300)
    assert bpe.decode(bpe("héllo", add_special_tokens=False)["input_ids"]) == "héllo"
    conv = PreferenceRecord([{"role": "user", "content": "w1"}], [{"role": "assistant", "content": "w2"}], "w3")
    with pytest.raises(PbrlError, match="chat template"):
        tokenize_records([conv], tok)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}" \
                        "{% if add_generation_prompt %}assistant {% endif %}"
    (pair,) = tokenize_records([conv], tok)
    assert tok.decode(pair.prompt, skip_special_tokens=True).split() == ["user", "w1", "assistant"]
    assert tok.decode(pair.chosen, skip_special_tokens=True).split() == ["w2"]


def test_synthetic_profiles_follow_the_table():
    for name, (median, ratio) in PROFILES.items():
        L = profile_lengths(name, 4000, seed=1)
        assert np.median(L[:, 0]) == pytest.approx(median * ratio / (1 + ratio), rel=0.05)
        assert np.median(L[:, 1]) == pytest.approx(median / (1 + ratio), rel=0.05)
    pairs = synthetic_pairs("tldr", 10, 50, seed=0, scale=0.1)
    assert all(t % 2 == 0 for p in pairs for t in p.chosen) and all(t % 2 == 1 for p in pairs for t in p.rejected)
    assert synthetic_records("tldr", 3, seed=2) == synthetic_records("tldr", 3, seed=2)
    with pytest.raises(PbrlError, match="profile"):
        profile_lengths("nope", 3)


def _cfg(tmp_path, name, **kw) -> DpoConfig:
    base = dict(out=str(tmp_path / name), model=TinyLMConfig(hidden_size=32, intermediate_size=64),
                batch_size=8, lr=3e-3, progress=False, checkpoint_every=100)
    base.update(kw)
    return DpoConfig(**base)


PAIRS = synthetic_pairs("hh_rlhf", 32, 40, seed=0, scale=0.08)


def test_trainer_learns(tmp_path):
    res = train_dpo(_cfg(tmp_path, "a", epochs=4), pairs=PAIRS)
    hist = res["history"]
    assert hist[0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0
    assert hist[-1]["dpo/loss"] < 0.5 and hist[-1]["dpo/reward_accuracy"] == 1.0
    assert all(r["perf/samples_per_s"] > 0 and r["perf/tokens_per_s"] > 0 for r in hist)
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(hist) == 16
    assert (tmp_path / "a" / "model" / "config.json").exists()


def test_layouts_give_the_same_training_curve(tmp_path):
    curves = {}
    runs = [("padded", "hf_sdpa"), ("packed_shared", "sdpa"), ("shared", "sdpa"), ("packed_shared", "auto")]
    for layout, backend in runs:
        res = train_dpo(_cfg(tmp_path, layout + backend, layout=layout, backend=backend, dtype="float64", max_steps=4,
                             grad_accum=2), pairs=PAIRS)
        curves[layout, backend] = [r["dpo/loss"] for r in res["history"]]
    padded = curves["padded", "hf_sdpa"]
    assert padded[-1] < padded[0]
    for key in runs[1:]:
        np.testing.assert_allclose(curves[key], padded, rtol=0, atol=1e-9, err_msg=str(key))


def test_auto_backend():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", "packed_shared", cpu) == "varlen"
    assert resolve_backend("auto", "shared", gpu) == "flex"
    assert resolve_backend("auto", "padded", cpu) == "hf_sdpa"
    assert resolve_backend("triton", "shared", cpu) == "triton"


def test_resume_matches_uninterrupted_run(tmp_path):
    full = train_dpo(_cfg(tmp_path, "full", max_steps=4), pairs=PAIRS)
    train_dpo(_cfg(tmp_path, "part", max_steps=2, checkpoint_every=2), pairs=PAIRS)
    resumed = train_dpo(_cfg(tmp_path, "part", max_steps=4), pairs=PAIRS)
    assert [r["dpo/loss"] for r in resumed["history"]] == [r["dpo/loss"] for r in full["history"]]
    a = torch.load(tmp_path / "full" / "checkpoint" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_precomputed_reference_file_is_checked(tmp_path):
    torch.save(torch.zeros(3, 2), tmp_path / "ref.pt")
    with pytest.raises(PbrlError, match=r"shape \[32, 2\]"):
        train_dpo(_cfg(tmp_path, "r", ref_logps=str(tmp_path / "ref.pt"), max_steps=1), pairs=PAIRS)


def test_cli_synth_and_dpo(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    assert main(["llm", "synth", str(data), "--profile", "tldr", "--num", "16", "--scale", "0.05"]) == 0
    assert len(data.read_text().splitlines()) == 16
    out = tmp_path / "run"
    assert main(["llm", "dpo", str(data), "--out", str(out), "--batch-size", "8", "--max-steps", "2",
                 "--model.hidden-size", "32", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    assert summary["step"] == 2 and summary["num_parameters"] > 0
    assert main(["llm", "dpo", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "no such preference file" in capsys.readouterr().err


def test_cli_threads_are_set_once_recorded_and_not_fingerprinted(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    assert main(["llm", "synth", str(data), "--profile", "tldr", "--num", "16", "--scale", "0.05"]) == 0
    out = tmp_path / "run"
    args = ["llm", "dpo", str(data), "--out", str(out), "--batch-size", "8", "--model.hidden-size", "32",
            "--no-progress"]
    before = torch.get_num_threads()
    try:
        capsys.readouterr()
        assert main([*args, "--threads", "0"]) == 2
        assert "threads: expected a positive whole number" in capsys.readouterr().err and not out.exists()
        assert main([*args, "--max-steps", "1", "--threads", "1"]) == 0
        assert capsys.readouterr().out.splitlines()[0].startswith(f"pbrl llm dpo on {data}: 1 thread")
        assert torch.get_num_threads() == 1
        assert json.loads((out / "config.json").read_text())["config"]["threads"] == 1
        # another thread count does not change the run: the resume continues from step 1
        assert main([*args, "--max-steps", "2", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process(tmp_path):
    """torchrun with 2 CPU processes (gloo DDP through accelerate) reaches the single-process losses."""
    import subprocess
    import sys

    pytest.importorskip("accelerate")
    data = tmp_path / "d.jsonl"
    assert main(["llm", "synth", str(data), "--profile", "tldr", "--num", "16", "--scale", "0.05"]) == 0
    args = ["llm", "dpo", str(data), "--batch-size", "8", "--max-steps", "3", "--model.hidden-size", "32",
            "--no-progress", "--lr", "1e-2"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "pbrl.cli", *args,
           "--out", str(tmp_path / "ddp")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    read = lambda d: [json.loads(x)["dpo/loss"] for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["processes"] == 2
    np.testing.assert_allclose(read("ddp"), read("one"), rtol=1e-5)


def test_resume_refuses_other_data_and_settings(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    save_preferences(synthetic_records("tldr", 16, seed=0, scale=0.05), a)
    save_preferences(synthetic_records("tldr", 16, seed=1, scale=0.05), b)
    train_dpo(_cfg(tmp_path, "run", data=str(a), max_steps=1))
    config_before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(PbrlError, match="cannot resume, data_sha256 differs"):
        train_dpo(_cfg(tmp_path, "run", data=str(b), max_steps=2))
    with pytest.raises(PbrlError, match="cannot resume, beta differs"):
        train_dpo(_cfg(tmp_path, "run", data=str(a), max_steps=2, beta=0.5))
    assert (tmp_path / "run" / "config.json").read_text() == config_before
    # the same bytes under another name, with a later end, continue
    c = tmp_path / "c.jsonl"
    c.write_bytes(a.read_bytes())
    res = train_dpo(_cfg(tmp_path, "run", data=str(c), max_steps=2))
    assert [r["step"] for r in res["history"]] == [1, 2]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["config"]["data"] == str(c) and cfg["num_examples"] == 16 and cfg["fingerprint"]["data_sha256"]


def test_resume_does_not_repeat_metrics_rows(tmp_path):
    train_dpo(_cfg(tmp_path, "part", max_steps=2, checkpoint_every=2), pairs=PAIRS)
    # a run killed after logging steps 3 and 4 but before checkpointing them
    with open(tmp_path / "part" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "dpo/loss": 9.0}) + "\n" + json.dumps({"step": 4, "dpo/loss": 9.0}) + "\n")
    train_dpo(_cfg(tmp_path, "part", max_steps=4), pairs=PAIRS)
    rows = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and 9.0 not in [r["dpo/loss"] for r in rows]


def test_bad_reference_files_and_checkpoints_are_one_error(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    torch.save({"x": Payload()}, tmp_path / "crafted.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("crafted.pt", "empty.pt", "missing.pt"):
        with pytest.raises(PbrlError, match=f"{name}: .*reference log-probs file"):
            train_dpo(_cfg(tmp_path, "r", ref_logps=str(tmp_path / name), max_steps=1), pairs=PAIRS)
    assert not (tmp_path / "r").exists()
    train_dpo(_cfg(tmp_path, "c", max_steps=1), pairs=PAIRS)
    (tmp_path / "c" / "checkpoint" / "model.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(PbrlError, match=r"checkpoint/model.pt: unreadable DPO model checkpoint"):
        train_dpo(_cfg(tmp_path, "c", max_steps=2), pairs=PAIRS)
    torch.save({"nope": torch.zeros(2)}, tmp_path / "c" / "checkpoint" / "model.pt")
    with pytest.raises(PbrlError, match=r"checkpoint/model.pt: does not fit the model"):
        train_dpo(_cfg(tmp_path, "c", max_steps=2), pairs=PAIRS)


def test_preference_file_errors_name_the_line(tmp_path):
    good = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
    (tmp_path / "latin1.jsonl").write_bytes(good.encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(PbrlError, match=r"latin1.jsonl:2: not UTF-8 text"):
        load_preferences(tmp_path / "latin1.jsonl")
    (tmp_path / "list.jsonl").write_text(good + "[1, 2]\n")
    with pytest.raises(PbrlError, match=r"list.jsonl:2: expected an object"):
        load_preferences(tmp_path / "list.jsonl")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.txt").write_text("x")
    pytest.importorskip("datasets")
    with pytest.raises(PbrlError, match="folder: not a datasets folder"):
        load_preferences(tmp_path / "folder")


def test_unknown_device_is_one_error(tmp_path):
    with pytest.raises(PbrlError, match="device: unknown torch device 'tpu'"):
        train_dpo(_cfg(tmp_path, "d", device="tpu", max_steps=1), pairs=PAIRS)
    if not torch.cuda.is_available():
        with pytest.raises(PbrlError, match="no CUDA device"):
            train_dpo(_cfg(tmp_path, "d", device="cuda", max_steps=1), pairs=PAIRS)
    assert not (tmp_path / "d").exists()
