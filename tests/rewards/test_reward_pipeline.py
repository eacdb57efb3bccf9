"""Reward training, checkpoints, relabeling (incl. D4RL-sourced data to Minari), report and CLI on small data."""

import json
import os

import numpy as np
import pytest
import torch

from pbrl.cli import main
from pbrl.data import EpisodeDataset, PreferencePairs, collect_episodes, load_dataset, scripted_preferences
from pbrl.data.d4rl_io import write_d4rl
from pbrl.errors import PbrlError
from pbrl.rewards import RewardConfig, load_reward_model, normalize, relabel, train_reward
from pbrl.rewards.relabel import chunk_table, raw_rewards, relabel_to_minari
from pbrl.rewards.report import reward_report
from pbrl.rewards.segment import SegmenterConfig, densify_segments

TINY = dict(hidden=(16, 16, 16), d_model=16, heads=2, epochs=2, batch_size=32, early_stop=False)


@pytest.fixture(scope="module")
def pendulum():
    ds = collect_episodes("Pendulum-v1", num_transitions=1500, seed=0)
    return ds, scripted_preferences(ds, 120, 20, seed=1)


def _state_equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_train_writes_loadable_checkpoint_config_and_metrics(pendulum, tmp_path):
    ds, pairs = pendulum
    model = train_reward(ds, pairs, RewardConfig(**TINY), out_dir=tmp_path, progress=False)
    files = sorted(os.listdir(tmp_path))
    assert files == ["config.json", "metrics.jsonl", "reward.pt", "summary.json"]
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"reward/loss", "reward/train_accuracy", "reward/val_accuracy", "perf/pairs_per_s"} <= set(rows[0])
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model"] == "step" and cfg["config"]["ensemble"] == 3 and cfg["length"] == 20
    loaded = load_reward_model(tmp_path)
    assert _state_equal(model.net.state_dict(), loaded.net.state_dict())
    np.testing.assert_array_equal(relabel(ds, model, "none").rewards, relabel(ds, loaded, "none").rewards)


def test_seeded_training_is_deterministic_and_early_stop_stops(pendulum):
    ds, pairs = pendulum
    cfg = RewardConfig(**TINY)
    a = train_reward(ds, pairs, cfg, progress=False)
    b = train_reward(ds, pairs, cfg, progress=False)
    assert _state_equal(a.net.state_dict(), b.net.state_dict())
    stop = train_reward(
        ds, pairs, RewardConfig(**{**TINY, "early_stop": True, "early_stop_accuracy": -1.0}), progress=False
    )
    assert stop.info["epochs_run"] == 1 and stop.info["stopped_early"]


def test_step_relabel_equals_naive_member_mean(pendulum):
    ds, pairs = pendulum
    model = train_reward(ds, pairs, RewardConfig(**TINY), progress=False)
    x = model.features(ds)  # [N, D]
    with torch.no_grad():
        naive = np.stack(
            [
                model.output(x[None, i : i + 1], torch.ones(1, 1, dtype=torch.bool)).values[:, 0, 0].numpy()
                for i in range(0, ds.num_transitions, 97)
            ],
            1,
        )  # [M, n] every 97th transition, one at a time
    raw = raw_rewards(ds, model)
    np.testing.assert_allclose(raw.values[:, ::97], naive, rtol=1e-5, atol=1e-6)
    out = relabel(ds, model, "member-zscore")
    v = raw.values.astype(np.float64)
    ref = ((v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(out.rewards, ref, rtol=1e-5, atol=1e-5)
    prov = out.metadata["provenance"][-1]
    assert (
        prov["step"] == "relabel" and prov["normalizer"] == "member-zscore" and prov["reward_model"] == "step"
    )
    np.testing.assert_array_equal(out.actions, ds.actions)
    # the minmax shift is the same reward mapped affinely onto [0, 1]
    moved = relabel(ds, model, "member-zscore", shift="minmax")
    np.testing.assert_allclose(moved.rewards, (ref - ref.min()) / (ref.max() - ref.min()), rtol=1e-5, atol=1e-6)
    assert moved.metadata["provenance"][-1]["shift"] == "minmax" and prov["shift"] == "none"


@pytest.mark.parametrize("segmenter", ["fixed", "entropy"])
def test_segment_relabel_equals_per_chunk_densify(pendulum, segmenter, tmp_path):
    ds, pairs = pendulum
    cfg = RewardConfig(model="segment", **TINY, segmenter=SegmenterConfig(segmenter, k=4), bc_steps=50)
    model = train_reward(ds, pairs, cfg, out_dir=tmp_path, progress=False)
    if segmenter == "entropy":
        model = load_reward_model(tmp_path)  # the behaviour policy and threshold travel with the checkpoint
        assert model.behavior is not None and model.threshold is not None
    got = relabel(ds, model, "none").rewards
    feats, signal = model.features(ds), model.reference_signal(ds)
    starts, lens = chunk_table(ds, model.length)
    ref = np.zeros(ds.num_transitions, np.float32)
    with torch.no_grad():
        for s, n in zip(starts, lens):  # one chunk at a time, no padding
            x = feats[None, s : s + n]
            mask = torch.ones(1, n, dtype=torch.bool)
            sig = signal[None, s : s + n] if signal is not None else None
            out = model.output(x, mask, sig)
            ends = model.ends(mask, sig)
            ref[s : s + n] = densify_segments(out.values, ends.expand_as(out.values)).mean(0)[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    raw = raw_rewards(ds, model)
    for norm in ("member-zscore", "direct", "location", "scale"):
        unit = normalize(
            norm,
            raw.values,
            position=raw.position,
            unit_of=raw.unit_of,
            unit_length=raw.unit_length,
            episode_starts=ds.episode_starts,
        )
        assert np.isfinite(unit).all() and unit.shape == raw.unit_length.shape


def test_pt_trains_and_relabels(pendulum):
    ds, pairs = pendulum
    model = train_reward(
        ds, pairs, RewardConfig(model="pt", ensemble=2, **{**TINY, "epochs": 1}), progress=False
    )
    r = relabel(ds, model, "scale").rewards
    assert r.shape == (ds.num_transitions,) and np.isfinite(r).all()


def test_chunk_table_tiles_every_episode():
    ds = collect_episodes("Pendulum-v1", num_transitions=450, seed=0)  # episodes of 200, 200, 50
    starts, lens = chunk_table(ds, 60)
    assert starts.tolist() == [0, 60, 120, 180, 200, 260, 320, 380, 400]
    assert lens.tolist() == [60, 60, 60, 20, 60, 60, 60, 20, 50]


def test_bad_inputs_are_clear_errors(pendulum, tmp_path):
    ds, pairs = pendulum
    late = PreferencePairs(np.array([ds.num_transitions - 5]), np.array([0]), 20, np.array([1.0]))
    with pytest.raises(PbrlError, match="runs past the dataset"):
        train_reward(ds, late, RewardConfig(**TINY), progress=False)
    model = train_reward(ds, pairs, RewardConfig(**{**TINY, "epochs": 1}), progress=False)
    other = collect_episodes("MountainCarContinuous-v0", num_transitions=100, seed=0)
    with pytest.raises(PbrlError, match="reward model expects"):
        relabel(other, model)
    with pytest.raises(PbrlError, match="not a reward model folder"):
        load_reward_model(tmp_path)
    with pytest.raises(PbrlError, match="unknown reward model"):
        train_reward(ds, pairs, RewardConfig(**{**TINY, "model": "lstm"}), progress=False)


def _d4rl_file(path, n=1200, seed=0):
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(n, bool)
    timeouts[299::300] = True
    obs = rng.normal(size=(n, 5)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    rewards = (obs[:, 0] - act[:, 1] ** 2).astype(np.float32)  # a known reward of (s, a)
    write_d4rl(str(path), obs, act, rewards, np.zeros(n, bool), timeouts)
    return str(path)


def test_relabel_d4rl_sourced_dataset_to_minari(tmp_path):
    path = _d4rl_file(tmp_path / "toy-medium-v2.hdf5")
    ds = load_dataset("d4rl:" + path)
    assert ds.env_id is None
    pairs = scripted_preferences(ds, 100, 25, seed=0, cross_episodes=True)
    train_reward(ds, pairs, RewardConfig(**TINY), out_dir=tmp_path / "rm", progress=False)
    out, folder = relabel_to_minari("d4rl:" + path, str(tmp_path / "rm"), "test/toy-relabeled-v0", "direct")
    assert os.path.isdir(folder)
    back = load_dataset("test/toy-relabeled-v0")
    np.testing.assert_allclose(back.rewards, out.rewards)
    np.testing.assert_allclose(back.observations, ds.observations)
    assert back.num_episodes == ds.num_episodes
    prov = back.metadata["provenance"][-1]
    assert prov["normalizer"] == "direct" and prov["source"] == "d4rl:" + path
    assert prov["reward_dir"] == str(tmp_path / "rm")
    with pytest.raises(PbrlError, match="already exists"):
        relabel_to_minari("d4rl:" + path, str(tmp_path / "rm"), "test/toy-relabeled-v0")


def test_report_on_data_with_true_rewards(pendulum):
    ds, pairs = pendulum
    model = train_reward(ds, pairs, RewardConfig(**{**TINY, "epochs": 1}), progress=False)
    rep = reward_report(ds, model, pairs, num_segments=200)
    for key in ("pairs/accuracy", "step/pearson", "step/spearman", "segment/pearson", "segment/spearman"):
        assert -1.0 <= rep[key] <= 1.0
    flat = ds.with_rewards(np.zeros(ds.num_transitions, np.float32))
    assert "note" in reward_report(flat, model)


def test_cli_train_relabel_report(tmp_path, capsys):
    path = _d4rl_file(tmp_path / "toy-medium-v2.hdf5")
    ds = EpisodeDataset.from_d4rl(path)
    scripted_preferences(ds, 100, 25, seed=0).save(str(tmp_path / "prefs"))
    rm = str(tmp_path / "rm")
    assert (
        main(
            [
                "reward",
                "train",
                "d4rl:" + path,
                "--prefs",
                str(tmp_path / "prefs"),
                "--out",
                rm,
                "--epochs",
                "1",
                "--hidden",
                "8",
                "8",
                "--ensemble",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs_run"] == 1
    assert (
        main(
            [
                "relabel",
                "d4rl:" + path,
                "--reward",
                rm,
                "--out",
                "test/cli-relabeled-v0",
                "--normalize",
                "location",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["transitions"] == ds.num_transitions
    assert main(["reward", "report", "d4rl:" + path, "--reward", rm, "--prefs", str(tmp_path / "prefs")]) == 0
    assert "segment/spearman" in json.loads(capsys.readouterr().out)
    assert main(["relabel", "d4rl:" + path, "--reward", str(tmp_path / "nope"), "--out", "test/x-v0"]) == 2
    assert "not a reward model folder" in capsys.readouterr().err


def test_tensorboard_logging_of_the_epoch_rows(pendulum, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is optional (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ds, pairs = pendulum
    train_reward(ds, pairs, RewardConfig(**TINY), out_dir=tmp_path, progress=False, tensorboard=True)
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("reward/loss")
    assert [e.step for e in events] == [r["step"] for r in rows]
    assert [e.value for e in events] == pytest.approx([r["reward/loss"] for r in rows], rel=1e-6)
