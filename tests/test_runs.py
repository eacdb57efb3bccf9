"""The shared run folder: appended strict-JSON metrics, rewind on resume, fingerprint check, safe loading."""

import json
import math

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.runs import RunFolder
from pbrl.utils import dumps_json, safe_torch_load


def test_metrics_append_flush_and_rewind(tmp_path):
    run = RunFolder(tmp_path / "r", {"lr": 1e-3})
    for s in (1, 2, 3):
        run.log({"step": s, "loss": 1.0 / s})
    # readable line by line before the run ends
    assert [json.loads(x)["step"] for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    resumed = RunFolder(tmp_path / "r", {"lr": 1e-3}, resume=True)
    assert [r["step"] for r in resumed.rewind(2)] == [1, 2]
    resumed.log({"step": 3, "loss": 0.5})
    assert [r["step"] for r in resumed.rows()] == [1, 2, 3]
    # a fresh (non-resumed) run starts an empty file
    assert RunFolder(tmp_path / "r", {"lr": 1e-3}).rows() == []


def test_strict_json_rows_and_summary(tmp_path):
    run = RunFolder(tmp_path, {"x": float("nan")})
    run.log({"step": 1, "loss": float("nan"), "perf/steps_per_s": float("inf")})
    run.write_summary({"score": float("-inf"), "ok": 1.5})
    text = (tmp_path / "metrics.jsonl").read_text() + (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert run.rows() == [{"step": 1, "loss": None, "perf/steps_per_s": None}]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"score": None, "ok": 1.5}
    assert dumps_json({"a": (1, 2.0, math.nan)}) == '{"a": [1, 2.0, null]}'


def test_torn_last_line_is_skipped(tmp_path):
    run = RunFolder(tmp_path, {})
    run.log({"step": 1})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "lo')  # a killed writer
    assert run.rows() == [{"step": 1}]


def test_extra_keys_sit_at_the_top_of_config_json(tmp_path):
    RunFolder(tmp_path, {"lr": 1e-3}, extra={"algo": "iql", "steps": 10}, device="cpu")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["algo"] == "iql" and saved["steps"] == 10 and saved["config"] == {"lr": 1e-3}
    assert saved["device"] == "cpu" and "git_revision" in saved


def test_resume_refuses_a_different_fingerprint(tmp_path):
    RunFolder(tmp_path, {"lr": 1e-3, "data": "a.jsonl"}, fingerprint={"data": "sha-a", "lr": 1e-3})
    with pytest.raises(PbrlError, match="cannot resume, data differs"):
        RunFolder(tmp_path, {"lr": 1e-3}, fingerprint={"data": "sha-b", "lr": 1e-3}, resume=True)
    # the refused attempt left the saved config as it was
    assert json.loads((tmp_path / "config.json").read_text())["fingerprint"]["data"] == "sha-a"
    RunFolder(tmp_path, {"lr": 1e-3}, fingerprint={"data": "sha-a", "lr": 1e-3}, resume=True)


def test_checkpoints_are_loaded_safely(tmp_path):
    run = RunFolder(tmp_path, {})
    run.save("checkpoint.pt", {"w": torch.arange(3.0), "step": 7})
    assert run.load("checkpoint.pt")["step"] == 7

    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    torch.save({"x": Payload()}, tmp_path / "crafted.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "checkpoint.pt").read_bytes()[:40])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("crafted.pt", "truncated.pt", "empty.pt", "missing.pt"):
        with pytest.raises(PbrlError, match=name) as err:
            safe_torch_load(tmp_path / name)
        # one line, and never torch's advice to load an untrusted file unsafely
        assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(PbrlError, match="other than tensors"):
        safe_torch_load(tmp_path / "crafted.pt")


def _tb_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_follow_the_rows_and_the_rewind(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is optional (pip install tensorboard)")
    run = RunFolder(tmp_path, {"lr": 1e-3}, tensorboard=True)
    for s in (1, 2, 3):
        # lists, bools, None and non-finite values are not scalars: only the finite numbers are written
        run.log({"step": s, "iql/v_loss": 1.0 / s, "eval/returns": [1.0, 2.0], "flag": True, "eval/score": None,
                 "perf/steps_per_s": float("inf") if s == 2 else 10.0 * s})
    assert _tb_scalars(tmp_path / "tb") == {
        "iql/v_loss": [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))],
        "perf/steps_per_s": [(1, 10.0), (3, 30.0)],
    }
    # a resume from step 2 logs step 3 again: TensorBoard shows the new value, not both
    resumed = RunFolder(tmp_path, {"lr": 1e-3}, tensorboard=True, resume=True)
    resumed.rewind(2)
    resumed.log({"step": 3, "iql/v_loss": 7.0})
    resumed.write_summary({"done": True})
    assert _tb_scalars(tmp_path / "tb")["iql/v_loss"] == [(1, 1.0), (2, 0.5), (3, 7.0)]
    # a fresh run in the same folder starts new curves
    fresh = RunFolder(tmp_path, {"lr": 1e-3}, tensorboard=True)
    fresh.log({"step": 1, "iql/v_loss": 9.0})
    fresh.close()
    assert _tb_scalars(tmp_path / "tb") == {"iql/v_loss": [(1, 9.0)]}


def test_tensorboard_off_by_default_and_not_on_silent_ranks(tmp_path):
    RunFolder(tmp_path / "a", {}).log({"step": 1, "x/y": 1.0})
    RunFolder(tmp_path / "b", {}, tensorboard=True, write=False).log({"step": 1, "x/y": 1.0})
    assert not (tmp_path / "a" / "tb").exists() and not (tmp_path / "b").exists()


def test_tensorboard_missing_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(PbrlError, match="pip install tensorboard") as err:
        RunFolder(tmp_path / "r", {}, tensorboard=True)
    assert "\n" not in str(err.value) and not (tmp_path / "r").exists()


def test_training_progress_reads_the_logs_tail(tmp_path):
    import json

    from pbrl.runs import tail_rows, training_progress

    assert training_progress(tmp_path) == (None, 0.0)
    (tmp_path / "config.json").write_text(json.dumps({"steps": 50}))
    rows = [{"step": 10, "perf/steps_per_s": 7.25}, {"step": 20, "eval/return_mean": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3')
    assert tail_rows(tmp_path / "metrics.jsonl") == rows
    assert tail_rows(tmp_path / "metrics.jsonl", nbytes=50) == rows[1:]  # a row cut by the window is skipped
    assert training_progress(tmp_path)[0] == "policy 20/50 updates, 7.25/s"
