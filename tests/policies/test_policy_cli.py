"""`pbrl train` and `pbrl eval` end to end on a local Minari dataset."""

from __future__ import annotations

import json

import pytest

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
