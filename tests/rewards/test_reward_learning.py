"""Learning: reward ensembles recover a known reward from scripted labels; the Uni-RLHF fixture trains end to end."""

import os

import numpy as np
import pytest

from pbrl.data import PreferencePairs, collect_episodes, load_dataset, scripted_preferences
from pbrl.data.d4rl_io import write_d4rl
from pbrl.rewards import RewardConfig, evaluate_pairs, relabel, reward_report, train_reward

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNI_RLHF = os.path.join(REPO_ROOT, "..", "shared", "fixtures", "uni_rlhf", "hopper-medium-replay-v2")


@pytest.mark.slow
@pytest.mark.ci_slow
@pytest.mark.parametrize("bf16", ["off", "on"])  # on: bf16 autocast on CPU must learn as well
def test_step_ensemble_learns_known_reward_from_exact_labels(bf16):
    # Pendulum's reward -(theta^2 + 0.1 thetadot^2 + 0.001 u^2) is a function of (s, a): learnable step-wise
    ds = collect_episodes("Pendulum-v1", num_transitions=10_000, seed=0)
    train = scripted_preferences(ds, 600, 25, seed=1)
    held_out = scripted_preferences(ds, 500, 25, seed=2)
    cfg = RewardConfig(hidden=(64, 64, 64), lr=1e-3, epochs=8, seed=0, bf16=bf16)
    model = train_reward(ds, train, cfg, progress=False)
    acc = evaluate_pairs(model, ds, held_out)["accuracy"]
    rep = reward_report(ds, model, num_segments=2000, seed=3)
    print(f"bf16 {bf16}: held-out accuracy {acc:.3f}, segment-return pearson {rep['segment/pearson']:.3f}")
    assert acc >= 0.90
    assert rep["segment/pearson"] > 0.8
    # relabeled rewards keep the ordering of the true ones
    assert np.corrcoef(relabel(ds, model, "member-zscore").rewards, ds.rewards)[0, 1] > 0.8


@pytest.mark.slow
def test_segment_model_learns_known_reward_from_exact_labels():
    ds = collect_episodes("Pendulum-v1", num_transitions=20_000, seed=0)
    train = scripted_preferences(ds, 1000, 25, seed=1)
    held_out = scripted_preferences(ds, 500, 25, seed=2)
    cfg = RewardConfig(model="segment", d_model=32, lr=1e-3, epochs=10, seed=0)
    model = train_reward(ds, train, cfg, progress=False)
    acc = evaluate_pairs(model, ds, held_out)["accuracy"]
    print(f"segment model held-out accuracy {acc:.3f}")
    assert acc >= 0.85


def test_uni_rlhf_fixture_trains_end_to_end_on_d4rl_layout(tmp_path):
    if not os.path.isdir(UNI_RLHF):
        pytest.skip("shared/fixtures/uni_rlhf not present beside the checkout")
    # a hopper-shaped D4RL file with enough qlearning transitions (> 401400) for the fixture's indices
    n, rng = 403_000, np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True  # 1000-step episodes: qlearning drops the 403 timed-out rows -> 402597
    obs = rng.normal(size=(n, 11)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
    path = str(tmp_path / "hopper-medium-replay-v2.hdf5")
    write_d4rl(path, obs, act, obs[:, 5].copy(), np.zeros(n, bool), timeouts)
    ds = load_dataset("d4rl:" + path)
    assert ds.num_transitions == n - n // 1000
    pairs = PreferencePairs.load(UNI_RLHF).validate(ds, UNI_RLHF)
    assert pairs.length == 200 and len(pairs) == 2000
    few = pairs.subset(np.arange(64))
    cfg = RewardConfig(hidden=(16,), batch_size=16, epochs=1, val_fraction=0.25, early_stop=False)
    model = train_reward(ds, few, cfg, out_dir=tmp_path / "rm", progress=False)
    assert model.info["steps"] == 3 and os.path.isfile(tmp_path / "rm" / "reward.pt")
    assert 0.0 <= model.info["final"]["reward/val_accuracy"] <= 1.0
