"""Decision Transformer (Chen et al., NeurIPS 2021, arXiv 2106.01345) and the sequence machinery DTR reuses.

A GPT-2 style causal transformer reads per-step tokens (R^_t, s_t, a_t), R^_t the return-to-go, each token plus a
learned timestep embedding (no positional embedding), and predicts a_t from the output at s_t's token:
    L_DT = mean over valid window positions of ||a^_t - a_t||^2   (continuous, tanh head)
                                        or   -log pi(a_t | ...)   (discrete, categorical head)
Windows of K steps never cross an episode end (episodes are split at real terminations and truncations); the
window start is uniform over all transitions (= trajectories sampled proportionally to their length) and short
windows are left-padded and masked.
At test time the return-to-go starts at a target R_0 and is decremented linearly, R^_t = R_0 (1 - t / T_max),
T_max the longest dataset episode: with learned rewards there is no reward at test time to subtract (DTR, sec. 5).
Defaults: CORL's `dt.py` D4RL settings (embed 128, 3 layers, 1 head, K 20, batch 64, lr 1e-4, warmup 10k; the
warm-up is cut to 10% of a run shorter than 100k updates unless it is set).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbrl.data import EpisodeDataset
from pbrl.policies.base import ObservationConfig, Policy, PolicySpec
from pbrl.policies.nets import Dropout, activation
from pbrl.utils import adam, bf16_enabled


@dataclass
class TransformerConfig(ObservationConfig):
    """The trajectory transformer and its K-step windows, shared by DT and DTR (defaults: CORL's DT; DTRConfig
    rebinds five of them to the DTR release's). Checkpoints keep these as flat fields of the algorithm's config."""

    context: int = 20
    """Window length K (steps; 3K tokens)."""
    embed_dim: int = 128
    """Transformer width."""
    n_layers: int = 3
    """Transformer blocks."""
    n_heads: int = 1
    """Attention heads."""
    n_inner: int | None = None
    """MLP width inside a block (None = 4 * embed_dim)."""
    activation: str = "gelu"
    """MLP activation inside a block."""
    dropout: float = 0.1
    """Dropout on embeddings, attention and residuals."""
    max_ep_len: int = 1000
    """Size of the timestep embedding (raised to the longest dataset episode if shorter)."""
    bf16: Literal["auto", "on", "off"] = "auto"
    """bf16 autocast of the trained transformer (float32 weights and outputs); auto = on CUDA only (on = also on
    CPU: fast with AMX units, less precise)."""


@dataclass
class DTConfig(TransformerConfig):
    """Decision Transformer (CORL D4RL defaults); the transformer's fields are TransformerConfig's."""

    batch_size: int = 64
    """Windows per update."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int | None = None
    """Linear learning-rate warmup (updates); None = CORL's 10k, cut to 10% of a shorter run (`run_length_default`:
    a 1000-update run would otherwise end at a tenth of its learning rate)."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    rtg_scale: float = 1000.0
    """Returns-to-go are divided by this before embedding."""
    target_return: float | None = None
    """Evaluation return target R_0 (dataset units); None = the dataset's best episode return."""


def autocast_device_types(setting: str, auto_on_cpu: bool = True) -> frozenset[str]:
    """The device types on which a `bf16: auto|on|off` setting turns bf16 autocast on, resolved once with
    `pbrl.utils.bf16_enabled` (auto = CUDA or an AMX CPU). Both types are resolved because a policy is built on
    CPU and moved to its device afterwards. `auto_on_cpu=False` keeps the trained transformer's documented auto
    (CUDA only): an AMX CPU turns it on only with `on`. Measured on a CPU without AMX (avx512_bf16), DT at the
    learning test's size (2000 updates, Pendulum): normalized score 89.6 / 76.4 in float32, 89.7 / 73.8 under bf16
    (seeds 0 / 1), 59 vs 49-58 updates/s; so bf16 did not learn clearly worse there, and its speed-up on AMX
    could not be measured on that machine: auto was left as documented."""
    types = frozenset(t for t in ("cpu", "cuda") if bf16_enabled(setting, torch.device(t)))
    return types if auto_on_cpu or setting != "auto" else types - {"cpu"}


_SAID: set[str] = set()


def run_length_default(config: object, field: str, default: int, total_steps: int, fraction: float = 0.1) -> object:
    """`config` with `field` resolved when it is None (= run-length aware): min(default, fraction x total_steps),
    at least 1; a value the user set is kept. Schedules counted in updates (DT's warm-up, DTR's `ema_start`) were
    tuned for 1M-update runs: a short run would spend all of it warming up. The effective value is stored in the
    returned config (so checkpoints record it) and, when it differs from the default, printed once per process."""
    if getattr(config, field) is not None:
        return config
    value = max(1, min(default, int(fraction * total_steps)))
    if value != default:
        say_once(f"pbrl: {type(config).__name__}.{field} = {value} ({fraction:.0%} of the run's {total_steps} updates; "
                 f"the default {default} is for runs of {int(default / fraction)}+ updates; set {field} to choose)")
    return dataclasses.replace(config, **{field: value})


def say_once(line: str) -> None:
    """Print a note about a resolved or suspicious setting to stderr, once per process."""
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- pure functions
def interleave_tokens(r: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """[B, K, E] x3 -> [B, 3K, E] in the order R_0, s_0, a_0, R_1, s_1, a_1, ..."""
    B, K, E = s.shape
    return torch.stack([r, s, a], dim=2).reshape(B, 3 * K, E)


def token_attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """Step mask [B, K] (False = left padding) -> boolean attention mask [B, 1, 3K, 3K] (True = may attend).

    Causal, padded keys hidden; every token may see itself so fully padded rows stay finite.
    """
    B, K = mask.shape
    keys = mask.repeat_interleave(3, dim=1)  # [B, 3K]
    L = 3 * K
    causal = torch.ones(L, L, dtype=torch.bool, device=mask.device).tril()
    allowed = causal & keys[:, None, :]
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=mask.device)
    return allowed.unsqueeze(1)


def attention_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`token_attention_mask` as an additive bias [B, 1, 3K, 3K]: 0 where a token may attend, -inf elsewhere."""
    allowed = token_attention_mask(mask)
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, float("-inf"))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [..., B, K] over positions where mask [B, K] is True."""
    m = mask.to(x.dtype)
    return (x * m).sum((-2, -1)) / m.sum().clamp(min=1.0)


def dt_action_loss(pred: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, discrete: bool) -> torch.Tensor:
    """Masked squared error (pred/act [B, K, A]) or cross-entropy (logits [B, K, A], ids [B, K])."""
    if discrete:
        nll = F.cross_entropy(pred.flatten(0, 1), act.flatten(), reduction="none").view(act.shape)  # [B, K]
        return masked_mean(nll, mask)
    return masked_mean((pred - act).pow(2).mean(-1), mask)


# ---------------------------------------------------------------------------------------------- model
class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block: softmax(q k^T / sqrt(d) + bias) v with dropout on the attention weights."""

    def __init__(self, dim: int, heads: int, inner: int, act: str, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, inner), activation(act)(), nn.Linear(inner, dim), Dropout(dropout)
        )
        self.attn_drop, self.resid_drop = Dropout(dropout), Dropout(dropout)

    def forward(
        self, x: torch.Tensor, attn_bias: torch.Tensor, rows: slice | torch.Tensor = slice(None)
    ) -> torch.Tensor:
        """x [B, L, E], additive bias [B, 1, L, L] (0 = may attend, -inf = hidden) -> [B, L', E] at the query
        positions `rows` only (keys and values are all L positions)."""
        B, L, E = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, E // self.heads).permute(2, 0, 3, 1, 4)
        q, attn_bias, x = q[:, :, rows], attn_bias[:, :, rows], x[:, rows]  # [B, H, L', E/H], .., [B, L', E]
        if self.training and self.dropout > 0 and x.device.type == "cpu":
            # scaled_dot_product_attention's CPU path with dropout is its math path with a Bernoulli draw per
            # weight (a third of a small DT update); the same maths with the cheap 16-bit-mask dropout
            w = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1)) + attn_bias  # [B, H, L', L]
            y = torch.matmul(self.attn_drop(w.softmax(-1)), v)  # [B, H, L', E/H]
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
            )  # [B, H, L', E/H]
        x = x + self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, x.shape[1], E)))
        return x + self.mlp(self.ln2(x))


class TrajectoryTransformer(nn.Module):
    """(R^, s, a) tokens + timestep embedding -> action at each state token, next state at each action token."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        discrete: bool,
        embed_dim: int,
        n_layers: int,
        n_heads: int,
        n_inner: int | None,
        act: str,
        dropout: float,
        max_ep_len: int,
        bf16_device_types: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__()
        self.discrete, self.max_ep_len = discrete, max_ep_len
        self.bf16_device_types = bf16_device_types  # where forward runs under bf16 autocast (resolved setting)
        self.embed_timestep = nn.Embedding(max_ep_len, embed_dim)
        self.embed_return = nn.Linear(1, embed_dim)
        self.embed_state = nn.Linear(obs_dim, embed_dim)
        self.embed_action = nn.Embedding(act_dim, embed_dim) if discrete else nn.Linear(act_dim, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(embed_dim, n_heads, n_inner or 4 * embed_dim, act, dropout) for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(embed_dim)
        self.predict_action = nn.Linear(embed_dim, act_dim)
        self.predict_state = nn.Linear(embed_dim, obs_dim)

    def forward(
        self,
        rtg: torch.Tensor,  # [B, K]
        states: torch.Tensor,  # [B, K, D]
        actions: torch.Tensor,  # [B, K, A] float or [B, K] long
        timesteps: torch.Tensor,  # [B, K] long
        mask: torch.Tensor,  # [B, K] bool
        outputs: Literal["both", "actions", "last_action"] = "both",
        attn_bias: torch.Tensor | None = None,  # [B, 1, 3K, 3K] attention_bias(mask), when the caller has it
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(actions [B, K, A], next states [B, K, D]); `outputs` limits what is computed: "actions" (next states
        None) or "last_action" (actions [B, 1, A] at the last step only). The last block runs only the positions
        the heads read (2/3 or 1/3 of the tokens, or one): the same values for less work. Two models reading the
        same windows (DTR's actor and EMA actor) can share one `attn_bias`."""
        # bf16 autocast where the config's setting resolved to on; float32 outputs
        on = states.device.type in self.bf16_device_types
        with torch.autocast(device_type=states.device.type, dtype=torch.bfloat16, enabled=on):
            a, s_next = self._forward(rtg, states, actions, timesteps, mask, outputs, attn_bias)
        return a.float(), None if s_next is None else s_next.float()

    def _forward(self, rtg, states, actions, timesteps, mask, outputs, attn_bias) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, K = mask.shape
        t = self.embed_timestep(timesteps.clamp(0, self.max_ep_len - 1))  # [B, K, E]
        x = interleave_tokens(
            self.embed_return(rtg.unsqueeze(-1)) + t,
            self.embed_state(states) + t,
            self.embed_action(actions) + t,
        )  # [B, 3K, E]
        x = self.drop(self.embed_ln(x))
        if attn_bias is None:
            attn_bias = attention_bias(mask)  # [B, 1, 3K, 3K] float32, built once for every block
        # the rows the last block must produce: token 3t + 1 is s_t, 3t + 2 is a_t (R_t's output is never read)
        L = 3 * K
        if outputs == "both":
            rows: slice | torch.Tensor = torch.arange(L, device=x.device).view(K, 3)[:, 1:].reshape(-1)
        elif outputs == "actions":
            rows = slice(1, None, 3)
        elif outputs == "last_action":
            rows = slice(L - 2, L - 1)
        else:
            raise ValueError(f"outputs: expected 'both', 'actions' or 'last_action', got {outputs!r}")
        for i, block in enumerate(self.blocks):
            x = block(x, attn_bias, rows if i == len(self.blocks) - 1 else slice(None))
        x = self.ln_f(x)
        if outputs != "both":
            a = self.predict_action(x)  # [B, K or 1, A]
            return (a if self.discrete else torch.tanh(a)), None
        x = x.view(B, K, 2, -1)  # [B, K, (s, a), E]
        a = self.predict_action(x[:, :, 0])  # [B, K, A]: from the state token
        s_next = self.predict_state(x[:, :, 1])  # [B, K, D]: from the action token
        return (a if self.discrete else torch.tanh(a)), s_next


def build_transformer(config: TransformerConfig, spec: PolicySpec) -> TrajectoryTransformer:
    """The trained transformer of `config` (DT's or DTR's) for `spec`'s spaces, its bf16 setting resolved."""
    return TrajectoryTransformer(
        spec.obs_dim,
        spec.act_dim,
        spec.discrete,
        config.embed_dim,
        config.n_layers,
        config.n_heads,
        config.n_inner,
        config.activation,
        config.dropout,
        max(config.max_ep_len, spec.max_episode_length),
        autocast_device_types(config.bf16, auto_on_cpu=False),
    )


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class WindowBatch:
    """K-step windows, left-padded; everything in the policy's normalized coordinates."""

    states: torch.Tensor  # [B, K, D]
    actions: torch.Tensor  # [B, K, A] float or [B, K] long
    rewards: torch.Tensor  # [B, K]
    rtg: torch.Tensor  # [B, K] return-to-go / rtg_scale
    next_states: torch.Tensor  # [B, K, D]
    timesteps: torch.Tensor  # [B, K] long, step index inside the episode
    mask: torch.Tensor  # [B, K] bool, False = padding
    terminals: torch.Tensor  # [B, K] float, 1.0 = the step ends its episode in a terminal state (not a time limit)


class WindowSampler:
    """Uniform window starts over all transitions; windows stop at their episode's end and are left-padded.

    Every per-transition array carries one extra all-zero row at index N: padded positions gather that row, so a
    batch is one gather per field (no masking arithmetic).
    """

    def __init__(
        self,
        policy: Policy,
        dataset: EpisodeDataset,
        context: int,
        batch_size: int,
        rtg_scale: float,
        generator: torch.Generator,
    ) -> None:
        dev, n = policy.device, dataset.num_transitions
        self.K, self.batch_size, self.generator, self.n = context, batch_size, generator, n
        pad = lambda x: torch.cat([x, x.new_zeros((1, *x.shape[1:]))])  # noqa: E731  row N = padding
        t = dataset.transitions(dev)
        self.obs = pad(policy.normalize_obs(t.observations.reshape(n, -1).float()))  # [N + 1, D]
        self.next_obs = pad(policy.normalize_obs(t.next_observations.reshape(n, -1).float()))
        self.act = pad(policy.normalize_actions(t.actions if policy.spec.discrete else t.actions.reshape(n, -1)))
        self.rew = pad(t.rewards)  # [N + 1]
        self.term = pad(t.terminals)  # [N + 1]
        starts = dataset.episode_starts
        ep = dataset.episode_index_of(np.arange(n))  # [N]
        rev = np.add.accumulate(dataset.rewards.astype(np.float64)[::-1])[
            ::-1
        ]  # suffix sums over the flat array
        end_sum = np.append(rev, 0.0)[starts[1:]][ep]  # suffix sum after each transition's episode end
        rtg = (rev - end_sum) / rtg_scale  # [N]
        top = float(np.abs(rtg).max()) if n else 0.0
        if top < 1.0:
            # measured: Pb-DT on hopper-medium-replay's [0, 1] reward scored 5.3 at rtg_scale 1000 (|rtg| < 0.61),
            # 27.9 at 10 (results/dt_rtg-plateau.md): a return token this small barely conditions the policy
            say_once(f"pbrl: {type(policy.config).__name__}.rtg_scale = {rtg_scale:g} keeps this dataset's returns-to-go "
                     f"within +-{top:.2g}, so the return token barely varies; set rtg_scale near the returns' size")
        self.rtg = pad(torch.as_tensor(rtg, dtype=torch.float32, device=dev))  # [N + 1]
        self.tstep = pad(torch.as_tensor(np.arange(n) - starts[ep], device=dev))  # [N + 1]
        self.end = torch.as_tensor(starts[1:][ep], device=dev)  # [N] exclusive episode end
        self.ar = torch.arange(context, device=dev)

    def __call__(self) -> WindowBatch:
        s = torch.randint(self.n, (self.batch_size,), generator=self.generator).to(self.ar.device)  # [B]
        length = torch.clamp(self.end[s] - s, max=self.K)  # [B]
        shift = self.K - length  # leading pad positions
        mask = self.ar[None, :] >= shift[:, None]  # [B, K]
        idx = torch.where(mask, s[:, None] + self.ar[None, :] - shift[:, None], self.n)  # [B, K], N = padding
        return WindowBatch(
            states=self.obs[idx],
            actions=self.act[idx],
            rewards=self.rew[idx],
            rtg=self.rtg[idx],
            next_states=self.next_obs[idx],
            timesteps=self.tstep[idx],
            mask=mask,
            terminals=self.term[idx],
        )


class Context:
    """Per-environment history for acting: the last K normalized states, actions and timesteps."""

    def __init__(
        self, n: int, K: int, obs_dim: int, act_dim: int, discrete: bool, device: torch.device
    ) -> None:
        self.K, self.t = K, 0
        self.states = torch.zeros(n, K, obs_dim, device=device)
        self.actions = torch.zeros(
            (n, K) if discrete else (n, K, act_dim),
            device=device,
            dtype=torch.long if discrete else torch.float32,
        )
        self.timesteps = torch.zeros(n, K, dtype=torch.long, device=device)
        self.mask = torch.zeros(n, K, dtype=torch.bool, device=device)

    @classmethod
    def for_spec(cls, n: int, K: int, spec: PolicySpec, device: torch.device) -> Context:
        """An empty history for `n` environments of a policy's spaces."""
        return cls(n, K, spec.obs_dim, spec.act_dim, spec.discrete, device)

    def push(self, obs: torch.Tensor) -> None:
        """Append the current (normalized) observation [n, D]; the action slot is filled by `set_action`."""
        roll = lambda x: torch.roll(x, -1, dims=1)  # noqa: E731
        self.states, self.actions = roll(self.states), roll(self.actions)
        self.timesteps, self.mask = roll(self.timesteps), roll(self.mask)
        self.states[:, -1] = obs
        self.actions[:, -1] = 0
        self.timesteps[:, -1] = self.t
        self.mask[:, -1] = True
        self.t += 1

    def set_action(self, act: torch.Tensor) -> None:
        self.actions[:, -1] = act


def rtg_schedule(
    r0: torch.Tensor, timesteps: torch.Tensor, mask: torch.Tensor, t_max: int, scale: float
) -> torch.Tensor:
    """Scaled return-to-go R_0 (1 - t / T_max) / scale at every position: r0 [C], timesteps/mask [n, K] -> [n, C, K]."""
    frac = 1.0 - timesteps.float() / float(t_max)  # [n, K]
    return (r0[None, :, None] * frac[:, None, :] / scale) * mask[:, None, :]


# ---------------------------------------------------------------------------------------------- policy
class DecisionTransformer(Policy):
    algo = "dt"

    def __init__(self, config: DTConfig, spec: PolicySpec, total_steps: int) -> None:
        config = run_length_default(config, "warmup_steps", 10_000, total_steps)
        super().__init__(config, spec, total_steps)
        self.model = build_transformer(config, spec)
        self.optimizers["actor"] = adam(
            self.model.parameters(), config.lr, weight_decay=config.weight_decay, decoupled=True
        )
        self.context: Context | None = None

    def make_sampler(self, dataset: EpisodeDataset, generator: torch.Generator) -> Callable[[], WindowBatch]:
        cfg = self.config
        return WindowSampler(self, dataset, cfg.context, cfg.batch_size, cfg.rtg_scale, generator)

    def update(self, batch: WindowBatch) -> dict[str, float]:
        cfg = self.config
        self.step += 1
        opt = self.optimizers["actor"]
        opt.param_groups[0]["lr"] = cfg.lr * min(1.0, self.step / max(cfg.warmup_steps, 1))
        pred, _ = self.model(batch.rtg, batch.states, batch.actions, batch.timesteps, batch.mask, "actions")
        loss = dt_action_loss(pred, batch.actions, batch.mask, self.spec.discrete)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        opt.step()
        return {"dt/action_loss": loss.item()}

    # ---------------------------------------------------------------- acting
    def reset(self, num_envs: int) -> None:
        self.context = Context.for_spec(num_envs, self.config.context, self.spec, self.device)

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        if self.context is None or self.context.states.shape[0] != obs.shape[0]:
            self.reset(obs.shape[0])
        ctx = self.context
        ctx.push(obs)
        r0 = self.config.target_return if self.config.target_return is not None else self.spec.return_max
        rtg = rtg_schedule(
            torch.tensor([r0], device=self.device),
            ctx.timesteps,
            ctx.mask,
            self.spec.max_episode_length,
            self.config.rtg_scale,
        )[:, 0]  # [n, K]
        pred, _ = self.model(rtg, ctx.states, ctx.actions, ctx.timesteps, ctx.mask, "last_action")
        a = pred[:, -1].argmax(-1) if self.spec.discrete else pred[:, -1]  # [n] or [n, A]
        ctx.set_action(a)
        return a
