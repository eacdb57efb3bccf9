"""RecSim logged datasets: recipes, behaviour policies, reference scores, the session-level teacher."""

import numpy as np
import pytest

from pbrl.data import EpisodeDataset, normalized_score
from pbrl.data.dataset import Episode
from pbrl.data.recipes import get_recipe
from pbrl.data.teachers import scripted_preferences
from pbrl.errors import PbrlError
from pbrl.rec import session_preferences
from pbrl_envs.recsim_data import collect_sessions, reference_returns


def _episode(rewards, obs_dim=2):
    t = len(rewards)
    return Episode(np.zeros((t + 1, obs_dim), np.float32), np.zeros(t, np.int64), np.asarray(rewards, np.float32),
                   np.r_[np.zeros(t - 1, bool), True], np.zeros(t, bool))


def test_recipes_registered_with_minari_ids():
    for name in ("recsim-random", "recsim-popular", "recsim-mixed"):
        r = get_recipe(name)
        assert r.dataset_id == f"pbrl/recsim/{name.split('-')[1]}-v0" and r.default_size > 0


def test_mixed_recipe_builds_a_deterministic_discrete_dataset_with_reference_scores():
    ds = get_recipe("recsim-mixed").build(4000, 3)
    assert ds.num_transitions == 4000 and ds.is_discrete and ds.env_id == "pbrl/RecSim-v0"
    lo, hi = ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]
    assert (lo, hi) == reference_returns() and hi > 2 * lo > 0
    assert normalized_score(ds, [lo, hi]).tolist() == pytest.approx([0.0, 100.0])
    assert len(ds.metadata["items"]["text"]) == ds.action_space.n
    assert [(p["policy"], p["share"]) for p in ds.metadata["behavior_policies"]] == [
        ("random", 0.25), ("popular", 0.25), ("click", 0.25), ("planner", 0.25)]
    again = get_recipe("recsim-mixed").build(4000, 3)
    np.testing.assert_array_equal(ds.actions, again.actions)
    np.testing.assert_array_equal(ds.observations_all, again.observations_all)
    assert not np.array_equal(get_recipe("recsim-mixed").build(4000, 4).actions, ds.actions)


def test_behaviour_policies_order_as_designed():
    means = {p: collect_sessions(p, num_episodes=120, seed=7).episode_returns().mean()
             for p in ("random", "popular", "click", "planner")}
    # the planner keeps users; the rest chase clicks or pick blindly
    assert means["planner"] > 2 * max(means["random"], means["popular"], means["click"])
    click = collect_sessions("click", num_episodes=120, seed=7)
    rand = collect_sessions("random", num_episodes=120, seed=7)
    assert click.rewards.mean() > rand.rewards.mean()  # the click model does find clicks


def test_minari_round_trip_keeps_catalog_and_scores():
    ds = get_recipe("recsim-random").build(600, 0)
    ds.to_minari("pbrl/recsim/random-v0")
    back = EpisodeDataset.from_minari("pbrl/recsim/random-v0")
    np.testing.assert_array_equal(back.actions, ds.actions)
    np.testing.assert_array_equal(back.observations_all, ds.observations_all)
    assert back.metadata["items"]["title"] == ds.metadata["items"]["title"]
    assert normalized_score(back, ds.metadata["ref_max_score"]) == pytest.approx(100.0)


def test_session_teacher_prefers_the_session_the_window_teacher_rejects():
    # a: clickbait, 3 clicks then the user leaves; b: a slow start, then a long engaged session
    ds = EpisodeDataset.from_episodes([_episode([1, 1, 1]), _episode([0, 0, 1, 1, 1, 1, 1, 1])])
    prefs = session_preferences(ds, 50, segment_length=2, seed=0)
    assert len(prefs) == 50 and prefs.length == 2
    for a, b, y in zip(prefs.start_a, prefs.start_b, prefs.label):
        ea, eb = ds.episode_index_of(a), ds.episode_index_of(b)
        assert ea != eb and a - ds.episode_starts[ea] == b - ds.episode_starts[eb]  # same in-session offset
        assert y == (1.0 if eb == 1 else 0.0)  # the long session always wins on return-to-go
    window = scripted_preferences(ds, 200, 2, seed=0)
    a_first = (ds.episode_index_of(window.start_a) == 0) & (ds.episode_index_of(window.start_b) == 1)
    a_first &= window.start_b == 3  # b's first window: no clicks
    assert a_first.any() and np.all(window.label[a_first] == 0.0)  # the window teacher prefers the clickbait


def test_session_teacher_labels_equal_hand_computed_returns_to_go():
    ds = EpisodeDataset.from_episodes([_episode([1, 0, 1, 0]), _episode([0, 1, 1, 1, 0]), _episode([1, 1, 0])])
    rtg = np.array([2, 1, 1, 0, 3, 3, 2, 1, 0, 2, 1, 0], dtype=float)
    prefs = session_preferences(ds, 200, segment_length=1, seed=1, tie_threshold=0.0)
    expected = np.where(rtg[prefs.start_b] > rtg[prefs.start_a], 1.0, 0.0)
    expected[rtg[prefs.start_b] == rtg[prefs.start_a]] = 0.5
    np.testing.assert_array_equal(prefs.label, expected)
    prefs.validate(ds)


def test_session_teacher_rejects_bad_input():
    ds = EpisodeDataset.from_episodes([_episode([1, 0]), _episode([0, 1, 1])])
    with pytest.raises(PbrlError, match="fewer than 2 sessions"):
        session_preferences(ds, 5, segment_length=3)
    with pytest.raises(PbrlError, match="num_queries"):
        session_preferences(ds, 0)
    with pytest.raises(PbrlError, match="gamma"):
        session_preferences(ds, 5, segment_length=1, teacher="myopic")


def test_session_preferences_on_simulator_data_favour_longer_sessions():
    ds = get_recipe("recsim-mixed").build(3000, 1)
    prefs = session_preferences(ds, 400, segment_length=3, seed=0)
    lengths = ds.episode_lengths
    la = lengths[ds.episode_index_of(prefs.start_a)]
    lb = lengths[ds.episode_index_of(prefs.start_b)]
    strict = prefs.label != 0.5
    winner_longer = np.where(prefs.label[strict] == 1.0, lb[strict] > la[strict], la[strict] > lb[strict])
    assert winner_longer.mean() > 0.75
    assert 0.4 < prefs.stats()["balance"] < 0.6  # the long session lands on either side
