"""`pbrl train` and `pbrl eval` end to end on a local Minari dataset."""

from __future__ import annotations

import json

import pytest
from conftest import small_config

from pbrl.cli import main
from pbrl.policies.commands import parse_overrides


def test_train_then_eval(pendulum, tmp_path, capsys):
    pendulum.to_minari("pbrl/pendulum-test/random-v0")
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "bc",
            "pbrl/pendulum-test/random-v0",
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--eval-episodes",
            "2",
            "--out",
            str(out),
            "--set",
            "hidden=[16,16]",
            "batch_size=8",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 6 and len(summary["last_returns"]) == 2
    assert summary["last_score"] is not None  # the Minari dataset kept its reference scores
    assert json.loads((out / "config.json").read_text())["config"]["hidden"] == [16, 16]
    capsys.readouterr()
    assert main(["eval", str(out / "policy.pt"), "--episodes", "2", "--json-out"]) == 0
    res = json.loads(capsys.readouterr().out)
    # same policy, same seeds as the run's last evaluation? (the run evaluates with seed + 10000)
    assert res["step"] == 6 and len(res["returns"]) == 2
    assert main(["eval", str(out / "policy.pt"), "--episodes", "2", "--seed", "10000", "--json-out"]) == 0
    assert json.loads(capsys.readouterr().out)["returns"] == summary["last_returns"]
    # resuming a finished run is a no-op that keeps the result
    assert (
        main(
            [
                "train",
                "bc",
                "pbrl/pendulum-test/random-v0",
                "--steps",
                "6",
                "--eval-every",
                "3",
                "--eval-episodes",
                "2",
                "--out",
                str(out),
                "--set",
                "hidden=[16,16]",
                "batch_size=8",
                "--resume",
            ]
        )
        == 0
    )


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "bc", "no/such-dataset-v0", "--steps", "2"]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "iql", "x", "--set", "nonsense"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_parse_overrides():
    assert parse_overrides(["a=1", "b=[2,3]", "c=paper", "d=true", "e=null"]) == {
        "a": 1,
        "b": (2, 3),
        "c": "paper",
        "d": True,
        "e": None,
    }
    with pytest.raises(Exception, match="key=value"):
        parse_overrides(["=3"])


def _train_args(out, *extra):
    return ["train", "bc", "pbrl/pendulum-test/random-v0", "--steps", "4", "--eval-every", "0", "--eval-episodes",
            "1", "--out", str(out), "--set", "hidden=[8,8]", "batch_size=4", *extra]


def test_train_refuses_an_existing_run_without_resume_or_overwrite(pendulum, tmp_path, capsys, monkeypatch):
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (5.1, 5.1, 5.1))  # an oversubscribed machine
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    pendulum.to_minari("pbrl/pendulum-test/random-v0")
    out = tmp_path / "run"
    assert main(_train_args(out)) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("pbrl train bc on pbrl/pendulum-test/random-v0: 4 steps, 1 thread (load 5.1/2 cores)")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["threads"] == 1  # the free-core default: 2 cores - 5.1 load -> at least 1
    before = (out / "summary.json").read_bytes()
    assert main(_train_args(out, "--threads", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pbrl: error: ") and "holds a run already" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1
    assert (out / "summary.json").read_bytes() == before  # the old run is whole
    (out / "summary.json").write_text("{}")  # a marker: --overwrite starts afresh and writes its own
    assert main(_train_args(out, "--overwrite", "--threads", "2")) == 0
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 4
    assert json.loads((out / "config.json").read_text())["threads"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 1


def test_trainer_prints_a_time_estimate_and_says_when_it_is_long(pendulum, tmp_path, capsys, monkeypatch):
    from pbrl.policies import trainer
    from pbrl.policies.trainer import train_policy
    from pbrl.utils import estimate_line

    assert estimate_line(100_000 / 0.9, "100000 steps", "0.9 steps/s", shorten="pass fewer --steps") == (
        "about 30.9 h for 100000 steps at 0.9 steps/s; over 10 minutes (pass fewer --steps)"
    )
    assert estimate_line(45.0, "5000 steps", "111 steps/s") == "about 45 s for 5000 steps at 111 steps/s"
    monkeypatch.setattr(trainer, "ESTIMATE_AFTER", 3)
    cfg = small_config("bc", batch_size=4, hidden=(8, 8))
    train_policy("bc", pendulum, cfg, steps=8, eval_every=4, eval_episodes=1, out_dir=tmp_path / "r")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("about ")]
    # once after 3 updates (evaluation not yet timed), once more when the first of the 2 evaluations is
    assert len(lines) == 2, lines
    assert lines[0].endswith("evaluation not yet timed") and "for 8 steps at " in lines[0]
    assert "and 2 evaluations of " in lines[1]


def test_tensorboard_logging_writes_the_metrics_as_scalars(pendulum, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is optional (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pbrl.policies.trainer import train_policy

    train_policy("bc", pendulum, small_config("bc"), steps=8, eval_every=0, eval_episodes=0, log_every=4,
                 out_dir=tmp_path / "r", tensorboard=True, progress=False)
    acc = EventAccumulator(str(tmp_path / "r" / "tb"))
    acc.Reload()
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    key = next(k for k in rows[0] if k.startswith("bc/"))
    events = acc.Scalars(key)
    assert [e.step for e in events] == [r["step"] for r in rows if key in r]
    assert [e.value for e in events] == pytest.approx([r[key] for r in rows if key in r], rel=1e-6)
