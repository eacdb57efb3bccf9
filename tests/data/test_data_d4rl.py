import h5py
import numpy as np
import pytest

from pbrl.data import EpisodeDataset, load_dataset
from pbrl.data.d4rl_io import write_d4rl
from pbrl.errors import PbrlError


def qlearning_dataset_reference(f):
    """d4rl.qlearning_dataset(terminate_on_end=False), transcribed as the loop d4rl runs."""
    n = f["rewards"].shape[0]
    obs_, next_obs_, action_, reward_, done_ = [], [], [], [], []
    for i in range(n - 1):
        obs = f["observations"][i].astype(np.float32)
        new_obs = f["observations"][i + 1].astype(np.float32)
        action = f["actions"][i].astype(np.float32)
        reward = f["rewards"][i].astype(np.float32)
        done_bool = bool(f["terminals"][i])
        final_timestep = f["timeouts"][i]
        if final_timestep:
            continue
        obs_.append(obs)
        next_obs_.append(new_obs)
        action_.append(action)
        reward_.append(reward)
        done_.append(done_bool)
    return dict(
        observations=np.array(obs_),
        actions=np.array(action_),
        next_observations=np.array(next_obs_),
        rewards=np.array(reward_),
        terminals=np.array(done_),
    )


@pytest.fixture
def d4rl_file(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[[9, 30]] = True  # two terminated episodes
    timeouts[[19, 45, 46]] = True  # a timed-out episode, and a one-row episode that times out at once
    path = tmp_path / "hopper-medium-replay-v2.hdf5"
    write_d4rl(
        str(path),
        observations=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 2)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
    )
    return path


def test_flat_transitions_equal_qlearning_dataset(d4rl_file):
    ds = EpisodeDataset.from_d4rl(str(d4rl_file))
    with h5py.File(d4rl_file) as f:
        ref = qlearning_dataset_reference(f)
    assert ds.num_transitions == len(ref["rewards"]) == 60 - 1 - 3
    for k, v in ref.items():
        np.testing.assert_array_equal(getattr(ds, k), v, err_msg=k)


def test_episodes_split_at_terminals_and_timeouts(d4rl_file):
    ds = load_dataset(f"d4rl:{d4rl_file}")
    # file rows: ep0 0-9 (terminal at 9), ep1 10-18 (row 19 timeout dropped), ep2 20-30 (terminal), ep3 31-44 (45, 46
    # timeouts dropped), ep4 47-58 (row 59 = the dataset's last, dropped)
    np.testing.assert_array_equal(ds.episode_lengths, [10, 9, 11, 14, 12])
    np.testing.assert_array_equal(ds.terminations.nonzero()[0], [9, 29])
    np.testing.assert_array_equal(ds.truncations.nonzero()[0], [18, 43, 55])
    with h5py.File(d4rl_file) as f:
        obs = f["observations"][()]
    # a timed-out episode's final observation is the observation of its (dropped) timeout row
    np.testing.assert_array_equal(ds.episode(1).observations[-1], obs[19])
    assert ds.metadata["ref_max_score"] == 3234.3  # hopper, by file name


def test_d4rl_errors(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("observations", data=np.zeros((5, 2)))
    with pytest.raises(PbrlError, match="missing keys"):
        load_dataset(str(path))
    path2 = tmp_path / "short.hdf5"
    write_d4rl(str(path2), np.zeros((5, 2)), np.zeros((4, 1)), np.zeros(5), np.zeros(5), np.zeros(5))
    with pytest.raises(PbrlError, match="'actions' has 4 rows"):
        load_dataset(f"d4rl:{path2}")
