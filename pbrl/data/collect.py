"""Collect episodes from a gymnasium environment into an EpisodeDataset (the project's own data collector)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from pbrl.data.dataset import Episode, EpisodeDataset
from pbrl.errors import PbrlError

Policy = Callable[[np.ndarray], Any]


def collect_episodes(
    env_or_id: str | gym.Env,
    policy: Policy | None = None,
    *,
    num_transitions: int | None = None,
    num_episodes: int | None = None,
    seed: int = 0,
    metadata: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> EpisodeDataset:
    """Roll out `policy` (obs -> action; None = uniform random actions) in one env.

    Stops after `num_episodes` episodes, or once `num_transitions` transitions are reached (the running episode is
    then cut and marked truncated, as D4RL's fixed-size buffers are). Deterministic given `seed`.
    """
    if (num_transitions is None) == (num_episodes is None):
        raise PbrlError("collect_episodes: give exactly one of num_transitions and num_episodes")
    from pbrl.data.registry import make_env

    env = make_env(env_or_id, **(env_kwargs or {})) if isinstance(env_or_id, str) else env_or_id
    env.action_space.seed(seed)
    episodes: list[Episode] = []
    total = 0
    obs, _ = env.reset(seed=seed)
    while True:
        o, a, r, te, tr = [obs], [], [], [], []
        while True:
            act = env.action_space.sample() if policy is None else policy(obs)
            obs, rew, term, trunc, _ = env.step(act)
            a.append(act)
            r.append(rew)
            te.append(term)
            o.append(obs)
            total += 1
            cut = num_transitions is not None and total >= num_transitions
            tr.append(bool(trunc) or (cut and not term))
            if term or trunc or cut:
                break
        episodes.append(
            Episode(np.asarray(o), np.asarray(a), np.asarray(r, np.float32), np.asarray(te), np.asarray(tr))
        )
        if (num_episodes is not None and len(episodes) >= num_episodes) or (
            num_transitions is not None and total >= num_transitions
        ):
            break
        obs, _ = env.reset()
    env_id = env.spec.id if env.spec is not None else None
    meta = {"env_id": env_id, "name": env_id, "provenance": [{"step": "collect_episodes", "seed": seed}]}
    meta.update(metadata or {})
    return EpisodeDataset.from_episodes(
        episodes, metadata=meta, observation_space=env.observation_space, action_space=env.action_space
    )
