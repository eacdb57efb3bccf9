"""Evaluation: N episodes at once in a gymnasium vector env, one batched `policy.act` per step."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from pbrl.data import make_env, normalized_score
from pbrl.errors import PbrlError
from pbrl.policies.base import Policy


def evaluate(
    policy: Policy, env_id: str, episodes: int, seed: int = 0, max_steps: int | None = None
) -> np.ndarray:
    """Returns [episodes] of one episode per sub-environment, seeded seed, seed+1, ...

    Torch's global RNG is forked, so evaluating (even a stochastic policy) leaves training's random stream alone
    and a resumed run matches an uninterrupted one.
    """
    if episodes < 1:
        raise PbrlError(f"eval episodes must be >= 1, got {episodes}")
    if not env_id:
        raise PbrlError("no environment to evaluate in: the dataset has no env_id (pass env_id explicitly)")
    make_env(env_id).close()  # a clear PbrlError for unknown ids before the vector env swallows it
    envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id) for _ in range(episodes)])
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        obs, _ = envs.reset(seed=[seed + i for i in range(episodes)])
        policy.reset(episodes)
        t = 0
        while not done.all() and (max_steps is None or t < max_steps):
            action = policy.act(obs)
            if not policy.spec.discrete:
                action = action.reshape((episodes, *envs.single_action_space.shape))
            obs, reward, term, trunc, _ = envs.step(action)
            returns += np.where(done, 0.0, reward)
            done |= np.asarray(term) | np.asarray(trunc)
            t += 1
    envs.close()
    return returns


def normalize_returns(policy: Policy, returns: np.ndarray) -> np.ndarray | None:
    """D4RL-normalized scores (0-100) with the reference returns saved in the policy's spec; None if unknown."""
    if policy.spec.ref_scores is None:
        return None
    lo, hi = policy.spec.ref_scores
    return normalized_score(SimpleNamespace(metadata={"ref_min_score": lo, "ref_max_score": hi}), returns)
