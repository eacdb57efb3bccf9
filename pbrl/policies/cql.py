"""Conservative Q-Learning (Kumar, Zhou, Tucker & Levine, NeurIPS 2020, arXiv 2006.04779), CQL(H).

Continuous actions (SAC backbone, automatic entropy tuning, CORL's `cql.py` defaults):
  L_Q = E[(Q_k(s, a) - y)^2] + alpha_cql E_s[ T log sum_{a'} exp(Q_k(s, a') / T) - Q_k(s, a) ]      (eq. 4)
  y = r + gamma (1 - d) min_k Q'_k(s', a'),  a' ~ pi(.|s')
The log-sum-exp over the continuous action space is estimated by importance sampling (App. F) with N actions from
each of U(-1, 1)^A, pi(.|s) and pi(.|s'):  logsumexp_j (Q(s, a_j) - log mu(a_j)), mu = the sampling density.
  L_pi = E[ alpha log pi(a~|s) - min_k Q_k(s, a~) ],  a~ ~ pi(.|s);  L_alpha = -E[log alpha (log pi + H_target)].
For the first `bc_steps` updates the actor instead clones the data, L_pi = E[ alpha log pi(a~|s) - log pi(a|s) ]
(the authors' code: `policy_eval_start`, 40k steps; CORL: `bc_steps`), so that the critics are first trained on a
policy that stays near the data.
Cost: the 3N proposals per state make the critic's batch 3N+1 times the data batch. With `bf16` the critic runs those
proposals under bf16 autocast (float32 weights and optimizer; the TD term and Q(s, a) stay float32): about 3x faster
on a CPU with AMX units.
Discrete actions (CQL on a double-Q DQN): the log-sum-exp is exact over the actions,
  y = r + gamma (1 - d) max_a min_k Q'_k(s', a), and the policy is argmax_a min_k Q_k(s, a).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pbrl.data import Transitions
from pbrl.policies.base import ObservationConfig, Phase, Policy, PolicySpec
from pbrl.policies.nets import Critic, TanhGaussianActor, frozen
from pbrl.utils import adam, bf16_enabled


@dataclass
class CQLConfig(ObservationConfig):
    """CQL (CORL defaults for D4RL locomotion; critics 256x256 to match d3rlpy's benchmark setting)."""

    batch_size: int = 256
    """Transitions per update."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    cql_alpha: float = 10.0
    """Weight of the conservative term (continuous: 10 in CORL's locomotion configs; discrete DQN: ~1-4)."""
    temperature: float = 1.0
    """Temperature T of the log-sum-exp."""
    n_actions: int = 10
    """Continuous: actions sampled from each of the three proposal distributions."""
    critic_lr: float = 3e-4
    """Critic Adam learning rate."""
    actor_lr: float = 3e-5
    """Actor Adam learning rate."""
    alpha_lr: float = 3e-4
    """Entropy temperature Adam learning rate."""
    target_entropy: float | None = None
    """SAC target entropy; None = -action_dim."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of actor and critics."""
    bc_steps: int = 0
    """Updates at the start whose actor loss is behaviour cloning (CORL's default 0; the authors' code 40000)."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """Continuous: bf16 autocast of the critic on the 3N proposals only; auto = on CUDA or a CPU with AMX."""


def cql_penalty(q_ood: torch.Tensor, q_data: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """mean_B[ T logsumexp_j(q_ood[.., b, j] / T) - q_data[.., b] ];  q_ood [.., B, M], q_data [.., B].

    Leading dims (the critic ensemble) are summed, as each critic gets its own penalty.
    """
    lse = temperature * torch.logsumexp(q_ood / temperature, dim=-1)  # [.., B]
    return (lse - q_data).mean(-1).sum()


class CQL(Policy):
    algo = "cql"

    def __init__(self, config: CQLConfig, spec: PolicySpec, total_steps: int) -> None:
        super().__init__(config, spec, total_steps)
        hidden = tuple(config.hidden)
        self.critic = Critic(spec.obs_dim, spec.act_dim, spec.discrete, n=2, hidden=hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers["critic"] = adam(self.critic.parameters(), config.critic_lr)
        if not spec.discrete:
            self.actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, hidden)
            self.log_alpha = torch.nn.Parameter(torch.zeros(()))
            self.optimizers["actor"] = adam(self.actor.parameters(), config.actor_lr)
            self.optimizers["alpha"] = adam([self.log_alpha], config.alpha_lr)
            self.target_entropy = (
                -float(spec.act_dim) if config.target_entropy is None else config.target_entropy
            )

    def phases(self) -> list[Phase]:
        targets = (("critic_target", "critic"),)
        if self.spec.discrete:
            return [Phase("discrete_loss", ("critic",), targets=targets)]
        # the TD target samples the actor after its step, so actor and temperature step first
        return [Phase("actor_losses", ("actor", "alpha")), Phase("critic_loss", ("critic",), targets=targets)]

    def draw_noise(self, batch: Transitions, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        if self.spec.discrete:
            return {}
        obs = batch.observations
        B, A, N = obs.shape[0], batch.actions.shape[1], self.config.n_actions
        kw = dict(generator=generator, dtype=obs.dtype, device=obs.device)
        return {
            "eps_obs": torch.randn(B, N + 1, A, **kw),  # pi(.|s): the actor loss's sample and N proposals
            "eps_next": torch.randn(B, N + 1, A, **kw),  # pi(.|s'): the TD target's sample and N proposals
            "uniform": torch.rand(B, N, A, **kw),  # U(0, 1), mapped to U(-1, 1) proposals
        }

    update = Policy.run_phases

    def discrete_loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        cfg = self.config
        with torch.no_grad():
            next_q = (
                self.critic_target.all_actions(batch.next_observations).min(0).values.max(-1).values
            )  # [B]
            y = batch.rewards + cfg.gamma * (1.0 - batch.terminals) * next_q
        q_all = self.critic.all_actions(batch.observations)  # [2, B, A]
        q = q_all.gather(-1, batch.actions.view(1, -1, 1).expand(q_all.shape[0], -1, 1)).squeeze(-1)  # [2, B]
        td = F.mse_loss(q, y.expand_as(q), reduction="none").mean(-1).sum()  # summed over the twins, as CORL
        penalty = cql_penalty(q_all, q, cfg.temperature)
        loss = td + cfg.cql_alpha * penalty
        return loss, {"cql/td_loss": td, "cql/penalty": penalty, "cql/q_mean": q.mean()}, carry

    def actor_losses(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """SAC's actor and temperature losses (disjoint parameters); carries the detached proposals pi(.|s)."""
        cfg = self.config
        obs, act, N = batch.observations, batch.actions, cfg.n_actions  # [B, D], [B, A]
        alpha = self.log_alpha.exp().detach()
        # one actor pass per state: sample 0 for the actor loss, samples 1..N (detached) are CQL proposals
        a_obs, logp_obs = self.actor.sample(obs, N + 1, noise["eps_obs"])  # [B, N+1, A], [B, N+1]
        pi, logp = a_obs[:, 0], logp_obs[:, 0]  # [B, A], [B]
        if self.step <= cfg.bc_steps:
            actor_loss = (alpha * logp - self.actor.log_prob(obs, act)).mean()
        else:
            with frozen(self.critic):  # the actor's gradient passes through Q; no critic weight grads
                actor_loss = (alpha * logp - self.critic(obs, pi).min(0).values).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        carry = {"a_cur": a_obs[:, 1:].detach(), "logp_cur": logp_obs[:, 1:].detach(),  # [B, N, A], [B, N]
                 "cql/actor_loss": actor_loss.detach(), "cql/alpha": alpha}
        return actor_loss + alpha_loss, {}, carry

    def critic_loss(
        self, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        cfg = self.config
        obs, act, next_obs = batch.observations, batch.actions, batch.next_observations  # [B, D], [B, A]
        B, A, N = act.shape[0], act.shape[1], cfg.n_actions
        a_cur, logp_cur = carry["a_cur"], carry["logp_cur"]
        # TD target and the remaining proposals for the log-sum-exp (uniform and pi(.|s'))
        with torch.no_grad():
            a_nx, logp_nx = self.actor.sample(next_obs, N + 1, noise["eps_next"])  # [B, N+1, A], [B, N+1]
            next_pi, a_next, logp_next = a_nx[:, 0], a_nx[:, 1:], logp_nx[:, 1:]
            y = (
                batch.rewards
                + cfg.gamma * (1.0 - batch.terminals) * self.critic_target(next_obs, next_pi).min(0).values
            )
            obs_rep = obs.unsqueeze(1).expand(B, N, -1)  # [B, N, D]
            a_rand = noise["uniform"] * 2.0 - 1.0  # [B, N, A]
        obs_prop = torch.cat([obs_rep, obs_rep, obs_rep], 1)  # [B, 3N, D]
        act_prop = torch.cat([a_rand, a_cur, a_next], 1)  # [B, 3N, A]
        if bf16_enabled(cfg.bf16, obs.device):
            q = self.critic(obs, act)  # [2, B], float32: the TD term needs its precision
            with torch.autocast(obs.device.type, dtype=torch.bfloat16):
                q_prop = self.critic(obs_prop, act_prop).float()  # [2, B, 3N]
        else:  # one pass over data and proposals
            q_all = self.critic(
                torch.cat([obs.unsqueeze(1), obs_prop], 1), torch.cat([act.unsqueeze(1), act_prop], 1)
            )  # [2, B, 1+3N]
            q, q_prop = q_all[..., 0], q_all[..., 1:]
        log_uniform = A * math.log(0.5)  # density of U(-1, 1)^A
        q_ood = torch.cat(
            [
                q_prop[..., :N] - log_uniform,
                q_prop[..., N : 2 * N] - logp_cur,
                q_prop[..., 2 * N :] - logp_next,
            ],
            dim=-1,
        )  # [2, B, 3N]
        td = F.mse_loss(q, y.expand_as(q), reduction="none").mean(-1).sum()  # summed over the twins, as CORL
        penalty = cql_penalty(q_ood, q, cfg.temperature)
        metrics = {
            "cql/td_loss": td,
            "cql/penalty": penalty,
            "cql/actor_loss": carry["cql/actor_loss"],
            "cql/alpha": carry["cql/alpha"],
            "cql/q_mean": q.mean(),
        }
        return td + cfg.cql_alpha * penalty, metrics, carry

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.spec.discrete:
            return self.critic.all_actions(obs).min(0).values.argmax(-1)
        return self.actor.mode(obs)
