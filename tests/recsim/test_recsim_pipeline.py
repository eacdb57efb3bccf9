"""Simulator sessions through prefs -> reward -> relabel, and a policy learned from them beating the behaviour."""

import numpy as np
import pytest
import torch

from pbrl.data.recipes import get_recipe
from pbrl.policies.base import default_config
from pbrl.policies.trainer import train_policy
from pbrl.rec import session_preferences
from pbrl.rewards.relabel import relabel
from pbrl.rewards.train import RewardConfig, train_reward


def test_discrete_sessions_flow_through_prefs_reward_relabel():
    ds = get_recipe("recsim-mixed").build(2000, 0)
    prefs = session_preferences(ds, 200, segment_length=5, seed=0)
    model = train_reward(ds, prefs, RewardConfig(hidden=(32, 32), epochs=2, ensemble=2, early_stop=False),
                         progress=False)
    rl = relabel(ds, model)
    assert rl.is_discrete and rl.num_transitions == ds.num_transitions
    assert np.all(np.isfinite(rl.rewards)) and not np.array_equal(rl.rewards, ds.rewards)
    np.testing.assert_array_equal(rl.actions, ds.actions)
    assert rl.metadata["provenance"][-1]["step"] == "relabel"
    assert rl.metadata["ref_max_score"] == ds.metadata["ref_max_score"]


@pytest.mark.slow
def test_iql_on_session_preference_rewards_beats_the_behaviour_policy(tmp_path):
    torch.set_num_threads(1)  # oversubscribed CPUs make 2 threads far slower than 1
    ds = get_recipe("recsim-mixed").build(20_000, 0)
    prefs = session_preferences(ds, 1000, segment_length=5, seed=0)
    model = train_reward(ds, prefs, RewardConfig(hidden=(64, 64), epochs=20, ensemble=2), progress=False)
    rl = relabel(ds, model)
    # the learned reward ranks whole sessions like their true returns
    assert np.corrcoef(ds.episode_returns(), rl.episode_returns())[0, 1] > 0.5
    summary = train_policy("iql", rl, default_config("iql", hidden=(128, 128), batch_size=256), steps=3000, seed=0,
                           eval_every=0, eval_episodes=50, progress=False, out_dir=tmp_path / "iql")
    behaviour = ds.episode_returns().mean()  # about 8 clicks per logged session; the planner oracle gets about 30
    assert summary["last_return_mean"] > 1.5 * behaviour
