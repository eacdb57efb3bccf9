"""Small datasets and configs shared by the policy tests (collected with the project's own collector)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pbrl.data import collect_episodes
from pbrl.policies.base import default_config

# tiny networks so every algorithm's contract test runs in a second on CPU
SMALL = {
    "bc": dict(batch_size=32, hidden=(32, 32)),
    "iql": dict(batch_size=32, hidden=(32, 32)),
    "td3bc": dict(batch_size=32, hidden=(32, 32)),
    "cql": dict(batch_size=32, hidden=(32, 32), n_actions=4),
    "dt": dict(batch_size=8, context=5, embed_dim=32, n_layers=1, n_heads=2, warmup_steps=1),
    "dtr": dict(
        batch_size=8,
        context=5,
        embed_dim=32,
        n_layers=1,
        n_heads=2,
        n_inner=64,
        critic_hidden=(32, 32),
        ema_start=2,
        ema_every=1,
    ),
    "qt": dict(
        batch_size=8,
        context=5,
        embed_dim=32,
        n_layers=1,
        n_heads=2,
        n_inner=64,
        critic_hidden=(32, 32),
        ema_start=2,
        ema_every=1,
        q_term="release",
        state_loss=False,
    ),
}


def small_config(algo: str, **kw):
    return default_config(algo, **{**SMALL[algo], **kw})


@pytest.fixture(scope="session")
def pendulum() -> object:
    # short episodes so windows meet episode ends; reference scores so normalized scores exist
    return collect_episodes(
        "Pendulum-v1",
        num_episodes=6,
        seed=0,
        env_kwargs={"max_episode_steps": 50},
        metadata={"ref_min_score": -400.0, "ref_max_score": 0.0},
    )


@pytest.fixture(scope="session")
def cartpole() -> object:
    return collect_episodes("CartPole-v1", num_transitions=400, seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def obs_batch(ds, n: int = 5) -> np.ndarray:
    return np.asarray(ds.observations[:n])
