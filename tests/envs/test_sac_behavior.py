"""SAC of the behaviour-policy trainer: batched twin critics vs a loop, hand-computed losses, learning."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.utils import safe_torch_load
from pbrl_envs.sac import SAC, Actor, Batch, SACConfig, TwinCritic, actor_loss, critic_loss, soft_td_target
from pbrl_envs.train_behavior import TrainBehaviorConfig, train_one


@pytest.fixture(autouse=True)
def _one_torch_thread(_torch_threads):
    # small networks, one sample at a time: a second intra-op thread only adds barriers (10-20x slower when the
    # cores are busy)
    torch.set_num_threads(1)


def test_twin_critic_equals_two_separate_mlps():
    torch.manual_seed(0)
    critic = TwinCritic(in_dim=5, hidden=8)
    obs, act = torch.randn(7, 3), torch.randn(7, 2)
    q = critic(obs, act)  # [2, 7]
    x = torch.cat([obs, act], -1)
    for m in range(2):
        h = x
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
            h = h @ w[m] + b[m, 0]
            if i < 2:
                h = torch.relu(h)
        torch.testing.assert_close(q[m], h.squeeze(-1))
    assert not torch.allclose(q[0], q[1])  # members are initialised independently


def test_actor_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = Actor(obs_dim=3, act_dim=2, hidden=16, act_low=[-2.0, -1.0], act_high=[2.0, 3.0])
    obs = torch.randn(5, 3)
    gen = torch.Generator().manual_seed(1)
    a, logp = actor.sample(obs, gen)
    mu, log_std = actor.dist_params(obs)
    base = torch.distributions.Normal(mu, log_std.exp())
    dist = torch.distributions.TransformedDistribution(base, [
        torch.distributions.TanhTransform(),
        torch.distributions.AffineTransform(actor.act_bias, actor.act_scale),
    ])
    torch.testing.assert_close(logp, dist.log_prob(a).sum(-1), atol=2e-3, rtol=1e-4)
    assert (a >= torch.tensor([-2.0, -1.0])).all() and (a <= torch.tensor([2.0, 3.0])).all()


def test_losses_hand_computed():
    r = torch.tensor([1.0, 2.0])
    d = torch.tensor([0.0, 1.0])
    q_next = torch.tensor([[3.0, 5.0], [4.0, 1.0]])  # [2, B]: min over members = [3, 1]
    logp = torch.tensor([0.5, -1.0])
    y = soft_td_target(r, d, q_next, logp, torch.tensor(0.2), gamma=0.9)
    # y0 = 1 + 0.9 * (3 - 0.2 * 0.5) = 3.61; y1 = 2 (terminal)
    torch.testing.assert_close(y, torch.tensor([3.61, 2.0]))
    q = torch.tensor([[3.0, 2.0], [4.0, 1.0]])
    # member 0: ((3-3.61)^2 + 0) / 2; member 1: ((4-3.61)^2 + 1) / 2
    expect = (0.61**2) / 2 + (0.39**2 + 1.0) / 2
    assert math.isclose(float(critic_loss(q, y)), expect, rel_tol=1e-5)
    # actor: mean(alpha * logp - min_j q) = mean(0.2*0.5 - 3, 0.2*-1 - 1) = (-2.9 - 1.2) / 2
    assert math.isclose(float(actor_loss(q, logp, torch.tensor(0.2))), -2.05, rel_tol=1e-6)


def test_critic_learns_rewards_with_zero_discount():
    torch.manual_seed(0)
    agent = SAC(3, 1, [-1.0], [1.0], SACConfig(hidden=32, gamma=0.0, critic_lr=3e-3))
    obs, act = torch.randn(64, 3), torch.rand(64, 1) * 2 - 1
    reward = obs[:, 0] - 2 * act[:, 0]
    batch = Batch(obs, act, reward, torch.randn(64, 3), torch.zeros(64))
    first = agent.update(batch)["sac/critic_loss"]
    for _ in range(300):
        last = agent.update(batch)["sac/critic_loss"]
    assert last < 0.05 * first


def test_train_one_writes_checkpoints_and_evals(tmp_path):
    cfg = TrainBehaviorConfig(steps=400, learning_starts=200, ckpt_every=200, eval_episodes=2, hidden=16,
                              batch_size=32)
    evals = train_one(cfg, "Pendulum-v1", 0, tmp_path)
    assert [e["step"] for e in evals] == [200, 400]
    assert json.loads((tmp_path / "evals.json").read_text()) == evals
    state = safe_torch_load(tmp_path / "actor_0000400.pt")
    assert sum(v.numel() * v.element_size() for v in state.values()) < 1_000_000
    before = safe_torch_load(tmp_path / "actor_0000200.pt")
    assert not torch.equal(state["head.weight"], before["head.weight"])  # updates happened after step 200
    cfg2 = json.loads((tmp_path / "config.json").read_text())
    assert cfg2["env_id"] == "Pendulum-v1" and cfg2["act_high"] == [2.0]


def test_resume_continues_from_the_last_checkpoint(tmp_path):
    cfg = TrainBehaviorConfig(steps=200, learning_starts=100, ckpt_every=100, eval_episodes=1, hidden=16,
                              batch_size=32)
    first = train_one(cfg, "Pendulum-v1", 0, tmp_path)
    saved = safe_torch_load(tmp_path / "resume.pt")
    assert saved["step"] == 200 and saved["buffer"].shape[0] == 200
    longer = TrainBehaviorConfig(**{**cfg.__dict__, "steps": 300, "resume": True})
    evals = train_one(longer, "Pendulum-v1", 0, tmp_path)
    assert [e["step"] for e in evals] == [100, 200, 300] and evals[:2] == first
    resumed = safe_torch_load(tmp_path / "resume.pt")
    assert torch.equal(resumed["buffer"][:200], saved["buffer"])  # the old transitions were kept
    assert resumed["buffer"][200:].abs().sum() > 0  # and new ones were collected after them
    before = safe_torch_load(tmp_path / "actor_0000200.pt")
    after = safe_torch_load(tmp_path / "actor_0000300.pt")
    assert not torch.equal(before["head.weight"], after["head.weight"])


class _RunsCode:
    """A pickle payload: unpickling it runs `touch <marker>` (what a crafted resume.pt could do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_crafted_resume_file_without_running_it(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"agent": _RunsCode(str(marker)), "step": 0}, tmp_path / "resume.pt")
    cfg = TrainBehaviorConfig(steps=50, learning_starts=50, ckpt_every=50, eval_episodes=1, hidden=16,
                              batch_size=32, resume=True)
    with pytest.raises(PbrlError, match=r"resume\.pt: unreadable resume file") as err:
        train_one(cfg, "Pendulum-v1", 0, tmp_path)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # the command line says it in one line, without a traceback
    out = subprocess.run(
        [sys.executable, "-m", "pbrl_envs.train_behavior", "--env", "Pendulum-v1", "--steps", "50",
         "--out", str(tmp_path), "--resume"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60,
    )
    assert out.returncode == 1 and not marker.exists()
    assert out.stderr.strip().splitlines() == [
        next(line for line in out.stderr.splitlines() if line.startswith("train_behavior: error: "))
    ]
    assert "resume.pt: unreadable resume file" in out.stderr and "Traceback" not in out.stderr


def test_resume_refuses_a_file_of_another_layout(tmp_path):
    torch.save({"step": 3, "buffer": torch.zeros(3, 4)}, tmp_path / "resume.pt")
    cfg = TrainBehaviorConfig(steps=50, learning_starts=50, ckpt_every=50, eval_episodes=1, hidden=16,
                              batch_size=32, resume=True)
    with pytest.raises(PbrlError, match="not a resume file of train_behavior"):
        train_one(cfg, "Pendulum-v1", 0, tmp_path)


@pytest.mark.slow
@pytest.mark.ci_slow
def test_sac_learns_pendulum(tmp_path):
    """9k steps of SAC swing the pendulum up and hold it (random: about -1240; solved: about -150)."""
    cfg = TrainBehaviorConfig(steps=9000, learning_starts=1000, ckpt_every=9000, eval_episodes=5, hidden=64)
    evals = train_one(cfg, "Pendulum-v1", 0, tmp_path)
    assert np.isfinite(evals[-1]["return_det_mean"])
    assert evals[-1]["return_det_mean"] > -400
