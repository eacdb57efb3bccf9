"""TD3+BC (Fujimoto & Gu, NeurIPS 2021, "A Minimalist Approach to Offline Reinforcement Learning", arXiv 2106.06860).

Critic (TD3): y = r + gamma (1 - d) min_k Q'_k(s', clip(pi'(s') + clip(eps, -c, c), -1, 1)), eps ~ N(0, sigma^2)
Actor (every `policy_freq` updates):
        pi = argmax_pi E[ lambda Q_1(s, pi(s)) - (pi(s) - a)^2 ],  lambda = alpha / ((1/B) sum |Q_1(s_i, a_i)|)  (eq. 3)
with lambda treated as a constant (detached). Continuous action spaces only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pbrl.data import Transitions
from pbrl.errors import PbrlError
from pbrl.policies.base import ObservationConfig, Phase, Policy, PolicySpec
from pbrl.policies.nets import Critic, DeterministicActor, frozen
from pbrl.utils import adam


@dataclass
class TD3BCConfig(ObservationConfig):
    """TD3+BC (the paper's and CORL's D4RL defaults)."""

    batch_size: int = 256
    """Transitions per update."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of target networks."""
    alpha: float = 2.5
    """Weight of the Q term relative to behaviour cloning (lambda = alpha / mean|Q|)."""
    policy_noise: float = 0.2
    """Std of target policy smoothing noise (normalized action units)."""
    noise_clip: float = 0.5
    """Clip of the smoothing noise."""
    policy_freq: int = 2
    """Actor and target updates every this many critic updates."""
    actor_lr: float = 3e-4
    """Actor Adam learning rate."""
    critic_lr: float = 3e-4
    """Critic Adam learning rate."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of actor and critics."""


def td3bc_lambda(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """lambda = alpha / mean|Q| over the batch, detached (TD3+BC eq. 3)."""
    return alpha / q.abs().mean().detach()


def td3bc_actor_loss(q: torch.Tensor, pi: torch.Tensor, act: torch.Tensor, alpha: float) -> torch.Tensor:
    """-lambda mean Q(s, pi(s)) + mean (pi(s) - a)^2;  q [B], pi/act [B, A]."""
    return -td3bc_lambda(q, alpha) * q.mean() + F.mse_loss(pi, act)


class TD3BC(Policy):
    algo = "td3bc"

    def __init__(self, config: TD3BCConfig, spec: PolicySpec, total_steps: int) -> None:
        super().__init__(config, spec, total_steps)
        if spec.discrete:
            raise PbrlError(
                "td3bc needs a continuous (Box) action space; use iql, cql, bc, dt or dtr for discrete"
            )
        hidden = tuple(config.hidden)
        self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, hidden)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = Critic(spec.obs_dim, spec.act_dim, False, n=2, hidden=hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers["actor"] = adam(self.actor.parameters(), config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), config.critic_lr)

    def phases(self) -> list[Phase]:
        # the actor's loss reads the critic after its step, so the critic steps first
        targets = (("critic_target", "critic"), ("actor_target", "actor"))
        return [Phase("critic_loss", ("critic",)),
                Phase("actor_loss", ("actor",), every=self.config.policy_freq, targets=targets)]

    def draw_noise(self, batch: Transitions, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        act = batch.actions  # target policy smoothing: eps ~ N(0, 1) [B, A]
        return {"eps": torch.randn(act.shape, generator=generator, dtype=act.dtype, device=act.device)}

    update = Policy.run_phases

    def critic_loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        cfg = self.config
        with torch.no_grad():
            noise_a = (noise["eps"] * cfg.policy_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_act = (self.actor_target(batch.next_observations) + noise_a).clamp(-1.0, 1.0)  # [B, A]
            target_q = self.critic_target(batch.next_observations, next_act).min(0).values  # [B]
            y = batch.rewards + cfg.gamma * (1.0 - batch.terminals) * target_q  # [B]
        q = self.critic(batch.observations, batch.actions)  # [2, B]
        loss = F.mse_loss(q, y.expand_as(q)) * q.shape[0]  # sum over the twins, as TD3
        return loss, {"td3bc/critic_loss": loss, "td3bc/q_mean": q.mean()}, carry

    def actor_loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        obs = batch.observations  # [B, D]
        pi = self.actor(obs)  # [B, A]
        with frozen(self.critic):  # the actor's gradient passes through Q; no critic weight grads
            q_pi = self.critic(obs, pi)[0]  # [B] (Q_1 only, as the paper)
        loss = td3bc_actor_loss(q_pi, pi, batch.actions, self.config.alpha)
        return loss, {"td3bc/actor_loss": loss}, carry

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(obs)
