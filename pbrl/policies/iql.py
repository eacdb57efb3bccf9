"""Implicit Q-Learning (Kostrikov, Nair & Levine, ICLR 2022, arXiv 2110.06169).

Value:  L_V = E[ L_2^tau( min_k Q'_k(s, a) - V(s) ) ],  L_2^tau(u) = |tau - 1(u < 0)| u^2      (eq. 5)
Critic: L_Q = E[ (r + gamma (1 - d) V(s') - Q_k(s, a))^2 ]                                      (eq. 6)
Actor (advantage-weighted regression):
        L_pi = E[ exp(beta (min_k Q'_k(s, a) - V(s))) * -log pi(a | s) ],  weights clipped at 100 (eq. 7)
Defaults: CORL's D4RL locomotion settings (tau 0.7, beta 3, cosine-decayed actor lr). CORL's locomotion configs and
the paper's appendix also scale rewards by 1000 / return range: `reward_scale`, off in the dataclass as in CORL's,
on in the Table 1 scripts. Discrete actions use a categorical actor and Q(s, .) heads.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pbrl.data import EpisodeDataset, Transitions
from pbrl.errors import PbrlError
from pbrl.policies.base import ObservationConfig, Phase, Policy, PolicySpec
from pbrl.policies.nets import (
    CategoricalActor,
    Critic,
    DeterministicActor,
    GaussianActor,
    cosine_lr,
    mlp,
)
from pbrl.utils import adam


@dataclass
class IQLConfig(ObservationConfig):
    """IQL (CORL defaults for D4RL locomotion)."""

    batch_size: int = 256
    """Transitions per update."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    expectile: float = 0.7
    """Expectile tau of the value loss (0.5 = mean regression; -> 1 approaches max_a Q)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights."""
    max_weight: float = 100.0
    """Clip of exp(beta * advantage)."""
    lr: float = 3e-4
    """Adam learning rate (value, critics, actor)."""
    actor_cosine: bool = True
    """Cosine-decay the actor learning rate to 0 over training."""
    deterministic_actor: bool = False
    """Continuous only: deterministic tanh actor with squared-error weighted regression instead of the Gaussian."""
    actor_dropout: float = 0.0
    """Dropout in the actor MLP (CORL uses 0.1 for Adroit)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of every MLP."""
    log_std_min: float = -20.0
    """Floor of the Gaussian actor's state-independent log std (CORL's -20; d3rlpy's IQL uses -5). A low floor
    lets the advantage-weighted likelihood shrink the std until a few high-weight actions dominate the loss."""
    actor_after_critic: bool = False
    """Step the value and critics first and weight the actor's samples with the updated value function, as
    d3rlpy's IQL does (False: one step of all three losses on the weights from before it, as CORL's and the
    paper's code do). The target critics move after the actor either way."""
    reward_scale: bool = False
    """Train on rewards x 1000 / (max - min episode return), as the IQL paper (appendix) and CORL's / d3rlpy's
    D4RL-locomotion configs do (CORL's `normalize_reward`, False in its dataclass too). It sets the advantages'
    scale, so it acts on beta: on hopper (factor 0.32) it softens the weights, on data with a narrow return range
    (factor > 1) it sharpens them. Skipped, with one stderr line, when every episode has the same return.
    results/peer_scores-peer.md measures both settings."""


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean |tau - 1(u < 0)| u^2 over u = diff [B] (asymmetric squared loss, IQL eq. 5)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def return_range_scale(returns: np.ndarray) -> float:
    """1000 / (max - min episode return) [E] -> the factor CORL's `normalize_reward` multiplies rewards by."""
    spread = float(np.max(returns) - np.min(returns))
    if not spread > 0:
        raise PbrlError("reward_scale: every episode has the same return (max - min = 0); set reward_scale=false")
    return 1000.0 / spread


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """exp(beta * A), clipped above at `max_weight` [B]."""
    return torch.exp(beta * adv).clamp(max=max_weight)


class IQL(Policy):
    algo = "iql"

    def __init__(self, config: IQLConfig, spec: PolicySpec, total_steps: int) -> None:
        super().__init__(config, spec, total_steps)
        hidden = tuple(config.hidden)
        self.critic = Critic(spec.obs_dim, spec.act_dim, spec.discrete, n=2, hidden=hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = mlp(spec.obs_dim, 1, hidden)
        if spec.discrete:
            self.actor: torch.nn.Module = CategoricalActor(
                spec.obs_dim, spec.act_dim, hidden, config.actor_dropout
            )
        elif config.deterministic_actor:
            self.actor = DeterministicActor(spec.obs_dim, spec.act_dim, hidden, config.actor_dropout)
        else:
            self.actor = GaussianActor(spec.obs_dim, spec.act_dim, hidden, config.actor_dropout, config.log_std_min)
        self.optimizers["value"] = adam(self.value.parameters(), config.lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), config.lr)
        self.optimizers["actor"] = adam(self.actor.parameters(), config.lr)

    def make_sampler(self, dataset: EpisodeDataset, generator: torch.Generator) -> Callable[[], Any]:
        if self.config.reward_scale:  # a fact of the data, recomputed alike on resume
            returns = dataset.episode_returns()
            if np.ptp(returns) > 0:
                factor = return_range_scale(returns)
                dataset = dataset.with_rewards(dataset.rewards * factor, provenance={"reward_scale": factor})
            else:
                print("pbrl: note: iql reward_scale skipped: every episode has the same return", file=sys.stderr)
        return super().make_sampler(dataset, generator)

    def _actor_nll(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if isinstance(self.actor, DeterministicActor):
            return (self.actor(obs) - act).pow(2).sum(-1)  # [B]
        return -self.actor.log_prob(obs, act)  # [B]

    def phases(self) -> list[Phase]:
        targets = (("critic_target", "critic"),)
        if self.config.actor_after_critic:
            return [Phase("critic_losses", ("value", "critic")), Phase("actor_loss", ("actor",), targets=targets)]
        # every loss reads the weights from before the update, so the three optimizers step on one backward pass
        return [Phase("losses", ("value", "critic", "actor"), targets=targets)]

    def schedule(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        if self.config.actor_cosine:
            optimizers["actor"].param_groups[0]["lr"] = cosine_lr(self.config.lr, self.step - 1, self.total_steps)

    update = Policy.run_phases

    def critic_losses(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_V + L_Q (disjoint parameters); carries min_k Q'_k(s, a) [B] and V(s) [B] to the actor's loss."""
        cfg = self.config
        obs, act = batch.observations, batch.actions  # [B, D], [B, A] or [B]
        with torch.no_grad():
            target_q = self.critic_target(obs, act).min(0).values  # [B]
            next_v = self.value(batch.next_observations).squeeze(-1)  # [B]
            q_target = batch.rewards + cfg.gamma * (1.0 - batch.terminals) * next_v  # [B]

        v = self.value(obs).squeeze(-1)  # [B]
        v_loss = expectile_loss(target_q - v, cfg.expectile)
        q = self.critic(obs, act)  # [2, B]
        q_loss = F.mse_loss(q, q_target.expand_as(q))
        metrics = {"iql/v_loss": v_loss, "iql/q_loss": q_loss, "iql/q_mean": q.mean()}
        return v_loss + q_loss, metrics, {**carry, "target_q": target_q, "v": v.detach()}

    def actor_loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_pi with advantages min_k Q'_k(s, a) - V(s); V re-read when the value function has stepped since."""
        if self.config.actor_after_critic:
            with torch.no_grad():
                v = self.value(batch.observations).squeeze(-1)  # [B], after the value step
        else:
            v = carry["v"]
        weights = awr_weights(carry["target_q"] - v, self.config.beta, self.config.max_weight)  # [B]
        actor_loss = (weights * self._actor_nll(batch.observations, batch.actions)).mean()
        return actor_loss, {"iql/actor_loss": actor_loss}, carry

    def losses(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_V + L_Q + L_pi on the weights from before the step (each network's gradient is its own loss's)."""
        critic, metrics, carry = self.critic_losses(batch, noise, carry)
        actor, actor_metrics, carry = self.actor_loss(batch, noise, carry)
        return critic + actor, {**metrics, **actor_metrics}, carry

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.mode(obs) if not isinstance(self.actor, DeterministicActor) else self.actor(obs)
