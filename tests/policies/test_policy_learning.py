"""Learning tests: on Pendulum with good data (a noisy swing-up controller) the algorithms clearly beat a random
policy (random: about -1170 return; the controller: about -155). Slow; CI runs the ci_slow subset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pbrl.data import collect_episodes
from pbrl.policies.base import default_config
from pbrl.policies.trainer import train_policy

RANDOM_RETURN = -1170.0  # mean of uniform random actions over seeds 0..9 (measured)
CONTROLLER_RETURN = -140.0  # the noiseless controller (measured: -138 over seeds 0..19)
# "clearly beats random": at least 40% of the way from random to the controller (normalized score >= 40;
# return >= -758). Measured: bc 89, iql 89, td3bc 97, dt 87, dtr 50, cql 72.
MIN_SCORE = 40.0


def swing_up(obs: np.ndarray) -> np.ndarray:
    """Energy pumping (E = w^2/2 + 15 (cos th - 1), dE/dt = 3 u w) far from the top, PD control near it."""
    c, s, w = obs
    th = np.arctan2(s, c)
    energy = 0.5 * w**2 + 15.0 * (c - 1.0)
    u = -(10.0 * th + 2.0 * w) if c > 0.85 else (2.0 * np.sign(-energy * w) if abs(w) > 1e-2 else 2.0)
    return np.clip(np.array([u], np.float32), -2.0, 2.0)


@pytest.fixture(scope="module")
def good_data():
    rng = np.random.default_rng(0)

    def noisy(obs):
        return np.clip(swing_up(obs) + 0.5 * rng.standard_normal(1), -2.0, 2.0).astype(np.float32)

    return collect_episodes(
        "Pendulum-v1",
        noisy,
        num_episodes=20,
        seed=0,
        metadata={"ref_min_score": RANDOM_RETURN, "ref_max_score": CONTROLLER_RETURN},
    )


# small networks: the data are good, so a few thousand updates of a small model are enough (and CPU-cheap)
MLP = dict(hidden=(64, 64), batch_size=128)
SMALL_SEQ = dict(context=10, embed_dim=32, n_layers=2, n_heads=2, n_inner=128, batch_size=64)
SMALL_DTR = dict(critic_hidden=(64, 64), ema_start=100, eta_max=1.0, rtg_scale=100.0, lr=1e-3)
RUNS = {
    "bc": (1000, MLP),
    "iql": (2000, MLP),
    "td3bc": (2000, MLP),
    # CORL's locomotion settings (alpha 10, actor lr 3e-5, no BC warm-up) scored -36 and 29 after 2000 and 6000
    # updates here: the actor barely moves at 3e-5 and alpha 10 keeps Q too pessimistic for this budget
    "cql": (2000, {**MLP, "cql_alpha": 1.0, "actor_lr": 3e-4, "bc_steps": 500}),
    # the same with the proposals' Q in float32 (the default, bf16 "auto", uses bf16 on CUDA and AMX CPUs)
    "cql-fp32": (2000, {**MLP, "cql_alpha": 1.0, "actor_lr": 3e-4, "bc_steps": 500, "bf16": "off"}),
    "dt": (2000, {**SMALL_SEQ, "warmup_steps": 100, "lr": 1e-3}),
    "dtr": (2000, {**SMALL_SEQ, **SMALL_DTR}),
    "qt": (2000, {**SMALL_SEQ, **SMALL_DTR}),
}


def _learn(name, data, tmp_path):
    torch.set_num_threads(1)
    steps, overrides = RUNS[name]
    algo = name.split("-")[0]
    summary = train_policy(
        algo,
        data,
        default_config(algo, **overrides),
        steps=steps,
        seed=0,
        eval_every=0,
        eval_episodes=5,
        out_dir=tmp_path,
        progress=False,
    )
    print(name, summary["last_return_mean"], summary["last_score"], summary["perf/steps_per_s"])
    assert summary["last_score"] >= MIN_SCORE, summary


@pytest.mark.slow
@pytest.mark.ci_slow
@pytest.mark.parametrize("algo", ["iql"])
def test_learns_ci(algo, good_data, tmp_path):
    _learn(algo, good_data, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["bc", "td3bc", "cql", "cql-fp32", "dt", "dtr", "qt"])
def test_learns(algo, good_data, tmp_path):
    _learn(algo, good_data, tmp_path)
