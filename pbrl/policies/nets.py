"""Networks shared by every offline policy: MLPs, batched critic ensembles, actor heads, soft updates.

Ensembles (twin critics) are one module whose weights carry a leading member axis, evaluated with one batched
matmul (`torch.baddbmm`) instead of a Python loop over members.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pbrl.ensemble import EnsembleLinear


def _mish_parts(x: torch.Tensor, slope: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """mish(x) = x tanh(softplus(x)) from one exp: tanh(log(1 + e^x)) = n / (n + 2) with n = e^x (e^x + 2); and,
    if asked, dy/dx = t + x (1 - t^2) sigmoid(x) (t = that ratio). For x > 20 the ratio is 1.0 in float32, so x
    is clamped there before exp."""
    e = x.clamp(max=20.0).exp()  # e^x
    n = (e + 2.0).mul_(e)  # e^x (e^x + 2)
    t = n.div_(n + 2.0)  # tanh(softplus(x)), in n's buffer
    d = torch.addcmul(t, x * e.div_(e + 1.0), 1.0 - t * t) if slope else None  # e's buffer becomes sigmoid(x)
    return x * t, d


class _MishCPU(torch.autograd.Function):
    """Mish whose forward stores its slope, so backward is one product (and vmap-able: `generate_vmap_rule`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _mish_parts(x, slope=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001  autograd's ctx
        ctx.save_for_backward(output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor, _: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (slope,) = ctx.saved_tensors
        return grad * slope


class Mish(nn.Module):
    """x tanh(softplus(x)) (Misra, 2019). Float32 CPU tensors use `_mish_parts`: torch's CPU kernel evaluates exp,
    log1p and tanh per element and its backward all three again, a third of a DTR update with its Mish critic;
    the one-exp form is exact up to float32 rounding (~1e-6 against F.mish). Other devices and dtypes: F.mish."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return F.mish(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MishCPU.apply(x)[0]
        return _mish_parts(x, slope=False)[0]


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "mish": Mish,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class Dropout(nn.Module):
    """Inverted dropout whose CPU mask comes from 16-bit random integers: keep where u >= k, u ~ U{0..65535}.

    Why: torch's CPU dropout draws one Bernoulli sample per element (~6 ns each on a 2-core CPU, 11% of a DTR
    update); four 16-bit draws per 64-bit random number cost ~1 ns per element. p is rounded to k / 65536 (0.1 ->
    0.100006) and kept values scale by the exact 65536 / (65536 - k), so the layer stays unbiased. GPUs use torch's.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p, self.k = p, round(p * 65536)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.k == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)  # 4 x 16 random bits
        keep = bits.view(torch.int16)[:n].view(x.shape) >= self.k - 32768  # P(keep) = 1 - k / 65536
        return x * keep * (65536 / (65536 - self.k))


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: tuple[int, ...] = (256, 256),
    act: str = "relu",
    dropout: float = 0.0,
    layer_norm: bool = False,
) -> nn.Sequential:
    """Linear -> [LayerNorm] -> act -> [Dropout] per hidden layer, then a plain Linear output."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation(act)())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleMLP(nn.Module):
    """`n` MLPs of the same shape as one module; input [B, in] (shared) or [n, B, in] -> [n, B, out]."""

    def __init__(
        self, n: int, in_dim: int, out_dim: int, hidden: tuple[int, ...] = (256, 256), act: str = "relu"
    ):
        super().__init__()
        self.n = n
        dims = (in_dim, *hidden)
        self.hidden = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = EnsembleLinear(n, dims[-1], out_dim)
        # not in place: the matmul result arrives as a reshaped view, and an in-place op on a view makes autograd
        # rebuild the base in backward (as_strided: zero fill + copies, a quarter of a CQL update)
        self.act = activation(act)()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n, -1, -1)  # [n, B, in]
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)  # [n, B, out]


class Critic(nn.Module):
    """An ensemble of Q-functions (n=2: twin critics), continuous or discrete actions.

    Continuous: Q_k(s, a) = MLP_k([s, a]) -> 1. Discrete: Q_k(s, .) = MLP_k(s) -> one value per action.
    `forward(obs, act)` returns [n, B] in both cases; `all_actions(obs)` [n, B, A] is for discrete spaces.
    Leading dimensions beyond the batch ([B, T, ...]) are flattened and restored.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        discrete: bool,
        n: int = 2,
        hidden: tuple[int, ...] = (256, 256),
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.discrete = discrete
        self.net = EnsembleMLP(
            n, obs_dim if discrete else obs_dim + act_dim, act_dim if discrete else 1, hidden, act
        )

    def all_actions(self, obs: torch.Tensor) -> torch.Tensor:
        lead = obs.shape[:-1]
        q = self.net(obs.reshape(-1, obs.shape[-1]))  # [n, B*, A]
        return q.reshape(q.shape[0], *lead, q.shape[-1])  # [n, *lead, A]

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            q = self.all_actions(obs)  # [n, *lead, A]
            return q.gather(-1, act.long().unsqueeze(0).expand(q.shape[0], *act.shape).unsqueeze(-1)).squeeze(
                -1
            )
        lead = obs.shape[:-1]
        x = torch.cat([obs, act], dim=-1).reshape(-1, obs.shape[-1] + act.shape[-1])
        q = self.net(x)  # [n, B*, 1]
        return q.reshape(q.shape[0], *lead)  # [n, *lead]


class DeterministicActor(nn.Module):
    """a = tanh(MLP(s)) in the normalized action box [-1, 1]."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0
    ):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, dropout=dropout)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))  # [B, A]


class GaussianActor(nn.Module):
    """N(tanh(MLP(s)), exp(log_std)) with a state-independent log std (IQL's actor; no squashing of samples)."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0,
        log_std_min: float = -20.0,
    ):
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, dropout=dropout)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min = float(log_std_min)

    def forward(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = torch.tanh(self.net(obs))  # [B, A]
        return torch.distributions.Normal(mean, self.log_std.clamp(self.log_std_min, 2.0).exp())

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs).log_prob(act).sum(-1)  # [B]

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


class TanhGaussianActor(nn.Module):
    """SAC's squashed Gaussian: a = tanh(u), u ~ N(mu(s), sigma(s)); log-prob with the tanh Jacobian."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.net = mlp(obs_dim, 2 * act_dim, hidden)

    def _dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(-20.0, 2.0).exp()

    def sample(
        self, obs: torch.Tensor, n: int | None = None, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized action [*, A] and its log-probability [*]; with `n`, n actions per observation
        ([*, n, A], [*, n]) from one forward pass. eps: the standard normal draws (default: drawn here)."""
        mean, std = self._dist(obs)
        if n is not None:
            mean, std = (
                mean.unsqueeze(-2).expand(*mean.shape[:-1], n, -1),
                std.unsqueeze(-2).expand(*std.shape[:-1], n, -1),
            )  # [*, n, A]
        u = mean + std * (torch.randn_like(mean) if eps is None else eps)
        logp = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form
        logp = logp - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), logp

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) [*] of given actions a in (-1, 1) [*, A] (clamped off +-1, where atanh is infinite)."""
        mean, std = self._dist(obs)
        a = act.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
        u = torch.atanh(a)
        logp = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        return logp - torch.log1p(-a.pow(2)).sum(-1)  # log|d tanh(u)/du| = log(1 - a^2)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self._dist(obs)[0])


class CategoricalActor(nn.Module):
    """Logits over discrete actions."""

    def __init__(
        self, obs_dim: int, num_actions: int, hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0
    ):
        super().__init__()
        self.net = mlp(obs_dim, num_actions, hidden, dropout=dropout)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)  # [B, A] logits

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self(obs), -1).gather(-1, act.long().unsqueeze(-1)).squeeze(-1)  # [B]

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self(obs).argmax(-1)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No weight gradients for `module` inside the block; gradients still flow through it to its inputs (an actor's
    loss through the critic needs dQ/da only). Under `torch.func` transforms it does nothing: there the caller
    passes the weights in detached."""
    params = list(module.parameters())
    if any(torch._C._functorch.is_functorch_wrapped_tensor(p) for p in params):
        # under vmap (pbrl.policies.seeds) the weights are inputs, passed detached by the caller: nothing to freeze
        yield
        return
    flags = [(p, p.requires_grad) for p in params]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:  # the flags it found: a parameter frozen before stays frozen
            p.requires_grad_(flag)


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """target <- source, parameters only (one fused call); buffers are left alone.

    Why no_grad: an in-place copy from a tensor that requires grad, recorded by autograd, turns every target
    parameter into a non-leaf with a CopyBackwards node whose edges hold the previous node, so each call
    lengthens a graph that is never freed (about 1.5 KB per parameter per call; DTR's EMA actor copied its
    actor on each of its first `ema_start` updates). Those small blocks stay live between the large freed
    activation blocks, so the heap cannot coalesce them and resident memory grew many times faster than the
    leaked bytes (2.6 MB per update, 60 KB of it live). `tests/policies/test_policy_losses.py` checks it.
    """
    torch._foreach_copy_(list(target.parameters()), list(source.parameters()))


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source (one fused call over all parameters)."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from `base` at step 0 to 0 at step `total`."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
