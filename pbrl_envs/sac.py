"""Soft Actor-Critic for training the suite's behaviour policies (online, continuous actions).

Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018), with automatic entropy tuning:

    critic:  L_Q   = E[(Q_i(s,a) - y)^2],  y = r + gamma (1 - d) (min_j Qbar_j(s', a') - alpha log pi(a'|s')),
             a' ~ pi(.|s')                                                                  (eq. 5-6)
    actor:   L_pi  = E[alpha log pi(a|s) - min_j Q_j(s, a)],  a = tanh(mu + sigma * eps)   (eq. 7, 18)
    alpha:   L_a   = E[-log_alpha * (log pi(a|s) + H_target)],  H_target = -|A|            (eq. 17-18)

The twin critics are ONE ensemble tensor op: weights [2, in, out] and `torch.baddbmm`, so both critics run in a single
matmul per layer instead of a Python loop over members (the same holds for their target copies). The actor is kept
small and separate: it is the only part a checkpoint stores (`Actor.state_dict()`, well under 1 MB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (defaults: the paper's MuJoCo settings)."""

    hidden: int = 256
    """Width of the two hidden layers of actor and critics."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of log(alpha)."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""


# ---------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy: obs [B, O] -> action in [low, high]^A."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, act_low, act_high) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 2 * act_dim)
        low = torch.as_tensor(act_low, dtype=torch.float32)
        high = torch.as_tensor(act_high, dtype=torch.float32)
        # buffers, so the action range travels inside the checkpoint
        self.register_buffer("act_scale", (high - low) / 2)
        self.register_buffer("act_bias", (high + low) / 2)

    def dist_params(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_std = self.head(self.net(obs)).chunk(2, dim=-1)  # [B, A] each
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-probability: (action [B, A], log_prob [B])."""
        mu, log_std = self.dist_params(obs)
        std = log_std.exp()
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + std * eps  # pre-squash sample
        a = torch.tanh(u)
        # log N(u; mu, std) - sum log(1 - tanh(u)^2), the latter in the stable form 2(log2 - u - softplus(-2u))
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return a * self.act_scale + self.act_bias, log_prob - torch.log(self.act_scale).sum()

    def act(self, obs: torch.Tensor, deterministic: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """Action only: tanh(mu) when deterministic, a sample otherwise."""
        if deterministic:
            mu, _ = self.dist_params(obs)
            return torch.tanh(mu) * self.act_scale + self.act_bias
        return self.sample(obs, generator)[0]


class TwinCritic(nn.Module):
    """Two Q-networks as one batched MLP: (obs [B, O], act [B, A]) -> Q [2, B]."""

    def __init__(self, in_dim: int, hidden: int, members: int = 2) -> None:
        super().__init__()
        dims = [in_dim, hidden, hidden, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            # nn.Linear's default init, drawn per member
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(members, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(members, 1, d_out).uniform_(-bound, bound)))
        self.members = members

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)  # [B, O+A]
        x = x.unsqueeze(0).expand(self.members, *x.shape)  # [2, B, O+A], a view
        n = len(self.weights)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)  # [2, B, H]: both members in one batched matmul
            if i < n - 1:
                x = F.relu(x)
        return x.squeeze(-1)  # [2, B]


# ---------------------------------------------------------------------------------------------------------------
# Pure losses
# ---------------------------------------------------------------------------------------------------------------


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over members of the mean squared TD error. q [2, B], target [B] (no grad)."""
    return (q - target.unsqueeze(0)).pow(2).mean(-1).sum()


def soft_td_target(
    reward: torch.Tensor, terminal: torch.Tensor, q_next: torch.Tensor, log_prob_next: torch.Tensor,
    alpha: torch.Tensor, gamma: float,
) -> torch.Tensor:
    """y = r + gamma (1 - d) (min_j Qbar_j(s', a') - alpha log pi(a'|s')).  All [B] except q_next [2, B]."""
    return reward + gamma * (1.0 - terminal) * (q_next.min(0).values - alpha * log_prob_next)


def actor_loss(q_pi: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[alpha log pi(a|s) - min_j Q_j(s, a)].  q_pi [2, B], log_prob [B]."""
    return (alpha * log_prob - q_pi.min(0).values).mean()


def alpha_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """E[-log_alpha (log pi + H_target)].  log_prob [B] (no grad)."""
    return -(log_alpha * (log_prob + target_entropy)).mean()


# ---------------------------------------------------------------------------------------------------------------
# Agent
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A batch of transitions; all float32 tensors."""

    obs: torch.Tensor  # [B, O]
    act: torch.Tensor  # [B, A]
    reward: torch.Tensor  # [B]
    next_obs: torch.Tensor  # [B, O]
    terminal: torch.Tensor  # [B]: 1.0 on a true termination (not a time limit)


class SAC:
    """Actor, twin critics with targets, learned temperature; `update(batch)` does one gradient step of each."""

    def __init__(
        self, obs_dim: int, act_dim: int, act_low, act_high, config: SACConfig = SACConfig(),
        device: str | torch.device = "cpu", capturable: bool = False,
    ) -> None:
        """`capturable=True` makes the optimisers safe to record in a CUDA graph (state on the device)."""
        self.config = config
        self.device = torch.device(device)
        self.actor = Actor(obs_dim, act_dim, config.hidden, act_low, act_high).to(self.device)
        self.critic = TwinCritic(obs_dim + act_dim, config.hidden).to(self.device)
        self.critic_target = TwinCritic(obs_dim + act_dim, config.hidden).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(config.init_alpha), device=self.device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        kw = {"foreach": True, "capturable": capturable}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, **kw)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, **kw)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=config.alpha_lr, **kw)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())

    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient step of critics, actor and temperature; the losses as floats."""
        return {k: float(v) for k, v in self.update_tensors(batch).items()}

    def update_tensors(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`update` without any host synchronisation (so it can be recorded in a CUDA graph)."""
        cfg = self.config
        alpha = self.log_alpha.exp().detach()

        # critics
        with torch.no_grad():
            a_next, logp_next = self.actor.sample(batch.next_obs)  # [B, A], [B]
            q_next = self.critic_target(batch.next_obs, a_next)  # [2, B]
            y = soft_td_target(batch.reward, batch.terminal, q_next, logp_next, alpha, cfg.gamma)  # [B]
        q = self.critic(batch.obs, batch.act)  # [2, B]
        loss_q = critic_loss(q, y)
        self.critic_opt.zero_grad(set_to_none=True)
        loss_q.backward()
        self.critic_opt.step()

        # actor (critic weights frozen for this backward, so no grads are computed for them)
        self.critic.requires_grad_(False)
        a_pi, logp = self.actor.sample(batch.obs)
        loss_pi = actor_loss(self.critic(batch.obs, a_pi), logp, alpha)
        self.actor_opt.zero_grad(set_to_none=True)
        loss_pi.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)

        # temperature
        loss_a = alpha_loss(self.log_alpha, logp.detach(), self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        loss_a.backward()
        self.alpha_opt.step()

        self._soft_update()

        return {
            "sac/critic_loss": loss_q.detach() / 2,
            "sac/actor_loss": loss_pi.detach(),
            "sac/alpha": alpha,
            "sac/entropy": -logp.detach().mean(),
        }

    @torch.no_grad()
    def _soft_update(self) -> None:
        """Polyak averaging theta' <- theta' + tau (theta - theta') of all target tensors in one fused call."""
        torch._foreach_lerp_(self._target_params, self._critic_params, self.config.tau)

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
