"""Evaluation: N episodes at once in a gymnasium vector env, one batched `policy.act` per step."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from pbrl.data import make_env, normalized_score
from pbrl.errors import PbrlError
from pbrl.policies.base import Policy, PolicySpec


def check_env_fits(spec: PolicySpec, env_id: str) -> None:
    """Make `env_id` once and check that its spaces fit a policy of `spec`: the flattened observation size, the
    action space's kind (Box or Discrete) and size. An unknown id or a mismatch raises one PbrlError naming both."""
    env = make_env(env_id)
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    obs_dim = int(np.prod(obs_space.shape)) if obs_space.shape is not None else None
    if obs_dim != spec.obs_dim:
        raise PbrlError(
            f"env {env_id!r}: observations of size {obs_dim} ({obs_space}), but the policy of dataset "
            f"{spec.dataset_name!r} takes {spec.obs_dim}"
        )
    if spec.discrete:
        if not isinstance(act_space, gym.spaces.Discrete) or int(act_space.n) != spec.act_dim:
            raise PbrlError(f"env {env_id!r}: action space {act_space}, but the policy picks one of {spec.act_dim} actions")
    elif not isinstance(act_space, gym.spaces.Box) or int(np.prod(act_space.shape)) != spec.act_dim:
        raise PbrlError(f"env {env_id!r}: action space {act_space}, but the policy outputs {spec.act_dim} continuous values")


def evaluate(
    policy: Policy,
    env_id: str,
    episodes: int,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> np.ndarray:
    """Returns [episodes] of one episode per sub-environment, seeded seed, seed+1, ...

    Torch's global RNG is forked, so evaluating (even a stochastic policy) leaves training's random stream alone
    and a resumed run matches an uninterrupted one. `progress`: a bar in episodes with their rate; the episodes
    run side by side, so an unfinished one counts as the fraction of its time limit it has run (done ones as 1).
    """
    if episodes < 1:
        raise PbrlError(f"eval episodes must be >= 1, got {episodes}")
    if not env_id:
        raise PbrlError("no environment to evaluate in: the dataset has no env_id (pass env_id explicitly)")
    check_env_fits(policy.spec, env_id)  # a clear PbrlError before the vector env swallows it
    envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id) for _ in range(episodes)])
    returns = np.zeros(episodes)
    done = np.zeros(episodes, dtype=bool)
    spec = getattr(envs.envs[0], "spec", None)
    horizon = max_steps or (spec.max_episode_steps if spec is not None else None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=episodes, desc=desc, unit="episode", leave=False, dynamic_ncols=True, mininterval=0.5,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} episodes [{elapsed}<{remaining}, "
            "{rate_fmt}{postfix}]",
        )
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
            if bar is not None:
                part = min(t / horizon, 1.0) if horizon else 0.0
                bar.update(round(float(done.sum() + (~done).sum() * part), 1) - bar.n)
    envs.close()
    if bar is not None:
        bar.update(episodes - bar.n)
        bar.close()
    return returns


def normalize_returns(policy: Policy, returns: np.ndarray) -> np.ndarray | None:
    """D4RL-normalized scores (0-100) with the reference returns saved in the policy's spec; None if unknown."""
    if policy.spec.ref_scores is None:
        return None
    lo, hi = policy.spec.ref_scores
    return normalized_score(SimpleNamespace(metadata={"ref_min_score": lo, "ref_max_score": hi}), returns)
