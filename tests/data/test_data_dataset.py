import numpy as np
import pytest
import torch

from pbrl.data import Episode, EpisodeDataset, collect_episodes, load_dataset, normalized_score
from pbrl.errors import PbrlError


def _tiny() -> EpisodeDataset:
    # two episodes: 3 transitions (terminated) and 2 transitions (truncated)
    eps = [
        Episode(np.arange(4.0)[:, None], np.zeros((3, 1)), np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1], bool), np.zeros(3, bool)),
        Episode(np.arange(10.0, 13.0)[:, None], np.ones((2, 1)), np.array([5.0, 6.0]), np.zeros(2, bool), np.array([0, 1], bool)),
    ]
    return EpisodeDataset.from_episodes(eps, metadata={"name": "tiny"})


def test_flat_views_and_episodes():
    ds = _tiny()
    assert ds.num_transitions == 5 and ds.num_episodes == 2
    np.testing.assert_array_equal(ds.observations[:, 0], [0, 1, 2, 10, 11])
    np.testing.assert_array_equal(ds.next_observations[:, 0], [1, 2, 3, 11, 12])
    np.testing.assert_array_equal(ds.terminals, [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(ds.timeouts, [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(ds.episode_returns(), [6.0, 11.0])
    np.testing.assert_array_equal(ds.episode(1).observations[:, 0], [10, 11, 12])
    np.testing.assert_array_equal(ds.episode_index_of(np.arange(5)), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError):
        ds.rewards[0] = 3.0  # immutable


def test_with_rewards_is_a_new_dataset_with_provenance():
    ds = _tiny()
    new = ds.with_rewards(np.arange(5, dtype=np.float32), provenance={"step": "relabel"})
    np.testing.assert_array_equal(new.rewards, np.arange(5))
    np.testing.assert_array_equal(ds.rewards, [1, 2, 3, 5, 6])
    assert new.metadata["provenance"][-1] == {"step": "relabel"} and "provenance" not in ds.metadata
    with pytest.raises(PbrlError, match="shape"):
        ds.with_rewards(np.zeros(4))
    with pytest.raises(PbrlError, match="finite"):
        ds.with_rewards(np.array([0, 0, np.nan, 0, 0]))


def test_windows_stay_inside_episodes():
    ds = _tiny()
    np.testing.assert_array_equal(ds.window_starts(2), [0, 1, 3])
    np.testing.assert_array_equal(ds.window_starts(3), [0])
    np.testing.assert_array_equal(ds.window_starts(3, cross_episodes=True), [0, 1, 2])
    starts = ds.sample_windows(100, 2, np.random.default_rng(0))
    assert set(starts.tolist()) <= {0, 1, 3}
    with pytest.raises(PbrlError, match="no episode"):
        ds.sample_windows(1, 4, np.random.default_rng(0))


def test_transitions_as_tensors():
    t = _tiny().transitions("cpu")
    assert t.observations.dtype == torch.float32 and t.observations.shape == (5, 1)
    assert t.terminals.tolist() == [0, 0, 1, 0, 0] and t.timeouts.tolist() == [0, 0, 0, 0, 1]


def test_bad_layouts_are_refused():
    with pytest.raises(PbrlError, match="N \\+ E"):
        EpisodeDataset(np.zeros((5, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3), np.zeros(3), [0, 3])
    with pytest.raises(PbrlError, match="episode_starts"):
        EpisodeDataset(np.zeros((4, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3), np.zeros(3), [0, 2])


def test_collect_and_minari_round_trip():
    ds = collect_episodes("Pendulum-v1", num_transitions=450, seed=3)
    assert ds.num_transitions == 450 and ds.num_episodes == 3  # Pendulum truncates at 200 steps; the last is cut
    assert ds.truncations.sum() == 3 and not ds.terminations.any()
    again = collect_episodes("Pendulum-v1", num_transitions=450, seed=3)
    np.testing.assert_array_equal(ds.actions, again.actions)  # seeded
    ds.to_minari("pbrl/test/pendulum-v0", ref_min_score=-1500.0, ref_max_score=-150.0, provenance={"step": "test"})
    back = load_dataset("pbrl/test/pendulum-v0")
    for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        np.testing.assert_array_equal(getattr(ds, k), getattr(back, k), err_msg=k)
    np.testing.assert_array_equal(back.observations_all, ds.observations_all)  # final observations kept
    assert back.env_id == "Pendulum-v1"
    assert back.metadata["provenance"][-1] == {"step": "test"}
    np.testing.assert_allclose(normalized_score(back, [-1500.0, -150.0]), [0.0, 100.0])
    with pytest.raises(PbrlError, match="already exists"):
        ds.to_minari("pbrl/test/pendulum-v0")


def test_discrete_round_trip():
    ds = collect_episodes("CartPole-v1", num_episodes=4, seed=0)
    assert ds.is_discrete and ds.actions.dtype == np.int64
    ds.to_minari("pbrl/test/cartpole-v0")
    back = load_dataset("pbrl/test/cartpole-v0")
    assert back.is_discrete
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert back.terminations.sum() == 4


def test_unknown_specs_give_clear_errors(tmp_path):
    with pytest.raises(PbrlError, match="unknown local Minari dataset"):
        load_dataset("pbrl/nothing/here-v0")
    with pytest.raises(PbrlError, match="not found"):
        load_dataset(f"d4rl:{tmp_path}/missing.hdf5")
    bad = tmp_path / "corrupt.hdf5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(PbrlError, match="cannot read as hdf5"):
        load_dataset(str(bad))


def test_normalized_score_table():
    np.testing.assert_allclose(normalized_score("hopper-medium-v2", [-20.272305, 3234.3]), [0.0, 100.0])
    np.testing.assert_allclose(normalized_score("walker2d-medium-replay-v2", 4592.3), 100.0)
    with pytest.raises(PbrlError, match="no reference scores"):
        normalized_score("unknown-task", 1.0)
