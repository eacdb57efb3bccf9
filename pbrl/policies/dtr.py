"""DTR: Decision Transformer + TD learning with in-dataset trajectory return regularization
(Tu et al., AAAI 2025, arXiv 2412.09104); with `eta_schedule="constant"` it is QT, the Q-value regularized
transformer (Hu et al., ICML 2024) that DTR builds on.

Actor: the Decision Transformer of `dt.py` on (R^, s, a) tokens with a timestep embedding. Critic: twin MLPs
Q_k(s, a) (3x256, Mish) with an n-step target inside the K-step window (t = the window's last position):
    Q^(s_i, a_i) = sum_{j=i}^{t-1} gamma^{j-i} r_j + gamma^{t-i} min_k Q'_k(s_t, a^_t)
a^_t from an EMA copy of the actor; position t itself is left out of the critic loss. Where step t ends its episode
in a terminal state, min_k Q'_k(s_t, a^_t) is replaced by r_t and position t is fitted (`terminal_targets`): the
paper's equation omits it; the release masks the bootstrap with `not_done` but leaves out r_t and step t.
Policy loss:  L_pi = L_DT - lambda(step) mean_i Q(s_i, a^_i),  lambda = eta / E|Q(s, a^)|  (|Q| detached),
    eta = step * eta_max / max_step (DTR's linear ramp) or eta = eta_max (QT).

Paper vs release (switches; defaults follow the paper):
- `state_loss`: paper L_DT = sum ||s^ - s||^2 + ||a^ - a||^2 (s^ predicted from the action token: the next state);
  release: action MSE only.
- `q_term`: paper -Q_1(s, a^) / mean|Q_1|; release -Q_i(s, a^) / mean|Q_j| with (i, j) = (1, 2) or (2, 1) at random.
- `inference`: paper: K=5 return targets {0.5, 0.75, 1, 1.5, 2} x Return_max, one batch, argmax of min_k Q_k;
  release: each target x10 = 50 candidates, candidates 5..49 get N(0, 0.1^2) noise on the current scaled RTG token,
  the action sampled from softmax(min_k Q'_k) of the target critic.
The return-to-go decreases by R_0 / T_max per step (no reward model at test time). Trajectories are the
dataset's real episodes (never the release's fixed 1000-step chunks).
Discrete actions: categorical actor, critics Q(s, .), the policy's Q is E_{a~pi}[Q(s, a)].
Defaults: the release's hyper-parameters (K 20, embed 256, 4 layers, 4 heads, batch 256, ...).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pbrl.data import EpisodeDataset
from pbrl.policies.base import Policy, PolicySpec
from pbrl.policies.dt import (
    Context,
    TransformerConfig,
    WindowBatch,
    WindowSampler,
    attention_bias,
    autocast_device_types,
    build_transformer,
    dt_action_loss,
    masked_mean,
    rtg_schedule,
    run_length_default,
)
from pbrl.policies.nets import Critic, copy_weights, cosine_lr, frozen, soft_update
from pbrl.utils import adam


@dataclass
class DTRConfig(TransformerConfig):
    """DTR / QT (the DTR release's settings; eta_max 3.0 is its hopper-medium-replay value). The transformer's
    fields are TransformerConfig's; five of its defaults are rebound here to the release's transformer."""

    embed_dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_inner: int | None = 1024
    activation: str = "relu"
    batch_size: int = 256
    """Windows per update."""
    lr: float = 3e-4
    """Actor AdamW learning rate (cosine-decayed to 0 over training)."""
    weight_decay: float = 1e-4
    """Actor weight decay."""
    grad_clip: float = 9.0
    """Actor gradient-norm clip."""
    critic_lr: float = 3e-4
    """Critic Adam learning rate."""
    critic_hidden: tuple[int, ...] = (256, 256, 256)
    """Critic MLP hidden sizes."""
    critic_activation: str = "mish"
    """Critic activation."""
    gamma: float = 0.99
    """Discount of the n-step target."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    ema_decay: float = 0.995
    """Decay of the EMA actor that proposes target actions."""
    ema_start: int | None = None
    """Before this many updates the EMA actor is a copy of the actor; None = the release's 1000, cut to 10% of a
    run shorter than 10k updates (`run_length_default`). The eta ramp and the actor's cosine schedule already
    run over the run's own length."""
    ema_every: int = 5
    """EMA update period (updates)."""
    eta_max: float = 3.0
    """Weight of the policy-improvement term (its final value under the linear ramp)."""
    eta_schedule: Literal["linear", "constant"] = "linear"
    """linear: eta = step * eta_max / max_step (DTR); constant: eta = eta_max (QT)."""
    state_loss: bool = True
    """Add the next-state prediction error to L_DT (paper); False = action loss only (release)."""
    q_term: Literal["paper", "release"] = "paper"
    """paper: -Q_1 / mean|Q_1|; release: -Q_i / mean|Q_j| with the twins' roles swapped at random."""
    rtg_scale: float = 10.0
    """Returns-to-go are divided by this before embedding."""
    inference: Literal["paper", "release"] = "paper"
    """paper: argmax_Q over the return targets; release: sample softmax(Q) over noisy copies of them."""
    return_multipliers: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    """Initial return targets as multiples of the dataset's best episode return."""
    release_copies: int = 10
    """release inference: candidates per return target."""
    release_rtg_noise: float = 0.1
    """release inference: std of the noise on the current scaled RTG token of the extra candidates."""
    terminal_targets: bool = True
    """Where a window's last step ends its episode in a terminal state (a fall, not a time limit), its value is its
    reward alone and that step is fitted too (`nstep_window_targets`), as the release's `not_done` does; False =
    bootstrap from every window's last step (pbrl before this switch: the first QT / DTR records of the plateau
    Table 1, kept under results/records/dtr_table1-plateau-bootstrap)."""
    ema_bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast of the EMA actor's no-grad forward, which only proposes the bootstrap action a^_t; auto = on
    CUDA or an AMX CPU (the actor itself trains at `bf16`)."""


def nstep_window_targets(
    rewards: torch.Tensor, bootstrap: torch.Tensor, gamma: float, terminal: torch.Tensor | None = None
) -> torch.Tensor:
    """Q^_i = sum_{j=i}^{K-2} gamma^{j-i} r_j + gamma^{K-1-i} b;  rewards [B, K], bootstrap [B] -> [B, K].

    b = bootstrap = min_k Q'_k(s_t, a^_t), or r_t where `terminal` [B] (bool) says the window's last step t ends its
    episode in a terminal state: then Q(s_t, a_t) = r_t, with nothing after it to bootstrap from (the QT / DTR
    release masks the bootstrap there with `not_done`, and drops r_t). Windows are left-padded (padding has r = 0 and only precedes
    valid steps), so position K-1 is always the window's last real step t. One matmul with a discount matrix built
    once per (K, gamma, device, dtype).
    """
    if terminal is not None:
        bootstrap = torch.where(terminal, rewards[:, -1], bootstrap)
    w, g = _nstep_weights(rewards.shape[-1], float(gamma), rewards.device, rewards.dtype)
    return rewards @ w + g * bootstrap[:, None]


@functools.lru_cache(maxsize=16)
def _nstep_weights(
    K: int, gamma: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [K(j), K(i)] with W[j, i] = gamma^{j-i} for i <= j <= K-2, else 0;  gamma^{K-1-i} [K(i)])."""
    i = torch.arange(K, device=device)
    d = (i[None, :] - i[:, None]).to(dtype)  # d[i, j] = j - i
    w = torch.where((d >= 0) & (i[None, :] <= K - 2), gamma**d, torch.zeros_like(d))  # [K(i), K(j)]
    return w.T.contiguous(), gamma ** (K - 1 - i).to(dtype)


def policy_q_term(q_num: torch.Tensor, q_den: torch.Tensor, mask: torch.Tensor, eta: float) -> torch.Tensor:
    """-eta mean_i Q_a(s_i, a^_i) / mean|Q_b(s, a^)| (detached) over valid positions;  q_num = Q_a, q_den = Q_b [B, K].

    Paper: a = b = 1. Release: (a, b) = (1, 2) or (2, 1) at random.
    """
    return -eta * masked_mean(q_num, mask) / masked_mean(q_den.abs(), mask).detach().clamp(min=1e-6)


def select_candidate(q: torch.Tensor, sample: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the chosen candidate per environment; q [n, C] -> [n]: argmax, or a sample of softmax(q)."""
    if not sample:
        return q.argmax(-1)
    return torch.multinomial(F.softmax(q.float(), -1), 1, generator=generator).squeeze(-1)


class DTR(Policy):
    algo = "dtr"

    def __init__(self, config: DTRConfig, spec: PolicySpec, total_steps: int) -> None:
        config = run_length_default(config, "ema_start", 1000, total_steps)
        super().__init__(config, spec, total_steps)
        self.actor = build_transformer(config, spec)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.actor_ema.bf16_device_types = autocast_device_types(config.ema_bf16)
        self.critic = Critic(
            spec.obs_dim,
            spec.act_dim,
            spec.discrete,
            2,
            tuple(config.critic_hidden),
            config.critic_activation,
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.optimizers["actor"] = adam(
            self.actor.parameters(), config.lr, weight_decay=config.weight_decay, decoupled=True
        )
        self.optimizers["critic"] = adam(self.critic.parameters(), config.critic_lr)
        self.context: Context | None = None

    def make_sampler(self, dataset: EpisodeDataset, generator: torch.Generator) -> Callable[[], WindowBatch]:
        cfg = self.config
        return WindowSampler(self, dataset, cfg.context, cfg.batch_size, cfg.rtg_scale, generator)

    def _q(self, critic: Critic, states: torch.Tensor, out: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        """Q of the actor's output at each position [2, B, K]: Q(s, a^), or E_{a~softmax(logits)} Q(s, a).

        first_only: Q_1 alone [1, B, K], from the first member's weights (views, so gradients still reach `out`):
        the paper's policy term reads only Q_1, and the twin's forward and backward would be a third of the pass
        through the critic that the actor's loss pays for. The inputs are laid out as `Critic.forward` does."""
        if first_only:
            first = {k: v[:1] for k, v in critic.net.named_parameters()}  # [1, ...] of every [2, ...] weight
            lead = states.shape[:-1]
            x = states if self.spec.discrete else torch.cat([states, out], dim=-1)
            q = torch.func.functional_call(critic.net, first, (x.reshape(1, -1, x.shape[-1]),))  # [1, B*K, A | 1]
            q = q.reshape(1, *lead, q.shape[-1])
            return (q * F.softmax(out, -1)).sum(-1) if self.spec.discrete else q[..., 0]
        if self.spec.discrete:
            return (critic.all_actions(states) * F.softmax(out, -1)).sum(-1)
        return critic(states, out)

    def eta(self) -> float:
        cfg = self.config
        if cfg.eta_schedule == "constant":
            return cfg.eta_max
        return cfg.eta_max * min(self.step, self.total_steps) / max(self.total_steps, 1)

    def update(self, batch: WindowBatch) -> dict[str, float]:
        cfg = self.config
        self.step += 1
        s, a, m = batch.states, batch.actions, batch.mask  # [B, K, D], [B, K, A] | [B, K], [B, K]
        bias = attention_bias(m)  # [B, 1, 3K, 3K], shared by the EMA actor and the actor

        # critic: n-step targets inside the window, bootstrapped from the EMA actor's action at the last step
        with torch.no_grad():
            out_ema, _ = self.actor_ema(batch.rtg, s, a, batch.timesteps, m, "last_action", bias)  # [B, 1, A]
            boot = self._q(self.critic_target, s[:, -1:], out_ema).min(0).values[:, 0]  # [B]
            done = batch.terminals[:, -1] > 0 if cfg.terminal_targets else None  # [B]
            target = nstep_window_targets(batch.rewards, boot, cfg.gamma, done)  # [B, K]
        q = self.critic(s, a)  # [2, B, K]
        fit = m.clone()
        fit[:, -1] = False if done is None else done  # the last step only bootstraps, unless it is terminal (Q = r)
        critic_loss = masked_mean((q - target).pow(2), fit).sum()
        opt = self.optimizers["critic"]
        opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        opt.step()

        # actor: L_DT - lambda * Q(s, a^)
        out, s_next = self.actor(batch.rtg, s, a, batch.timesteps, m, "both" if cfg.state_loss else "actions", bias)
        dt_loss = dt_action_loss(out, a, m, self.spec.discrete)
        if cfg.state_loss:
            dt_loss = dt_loss + masked_mean((s_next - batch.next_states).pow(2).mean(-1), m)
        with frozen(self.critic):
            q_pi = self._q(self.critic, s, out, first_only=cfg.q_term == "paper")  # [2 | 1, B, K]
        eta = self.eta()
        if cfg.q_term == "release" and torch.rand(()) < 0.5:
            q_loss = policy_q_term(q_pi[1], q_pi[0], m, eta)
        elif cfg.q_term == "release":
            q_loss = policy_q_term(q_pi[0], q_pi[1], m, eta)
        else:
            q_loss = policy_q_term(q_pi[0], q_pi[0], m, eta)
        actor_loss = dt_loss + q_loss
        opt = self.optimizers["actor"]
        opt.param_groups[0]["lr"] = cosine_lr(cfg.lr, self.step - 1, self.total_steps)
        opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.grad_clip)
        opt.step()

        soft_update(self.critic_target, self.critic, cfg.tau)
        if self.step < cfg.ema_start:
            copy_weights(self.actor_ema, self.actor)
        elif self.step % cfg.ema_every == 0:
            soft_update(self.actor_ema, self.actor, 1.0 - cfg.ema_decay)
        # one device-to-host copy for the logged values (each .item() would wait for the device on its own)
        logged = torch.stack([critic_loss, dt_loss, q_loss, q.mean()]).detach().tolist()
        return {
            "dtr/critic_loss": logged[0],
            "dtr/dt_loss": logged[1],
            "dtr/q_loss": logged[2],
            "dtr/eta": eta,
            "dtr/q_mean": logged[3],
        }

    # ---------------------------------------------------------------- acting
    def reset(self, num_envs: int) -> None:
        self.context = Context.for_spec(num_envs, self.config.context, self.spec, self.device)

    def candidate_returns(self) -> torch.Tensor:
        """Initial return targets R_0 of all candidates [C] (dataset units)."""
        cfg = self.config
        r0 = torch.tensor(cfg.return_multipliers, device=self.device) * self.spec.return_max
        return r0.repeat(cfg.release_copies) if cfg.inference == "release" else r0

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if self.context is None or self.context.states.shape[0] != obs.shape[0]:
            self.reset(obs.shape[0])
        ctx = self.context
        ctx.push(obs)
        n, K = ctx.mask.shape
        r0 = self.candidate_returns()
        C = len(r0)
        rtg = rtg_schedule(
            r0, ctx.timesteps, ctx.mask, self.spec.max_episode_length, cfg.rtg_scale
        )  # [n, C, K]
        release = cfg.inference == "release"
        if release:
            extra = torch.arange(C, device=self.device) >= len(cfg.return_multipliers)  # [C]
            rtg[:, :, -1] += torch.randn(n, C, device=self.device) * cfg.release_rtg_noise * extra
        rep = lambda x: x.unsqueeze(1).expand(n, C, *x.shape[1:]).reshape(n * C, *x.shape[1:])  # noqa: E731
        out, _ = self.actor(
            rtg.reshape(n * C, K), rep(ctx.states), rep(ctx.actions), rep(ctx.timesteps), rep(ctx.mask), "last_action"
        )
        last = out[:, -1]  # [n*C, A]
        cand = last.argmax(-1) if self.spec.discrete else last  # [n*C] | [n*C, A]
        critic = self.critic_target if release else self.critic
        q = critic(rep(ctx.states)[:, -1], cand).min(0).values.view(n, C)  # [n, C]
        pick = select_candidate(q, sample=release)  # [n]
        cand = cand.view(n, C, *cand.shape[1:])
        a = cand[torch.arange(n, device=self.device), pick]
        ctx.set_action(a)
        return a
