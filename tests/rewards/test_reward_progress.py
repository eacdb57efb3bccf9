"""What the reward commands tell while they run: threads, time estimate, early stop, scoring progress; and no
silent replacement of a reward model folder."""

import json
import os

import numpy as np
import pytest

from pbrl.cli import main
from pbrl.data import collect_episodes, scripted_preferences
from pbrl.errors import PbrlError
from pbrl.rewards import RewardConfig, train_reward
from pbrl.rewards.relabel import chunk_table, raw_rewards
from pbrl.rewards.units import scoring_progress
from pbrl.utils import round_floats

TINY = dict(hidden=(8, 8), d_model=16, heads=2, epochs=2, batch_size=32, early_stop=False, ensemble=2)


@pytest.fixture(scope="module")
def pendulum():
    ds = collect_episodes("Pendulum-v1", num_transitions=600, seed=0)
    return ds, scripted_preferences(ds, 60, 10, seed=1)


def test_an_existing_reward_folder_is_refused_unless_overwrite(pendulum, tmp_path):
    ds, pairs = pendulum
    out = tmp_path / "rm"
    train_reward(ds, pairs, RewardConfig(**TINY), out_dir=out, progress=False, overwrite=False)
    before = (out / "reward.pt").read_bytes()
    with pytest.raises(PbrlError, match=r"holds a run already .*--overwrite"):
        train_reward(ds, pairs, RewardConfig(**{**TINY, "seed": 1}), out_dir=out, progress=False, overwrite=False)
    assert (out / "reward.pt").read_bytes() == before
    (out / "stale-marker").write_text("")  # not a reward file: kept
    train_reward(ds, pairs, RewardConfig(**{**TINY, "seed": 1}), out_dir=out, progress=False, overwrite=True)
    assert (out / "reward.pt").read_bytes() != before
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 1
    assert (out / "stale-marker").exists()


def test_cli_reward_train_threads_estimate_early_stop_and_refusal(pendulum, tmp_path, capsys, monkeypatch):
    ds, pairs = pendulum
    ds.to_minari("pbrl/pendulum-progress/random-v0")
    pairs.save(str(tmp_path / "prefs"))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    args = ["reward", "train", "pbrl/pendulum-progress/random-v0", "--prefs", str(tmp_path / "prefs"), "--out",
            str(tmp_path / "rm"), "--epochs", "3", "--hidden", "8", "8", "--ensemble", "2",
            "--early-stop-accuracy", "-1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0] == "pbrl reward train step on pbrl/pendulum-progress/random-v0: 3 epochs, 1 thread"
    assert any(ln.startswith("about ") and "for 3 epochs at" in ln and "less if it stops early" in ln
               for ln in lines)
    summary = json.loads(lines[-1])
    assert summary["epochs_run"] == 1
    assert summary == round_floats(summary)  # printed to 4 significant digits
    assert "stopped early at epoch 1" in err  # the bar's last postfix
    cfg = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert cfg["threads"] == 1 and cfg["info"]["threads"] == 1
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pbrl: error: ") and "--overwrite" in err and len(err.splitlines()) == 1
    assert main([*args, "--overwrite", "--threads", "1"]) == 0


def test_scoring_progress_covers_every_chunk(pendulum):
    ds, pairs = pendulum
    for model_kind in ("step", "segment"):
        model = train_reward(ds, pairs, RewardConfig(**{**TINY, "epochs": 1, "model": model_kind, "bc_steps": 5}),
                             progress=False)
        calls = []
        with scoring_progress(lambda d, t, u, calls=calls: calls.append((d, t, u))):
            raw = raw_rewards(ds, model, batch_size=7)
        done, total, unit = calls[-1]
        assert done == total and len(calls) == -(-total // 7)  # ceil(total / 7) batches
        # the step-wise MLP scores rows of steps; the segment model chunks of its query length
        assert (unit, total) == (("step", ds.num_transitions) if model_kind == "step"
                                 else ("chunk", len(chunk_table(ds, model.length)[0])))
        assert [c[0] for c in calls] == sorted(c[0] for c in calls)
        np.testing.assert_array_equal(raw.values, raw_rewards(ds, model, batch_size=7).values)  # no callback: same


def test_round_floats_keeps_four_significant_digits():
    got = round_floats({"a": 0.123456, "b": [1234567.0, 2, np.float32(2.718281)], "c": float("nan"), "d": True})
    assert got["a"] == 0.1235 and got["b"] == [1235000.0, 2, 2.718] and got["d"] is True
    assert np.isnan(got["c"])
