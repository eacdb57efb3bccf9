"""EpisodeDataset: an immutable offline dataset of episodes stored as flat contiguous arrays.

Layout (Minari semantics):
- `observations_all` [N + E, *obs_shape]: every episode's T_i + 1 observations, its final observation included.
- `actions` [N, *act_shape], `rewards` [N], `terminations` [N], `truncations` [N]: one row per transition.
- `episode_starts` [E + 1]: transition offsets; episode i holds transitions starts[i]:starts[i+1] and observations
  starts[i] + i : starts[i+1] + i + 1 (each earlier episode contributes one extra, final, observation).

Flat per-transition views (`observations`, `next_observations`, ...) index transitions 0..N-1 in episode order, so
a flat index means the same row everywhere (segment starts in preference files, relabeled rewards, batches).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from pbrl.errors import PbrlError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Episode:
    """Views of one episode's arrays (no copies)."""

    observations: np.ndarray  # [T+1, *obs_shape]
    actions: np.ndarray  # [T, *act_shape]
    rewards: np.ndarray  # [T]
    terminations: np.ndarray  # [T] bool
    truncations: np.ndarray  # [T] bool

    def __len__(self) -> int:
        return len(self.actions)


@dataclass(frozen=True)
class Transitions:
    """All transitions of a dataset as torch tensors on one device (sample rows with index tensors)."""

    observations: torch.Tensor  # [N, *obs_shape]
    actions: torch.Tensor  # [N, *act_shape]
    rewards: torch.Tensor  # [N]
    next_observations: torch.Tensor  # [N, *obs_shape]
    terminals: torch.Tensor  # [N] float32, 1.0 = true termination
    timeouts: torch.Tensor  # [N] float32, 1.0 = episode truncated after this step

    def __len__(self) -> int:
        return len(self.rewards)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def non_finite_row(a: np.ndarray) -> tuple[int, str] | None:
    """(first row, "NaN" | "inf" | "-inf") of a float array holding a non-finite value, or None when all are finite.

    The common case (all finite) costs one `np.isfinite(a).all()` pass; rows are located only on failure.
    """
    a = np.asarray(a)
    if a.size == 0 or not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
        return None
    row = int(np.argmax(~np.isfinite(a.reshape(len(a), -1)).all(axis=1)))
    vals = np.asarray(a[row]).reshape(-1)
    if np.isnan(vals).any():
        return row, "NaN"
    return row, "inf" if (vals == np.inf).any() else "-inf"


def _infer_space(x: np.ndarray, discrete: bool = False) -> gym.Space:
    if discrete:
        return gym.spaces.Discrete(int(x.max()) + 1 if x.size else 1)
    return gym.spaces.Box(-np.inf, np.inf, shape=x.shape[1:], dtype=np.float32)


class EpisodeDataset:
    """Immutable episodes as flat arrays; see the module docstring for the layout.

    Build it from arrays (validated here), `from_episodes`, `from_minari`, `from_d4rl`, or `pbrl.data.load_dataset`.
    Arrays are read-only; every transformation (`with_rewards`) returns a new dataset.
    """

    observations_all: np.ndarray  # [N+E, *obs_shape]
    actions: np.ndarray  # [N, *act_shape]
    rewards: np.ndarray  # [N] float32
    terminations: np.ndarray  # [N] bool
    truncations: np.ndarray  # [N] bool
    episode_starts: np.ndarray  # [E+1] int64
    metadata: dict[str, Any]
    observation_space: gym.Space
    action_space: gym.Space

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminations: np.ndarray,
        truncations: np.ndarray,
        episode_starts: np.ndarray,
        metadata: dict[str, Any] | None = None,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
    ) -> None:
        starts = np.asarray(episode_starts, dtype=np.int64)
        n = len(actions)
        if (
            starts.ndim != 1
            or len(starts) < 1
            or starts[0] != 0
            or starts[-1] != n
            or np.any(np.diff(starts) < 1)
        ):
            raise PbrlError(
                f"episode_starts must rise strictly from 0 to the number of transitions ({n}); got {starts[:5]}..."
            )
        num_episodes = len(starts) - 1
        if len(observations) != n + num_episodes:
            raise PbrlError(
                f"observations must hold N + E = {n} + {num_episodes} rows (each episode's final observation "
                f"included); got {len(observations)}"
            )
        for name, arr in (("rewards", rewards), ("terminations", terminations), ("truncations", truncations)):
            if np.shape(arr) != (n,):
                raise PbrlError(f"{name} must have shape ({n},); got {np.shape(arr)}")
        with np.errstate(over="ignore"):  # float64 values past float32's range become inf, refused below
            rewards = np.asarray(rewards, dtype=np.float32)
            discrete = isinstance(action_space, gym.spaces.Discrete) or np.issubdtype(
                np.asarray(actions).dtype, np.integer
            )
            actions = np.asarray(actions, dtype=np.int64 if discrete else np.float32)
            observations = np.asarray(observations)
            if observations.dtype == np.float64:
                observations = observations.astype(np.float32)
        # every float array a learner reads (next observations are rows of `observations`): a NaN here would
        # otherwise train an all-NaN model without a word
        obs_starts = starts[:-1] + np.arange(num_episodes)  # observation row of each episode's first observation
        for name, arr, ep_rows in (
            ("observations", observations, obs_starts),
            ("actions", actions, starts[:-1]),
            ("rewards", rewards, starts[:-1]),
        ):
            bad = non_finite_row(arr)
            if bad is not None:
                row, kind = bad
                ep = int(np.searchsorted(ep_rows, row, side="right") - 1)
                raise PbrlError(
                    f"{name} row {row}: {kind} (episode {ep}, step {row - int(ep_rows[ep])}); "
                    "observations, actions and rewards must be finite"
                )
        self.observations_all = _readonly(observations)
        self.actions = _readonly(actions)
        self.rewards = _readonly(rewards)
        self.terminations = _readonly(np.asarray(terminations, dtype=bool))
        self.truncations = _readonly(np.asarray(truncations, dtype=bool))
        self.episode_starts = _readonly(starts)
        self.metadata = copy.deepcopy(dict(metadata or {}))
        self.observation_space = observation_space or _infer_space(observations)
        self.action_space = action_space or _infer_space(actions, discrete)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_episodes(
        cls,
        episodes: list[Episode],
        metadata: dict[str, Any] | None = None,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
    ) -> EpisodeDataset:
        episodes = [ep for ep in episodes if len(ep) > 0]
        if not episodes:
            raise PbrlError("a dataset needs at least one episode with at least one transition")
        lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
        for i, ep in enumerate(episodes):
            if len(ep.observations) != len(ep) + 1:
                raise PbrlError(
                    f"episode {i}: expected {len(ep) + 1} observations (T+1), got {len(ep.observations)}"
                )
        return cls(
            observations=np.concatenate([ep.observations for ep in episodes]),
            actions=np.concatenate([ep.actions for ep in episodes]),
            rewards=np.concatenate([ep.rewards for ep in episodes]),
            terminations=np.concatenate([ep.terminations for ep in episodes]),
            truncations=np.concatenate([ep.truncations for ep in episodes]),
            episode_starts=np.concatenate([[0], np.cumsum(lengths)]),
            metadata=metadata,
            observation_space=observation_space,
            action_space=action_space,
        )

    @classmethod
    def from_minari(cls, id_or_dataset: Any, download: bool = False) -> EpisodeDataset:
        """Read a local Minari dataset (by id or a `minari.MinariDataset`); download only when asked."""
        from pbrl.data.minari_io import read_minari

        return read_minari(id_or_dataset, download=download)

    @classmethod
    def from_d4rl(cls, path: str) -> EpisodeDataset:
        """Read a D4RL hdf5 file; flat transitions equal `d4rl.qlearning_dataset`'s, in the same order."""
        from pbrl.data.d4rl_io import read_d4rl

        return read_d4rl(path)

    def to_minari(
        self,
        dataset_id: str,
        *,
        overwrite: bool = False,
        description: str | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        provenance: dict[str, Any] | None = None,
        extra_files: dict[str, str] | None = None,
    ) -> str:
        """Write this dataset as a local Minari dataset (atomically, with `extra_files` name -> text inside its
        folder); returns its folder."""
        from pbrl.data.minari_io import write_minari

        return write_minari(
            self,
            dataset_id,
            overwrite=overwrite,
            description=description,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            provenance=provenance,
            extra_files=extra_files,
        )

    # ------------------------------------------------------------------ sizes and views
    @property
    def num_transitions(self) -> int:
        return len(self.actions)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_starts) - 1

    def __len__(self) -> int:
        return self.num_transitions

    @cached_property
    def episode_lengths(self) -> np.ndarray:
        return _readonly(np.diff(self.episode_starts))  # [E]

    @cached_property
    def _obs_rows(self) -> np.ndarray:
        # transition t of episode i sits at observation row t + i
        return np.arange(self.num_transitions, dtype=np.int64) + self.episode_index_of(
            np.arange(self.num_transitions, dtype=np.int64)
        )

    @cached_property
    def observations(self) -> np.ndarray:
        return _readonly(self.observations_all[self._obs_rows])  # [N, *obs_shape]

    @cached_property
    def next_observations(self) -> np.ndarray:
        return _readonly(self.observations_all[self._obs_rows + 1])  # [N, *obs_shape]

    @property
    def terminals(self) -> np.ndarray:
        return self.terminations

    @property
    def timeouts(self) -> np.ndarray:
        return self.truncations

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.action_space, gym.spaces.Discrete)

    @property
    def env_id(self) -> str | None:
        return self.metadata.get("env_id")

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.metadata.get("dataset_id") or "dataset")

    def episode_index_of(self, flat_idx: np.ndarray | int) -> np.ndarray:
        """Episode id of each flat transition index."""
        return np.searchsorted(self.episode_starts, flat_idx, side="right") - 1

    def episode(self, i: int) -> Episode:
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range (dataset has {self.num_episodes})")
        i %= self.num_episodes
        s, e = int(self.episode_starts[i]), int(self.episode_starts[i + 1])
        return Episode(
            observations=self.observations_all[s + i : e + i + 1],
            actions=self.actions[s:e],
            rewards=self.rewards[s:e],
            terminations=self.terminations[s:e],
            truncations=self.truncations[s:e],
        )

    def episode_returns(self, rewards: np.ndarray | None = None) -> np.ndarray:
        """Undiscounted return of every episode [E] (of `rewards` [N] if given, else the dataset's)."""
        r = self.rewards if rewards is None else rewards
        return np.add.reduceat(r.astype(np.float64), self.episode_starts[:-1])

    # ------------------------------------------------------------------ derived datasets
    def with_rewards(self, rewards: np.ndarray, provenance: dict[str, Any] | None = None) -> EpisodeDataset:
        """A new dataset with per-transition `rewards` [N]; `provenance` is appended to the metadata's list."""
        rewards = np.asarray(rewards)
        if rewards.shape != (self.num_transitions,):
            raise PbrlError(
                f"with_rewards: expected rewards of shape ({self.num_transitions},), got {rewards.shape}"
            )
        meta = copy.deepcopy(self.metadata)
        if provenance is not None:
            meta.setdefault("provenance", []).append(provenance)
        return EpisodeDataset(
            self.observations_all,
            self.actions,
            rewards,
            self.terminations,
            self.truncations,
            self.episode_starts,
            metadata=meta,
            observation_space=self.observation_space,
            action_space=self.action_space,
        )

    # ------------------------------------------------------------------ windows
    def window_starts(self, length: int, cross_episodes: bool = False) -> np.ndarray:
        """Every flat start index s such that [s, s + length) is a valid window.

        Inside one episode by default; with `cross_episodes` any window inside the flat array (Uni-RLHF style).
        """
        if length < 1:
            raise PbrlError(f"window length must be >= 1, got {length}")
        if cross_episodes:
            return np.arange(max(self.num_transitions - length + 1, 0), dtype=np.int64)
        parts = [
            np.arange(s, e - length + 1, dtype=np.int64)
            for s, e in zip(self.episode_starts[:-1], self.episode_starts[1:])
            if e - s >= length
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def sample_windows(
        self, batch_size: int, length: int, rng: np.random.Generator, cross_episodes: bool = False
    ) -> np.ndarray:
        """`batch_size` window starts drawn uniformly over all valid windows [B]."""
        starts = self.window_starts(length, cross_episodes)
        if len(starts) == 0:
            raise PbrlError(
                f"no episode of {self.name} has {length} transitions (longest: {self.episode_lengths.max()})"
            )
        return starts[rng.integers(0, len(starts), size=batch_size)]

    # ------------------------------------------------------------------ torch
    def transitions(self, device: str | torch.device = "cpu") -> Transitions:
        """All transitions as tensors on `device` (one copy; sample rows with index tensors)."""
        import torch

        def t(a: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
            # copy: the dataset's arrays are read-only and tensors must not alias them
            return torch.from_numpy(np.array(a, copy=True)).to(device=device, dtype=dtype)

        obs_dtype = torch.float32 if np.issubdtype(self.observations_all.dtype, np.floating) else None
        return Transitions(
            observations=t(self.observations, obs_dtype),
            actions=t(self.actions),
            rewards=t(self.rewards),
            next_observations=t(self.next_observations, obs_dtype),
            terminals=t(self.terminations, torch.float32),
            timeouts=t(self.truncations, torch.float32),
        )

    def __repr__(self) -> str:
        return (
            f"EpisodeDataset({self.name!r}, transitions={self.num_transitions}, episodes={self.num_episodes}, "
            f"obs={self.observations_all.shape[1:]}, action_space={self.action_space})"
        )
