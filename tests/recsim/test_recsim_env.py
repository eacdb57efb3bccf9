"""The recommendation simulator: gymnasium contract, seeding, vector envs, the user model, clicks vs satisfaction."""

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pbrl_envs.recsim import RecSimEnv, make_catalog  # importing the module registers pbrl/RecSim-v0


def _rollout(env, actions_fn, seed, steps=200):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(actions_fn(env))
        out.append(np.r_[obs, r, term, trunc, info["satisfaction"]])
        if term or trunc:
            break
    return out


@pytest.mark.parametrize("slate_size", [1, 3])
def test_passes_gymnasium_env_checker(slate_size):
    env = RecSimEnv(slate_size=slate_size)
    check_env(env, skip_render_check=True)
    assert isinstance(env.action_space, gym.spaces.Discrete if slate_size == 1 else gym.spaces.MultiDiscrete)


def test_registered_and_made_through_gymnasium():
    env = gym.make("pbrl/RecSim-v0", num_items=30)
    assert env.unwrapped.num_items == 30
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)


def test_same_seed_same_session_and_different_seed_different_user():
    a, b = RecSimEnv(), RecSimEnv()
    first = lambda e: 7  # noqa: E731  a fixed item: differences come from the user and the click draws only
    ra, rb = _rollout(a, first, seed=5), _rollout(b, first, seed=5)
    assert len(ra) == len(rb) and all(np.array_equal(x, y) for x, y in zip(ra, rb))
    a.reset(seed=5)
    u5 = a.interest.copy()
    a.reset(seed=6)
    assert not np.allclose(u5, a.interest)


def test_catalog_is_fixed_by_catalog_seed_not_the_episode_seed():
    env = RecSimEnv(catalog_seed=3)
    before = env.catalog.appeal.copy()
    env.reset(seed=123)
    np.testing.assert_array_equal(env.catalog.appeal, before)
    np.testing.assert_array_equal(make_catalog(100, 8, 3).quality, env.catalog.quality)
    assert RecSimEnv(catalog_seed=3).item_texts() == env.item_texts()
    assert RecSimEnv(catalog_seed=4).item_texts() != env.item_texts()
    # clickbait: appeal and quality are negatively correlated across the catalog
    assert np.corrcoef(env.catalog.appeal, env.catalog.quality)[0, 1] < -0.3


def test_vector_env_runs_and_autoresets():
    venv = gym.make_vec("pbrl/RecSim-v0", num_envs=3, vectorization_mode="sync")
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, venv.single_observation_space.shape[0])
    ends = 0
    for _ in range(150):
        obs, rew, term, trunc, _ = venv.step(venv.action_space.sample())
        ends += int(np.sum(term | trunc))
        assert obs.dtype == np.float32 and set(np.unique(rew)) <= {0.0, 1.0}
    assert ends > 0  # sessions ended and restarted
    venv.close()


def test_click_probability_is_the_logit_formula_and_matches_click_frequency():
    env = RecSimEnv()
    env.reset(seed=0)
    item = 11
    c = env.catalog
    v = env.w_interest * env.interest[c.topics[item]] + env.w_appeal * c.appeal[item]  # empty history: no fatigue
    p = 1.0 / (1.0 + np.exp(env.no_click_utility - v))
    assert env.click_probabilities()[item] == pytest.approx(p)
    # the click draw inside step() follows that probability (same state restored before each draw)
    state = (env.interest.copy(), env.boredom.copy(), env.satisfaction, list(env.history), env.t)
    clicks = 0
    for _ in range(3000):
        env.interest, env.boredom, env.satisfaction = state[0].copy(), state[1].copy(), state[2]
        env.history, env.t = list(state[3]), state[4]
        clicks += env.step(item)[1]
    assert abs(clicks / 3000 - p) < 4 * np.sqrt(p * (1 - p) / 3000)


def test_boredom_and_repeats_lower_the_click_probability():
    env = RecSimEnv()
    env.reset(seed=2)
    item = 3
    p0 = env.click_probabilities()[item]
    env.step(item)
    p1 = env.click_probabilities()
    assert p1[item] < p0  # repeated item: repeat penalty + topic boredom
    same_topic = [j for j in range(env.num_items) if env.catalog.topics[j] == env.catalog.topics[item] and j != item]
    other = [j for j in range(env.num_items) if env.catalog.topics[j] != env.catalog.topics[item]]
    # topic boredom lowers the utility of every item of the topic by w_boredom * boredom
    drop = env.w_boredom * env.boredom[env.catalog.topics[item]]
    assert drop > 0
    env.boredom[:] = 0
    env.history = []
    p_fresh = env.click_probabilities()
    assert np.all(p1[same_topic] < p_fresh[same_topic])
    np.testing.assert_allclose(p1[other], p_fresh[other])


def test_satisfaction_drives_leaving():
    env = RecSimEnv()
    assert env.leave_probability(1.0) == pytest.approx(env.leave_base)
    assert env.leave_probability(0.0) == pytest.approx(env.leave_base + env.leave_scale)
    env.reset(seed=0)
    bad = int(np.argmin(env.catalog.quality))
    good = int(np.argmax(env.catalog.quality))
    assert env.satisfaction_after_click()[bad] < env.satisfaction < env.satisfaction_after_click()[good]


def test_observation_encodes_history_ids_and_context():
    env = RecSimEnv(history_len=3)
    obs, _ = env.reset(seed=4)
    assert np.all(env.decode_history(obs) == -1)
    shown = [5, 17, 42, 8]
    for a in shown:
        obs, *_ = env.step(a)
    np.testing.assert_array_equal(env.decode_history(obs), [8, 42, 17])  # most recent first, last k only
    lay = env.observation_layout()
    hist = obs[lay["history"]].reshape(3, env.num_topics + 4)
    assert hist[0, env.catalog.topics[8]] == 1.0 and hist[0, -1] == 1.0
    assert hist[0, env.num_topics] == pytest.approx(env.catalog.appeal[8])
    assert obs[lay["declared_topic"]].sum() == 1.0
    assert obs[lay["context"]][0] == pytest.approx(4 / env.max_steps)


def test_invalid_items_are_rejected():
    env = RecSimEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="item ids"):
        env.step(env.num_items)
    with pytest.raises(ValueError, match="slate_size"):
        RecSimEnv(slate_size=0)


def test_write_catalog_jsonl(tmp_path):
    env = RecSimEnv(num_items=12)
    path = tmp_path / "catalog.jsonl"
    env.write_catalog(str(path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(12))
    assert rows[4]["text"] == env.item_texts()[4] and env.catalog.titles[4] in rows[4]["text"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_slate_click_choice_is_multinomial_logit():
    env = RecSimEnv(slate_size=2)
    env.reset(seed=0)
    slate = np.array([1, 2])
    v = env.utilities(slate)
    expected = np.exp(v) / (np.exp(env.no_click_utility) + np.exp(v).sum())
    state = (env.interest.copy(), env.boredom.copy(), env.satisfaction)
    counts = np.zeros(2)
    n = 3000
    for _ in range(n):
        env.interest, env.boredom, env.satisfaction = state[0].copy(), state[1].copy(), state[2]
        env.history, env.t = [], 0
        clicked = env.step(slate)[4]["clicked_item"]
        if clicked >= 0:
            counts[list(slate).index(clicked)] += 1
    np.testing.assert_allclose(counts / n, expected, atol=4 * np.sqrt(0.25 / n))


def test_chasing_clicks_is_not_optimal():
    """The oracle click-greedy policy clicks more per step but keeps users for fewer steps and wins less in total
    than the satisfaction-aware planner: whole sessions tell what per-step clicks do not."""
    from pbrl_envs.recsim_data import PlannerPolicy

    env = RecSimEnv()
    planner = PlannerPolicy(env, seed=0)
    stats = {}
    for name, pol in (("greedy", lambda o: int(np.argmax(env.click_probabilities()))), ("planner", planner)):
        clicks = steps = 0
        for ep in range(150):
            obs, _ = env.reset(seed=1000 + ep)
            done = False
            while not done:
                obs, r, term, trunc, _ = env.step(pol(obs))
                clicks, steps, done = clicks + r, steps + 1, term or trunc
        stats[name] = (clicks / steps, clicks / 150)
    assert stats["greedy"][0] > stats["planner"][0]  # more clicks per step
    assert stats["planner"][1] > 1.3 * stats["greedy"][1]  # yet far more clicks per session
