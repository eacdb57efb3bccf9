"""SessionReward: a step reward learner trained on session preferences, read through the LLM-prompt adapter."""

import numpy as np
import pytest
from gymnasium import spaces

from pbrl.data.dataset import Episode, EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.rec.session_reward import SessionReward, member_stats
from pbrl.rec.sessions import session_preferences
from pbrl.rewards.relabel import relabel
from pbrl.rewards.train import RewardConfig, load_reward_model, train_reward

ITEMS, K = 6, 3  # catalog size, items of history the observation holds
GOOD, BAD = 0, 5


def encode(history):
    """Observation of a history (oldest first): counts of each item among the last K, / K."""
    obs = np.zeros(ITEMS, np.float32)
    for i in list(history)[-K:]:
        obs[i] += 1.0 / K
    return obs


def planted_log(sessions=150, length=8, seed=0) -> EpisodeDataset:
    """Random recommendations; a click (reward 1) exactly when the item is GOOD or 1, so sessions with more of
    those earn more clicks from any step on."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(sessions):
        acts = rng.integers(0, ITEMS, length)
        obs = np.stack([encode(acts[:t]) for t in range(length + 1)])
        rew = np.isin(acts, [GOOD, 1]).astype(np.float32)
        term = np.zeros(length, bool)
        term[-1] = True
        eps.append(Episode(obs, acts, rew, term, np.zeros(length, bool)))
    return EpisodeDataset.from_episodes(eps, metadata={"name": "planted"},
                                        observation_space=spaces.Box(0, 1, (ITEMS,), np.float32),
                                        action_space=spaces.Discrete(ITEMS))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    ds = planted_log()
    pairs = session_preferences(ds, 400, segment_length=3, seed=0)
    out = tmp_path_factory.mktemp("reward")
    train_reward(ds, pairs, RewardConfig(hidden=(32, 32), epochs=30, ensemble=2, lr=3e-3, seed=0), out_dir=out,
                 progress=False)
    return ds, load_reward_model(out)


def test_ranks_planted_good_item_above_bad(trained):
    ds, model = trained
    histories = [[], [3], [2, 4, 3], [BAD, BAD]]
    for stats in (None, member_stats(ds, model)):
        r = SessionReward.from_histories(model, histories, encode, max_history=K, stats=stats)
        for p in range(len(histories)):
            assert r(p, GOOD) > r(p, BAD)
            assert r(p, 1) > max(r(p, 2), r(p, 3), r(p, 4))
        assert r.normalized == (stats is not None)


def test_normalized_reward_equals_relabel_of_logged_steps(trained):
    """With member stats over the log, r(s_t, a_t) is the member-z-scored reward the relabeling gives step t."""
    ds, model = trained
    want = relabel(ds, model).rewards  # [N]
    r = SessionReward(model, ds.observations, member_stats(ds, model))
    idx = np.arange(0, ds.num_transitions, 37)
    got = np.array([r(int(t), int(ds.actions[t])) for t in idx])
    np.testing.assert_allclose(got, want[idx], rtol=1e-5, atol=1e-5)
    # raw: the members' mean of the net's values, not z-scored
    raw = SessionReward(model, ds.observations)
    assert not np.allclose([raw(int(t), int(ds.actions[t])) for t in idx], got)


def test_combined_weights(trained):
    ds, model = trained
    r = SessionReward(model, ds.observations[:3])
    assert r.combined(1.0, 0.0) == ("rsvr", None)
    mode, extra = r.combined(0.0, 2.0)
    assert mode == "none" and extra(1, GOOD) == pytest.approx(2.0 * r(1, GOOD))
    mode, extra = r.combined(2.0, 1.0)
    assert mode == "rsvr" and extra(2, BAD) == pytest.approx(0.5 * r(2, BAD))
    with pytest.raises(PbrlError, match="weights"):
        r.combined(0.0, 0.0)


def test_bad_input_one_line(trained):
    ds, model = trained
    with pytest.raises(PbrlError, match=r"histories\[1\]: item 9 is outside the catalog of 6 items"):
        SessionReward.from_histories(model, [[1], [2, 9]], encode, max_history=K)
    with pytest.raises(PbrlError, match=r"histories\[0\]: 4 items, the observation holds at most 3"):
        SessionReward.from_histories(model, [[1, 2, 3, 4]], encode, max_history=K)
    r = SessionReward(model, ds.observations[:2])
    with pytest.raises(PbrlError, match="item 6: outside the catalog"):
        r(0, 6)
    with pytest.raises(PbrlError, match="prompt 2: outside the 2 prompts"):
        r(2, 0)
    with pytest.raises(PbrlError, match=r"states: expected \[prompts, 6\]"):
        SessionReward(model, np.zeros((2, 5)))
