"""Read D4RL hdf5 files directly with h5py (d4rl itself no longer installs).

Contract: the flat transitions equal `d4rl.qlearning_dataset(env, terminate_on_end=False)`, in the same order:
for i in 0..N-2, transition i is (obs[i], act[i], rew[i], obs[i+1], terminals[i]) and it is DROPPED when
timeouts[i] is set; the dataset's final row N-1 is dropped too. Start indices in D4RL-indexed label files
(Uni-RLHF, Preference Transformer) therefore index our flat arrays directly.

Episodes split after every terminal and after every timeout. A timed-out episode's dropped row supplies its final
observation (obs[i] at the timeout: the observation the episode ended in). A terminated episode's final
observation is obs[i+1] as in qlearning_dataset, i.e. the next episode's first observation: D4RL did not record the
true one, and a termination masks it in every TD target anyway.
"""

from __future__ import annotations

import os

import numpy as np

from pbrl.data.dataset import EpisodeDataset, non_finite_row
from pbrl.errors import PbrlError
from pbrl.utils import atomic_output

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def qlearning_keep_mask(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Rows of a D4RL file that qlearning_dataset keeps as transitions [N] bool."""
    keep = ~timeouts.astype(bool)
    keep[-1] = False
    return keep


def read_d4rl(path: str) -> EpisodeDataset:
    import h5py

    if not os.path.isfile(path):
        raise PbrlError(f"D4RL file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise PbrlError(
                    f"{path}: not a D4RL dataset, missing keys {missing} (has {sorted(f.keys())})"
                )
            obs = f["observations"][()]
            act = f["actions"][()]
            rew = f["rewards"][()].reshape(-1)
            term = f["terminals"][()].reshape(-1).astype(bool)
            tout = f["timeouts"][()].reshape(-1).astype(bool) if "timeouts" in f else np.zeros_like(term)
            env_name = f.attrs.get("env_name") or f.attrs.get("env")
    except PbrlError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:  # h5py: truncated, corrupt, foreign
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PbrlError(f"{path}: cannot read as hdf5 ({msg[:200]})") from None
    n = len(obs)
    for name, arr in (("actions", act), ("rewards", rew), ("terminals", term), ("timeouts", tout)):
        if len(arr) != n:
            raise PbrlError(f"{path}: '{name}' has {len(arr)} rows, 'observations' has {n}")
    if n < 2:
        raise PbrlError(f"{path}: needs at least 2 rows, has {n}")

    keep = qlearning_keep_mask(term, tout)
    kept = np.flatnonzero(keep)  # qlearning row -> file row
    # an episode ends after a kept terminal row, before a dropped timeout row, and at the end of the kept rows
    ends_after = term[kept] | ~keep[kept + 1]
    ends_after[-1] = True
    ep_last = np.flatnonzero(ends_after)  # index into kept of each episode's last transition
    starts = np.concatenate([[0], ep_last + 1]).astype(np.int64)
    # observations: per episode the kept rows' obs, then the final obs = file row after its last kept row
    num_eps = len(ep_last)
    obs_rows = np.empty(len(kept) + num_eps, dtype=np.int64)
    ep_of = np.repeat(np.arange(num_eps), np.diff(starts))
    obs_rows[np.arange(len(kept)) + ep_of] = kept
    obs_rows[ep_last + np.arange(num_eps) + 1] = kept[ep_last] + 1
    # truncated: the episode stops at a timeout or at the file's end without a terminal
    truncations = np.zeros(len(kept), dtype=bool)
    truncations[ep_last] = ~term[kept[ep_last]]
    # non-finite values, named by their row in the file (the dataset's own rows skip the dropped timeout rows)
    for name, arr, file_rows in (("observations", obs, obs_rows), ("actions", act, kept), ("rewards", rew, kept)):
        bad = non_finite_row(arr[file_rows])
        if bad is not None:
            raise PbrlError(f"{path}: '{name}' row {int(file_rows[bad[0]])}: {bad[1]} (values must be finite)")
    meta = {
        "name": os.path.splitext(os.path.basename(path))[0],
        "source": f"d4rl:{os.path.abspath(path)}",
        "env_id": None,
        "provenance": [{"step": "read_d4rl", "file": os.path.basename(path), "rows": int(n)}],
        "d4rl_env_name": env_name.decode() if isinstance(env_name, bytes) else env_name,
    }
    from pbrl.data.scores import reference_scores

    try:
        meta["ref_min_score"], meta["ref_max_score"] = reference_scores(meta["name"])
    except PbrlError:
        pass
    return EpisodeDataset(
        observations=obs[obs_rows],
        actions=act[kept],
        rewards=rew[kept],
        terminations=term[kept],
        truncations=truncations,
        episode_starts=starts,
        metadata=meta,
    )


def write_d4rl(path: str, observations, actions, rewards, terminals, timeouts, **extra) -> None:
    """Write arrays in D4RL's hdf5 layout (used by tests and to export); atomic."""
    import h5py

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in dict(
            observations=observations,
            actions=actions,
            rewards=rewards,
            terminals=terminals,
            timeouts=timeouts,
            **extra,
        ).items():
            f.create_dataset(k, data=np.asarray(v))
