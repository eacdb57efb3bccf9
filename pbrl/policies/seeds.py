"""S seeds of one algorithm trained as one batched model: the weights of S policies stacked along a leading seed
axis, every phase's loss evaluated for all seeds at once by `torch.func.vmap` with the stacked tensors swapped in.

Why it equals S separate runs: each seed's policy is built exactly as a separate run builds it (seeded, then its
weights stacked), draws its own batch indices from its own generator over its own data (the same data for every
seed, or each seed's own of the same shapes, e.g. a dataset relabeled with each seed's learned reward) and its own
noise from a copy of the torch stream its separate run would use, and the batched loss is the sum of the S
per-seed losses, so the gradient of seed s's slice is seed s's own gradient. Adam is elementwise, so one Adam over
the stacked tensors is S Adams. What differs is float rounding: a batched matmul may sum in another order than S
single ones (tests bound it). Training amplifies those differences: on Pendulum data, IQL at 64x64 kept batched
and separate weights within ~1e-7 relative for 50 updates and drifted to 1e-2-1e-1 after 1000, on shared data and
on per-seed rewards alike; after 3000 updates three Pb-IQL seeds' last normalized scores (0-100) were within 0.2
of their separate runs'.

Only phase-based policies (`Policy.phases()`, see `pbrl.policies.base.Phase`) batch; the others train seed after
seed (`seed_batchable`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.func import vmap

try:  # the core of torch.func.vmap (see _vmap_flat)
    from torch._functorch.vmap import _add_batch_dim, _remove_batch_dim, vmap_increment_nesting
except ImportError:  # pragma: no cover - another torch layout: the public vmap
    _add_batch_dim = None

from pbrl.data import Transitions
from pbrl.errors import PbrlError
from pbrl.policies.base import Phase, Policy, TransitionSampler
from pbrl.policies.nets import Dropout


def seed_batchable(policy: Policy) -> str | None:
    """None when `policy`'s seeds can train as one batched model, else the reason they cannot."""
    if policy.phases() is None:
        return f"{policy.algo} updates are not written as pure loss phases"
    if any(isinstance(m, (nn.Dropout, Dropout)) and m.p > 0 for m in policy.modules()):
        return "dropout draws its masks inside the update (each seed needs its own stream)"
    if any(len(opt.param_groups) != 1 for opt in policy.optimizers.values()):
        return "an optimizer with several parameter groups"
    return None


class _Swap:
    """Runs a method of `module` with its parameters and buffers replaced by given tensors (in a fixed order).

    What `torch.func.functional_call` does, with the module lookups done once: at 64-wide MLPs its per-call
    traversal and tying checks cost as much as the update's arithmetic.
    """

    def __init__(self, module: nn.Module, names: list[str]) -> None:
        self.module = module
        self.slots = []
        for name in names:
            owner, _, attr = name.rpartition(".")
            sub = module.get_submodule(owner)
            self.slots.append((sub._parameters if attr in sub._parameters else sub._buffers, attr))

    def __call__(self, tensors: list[torch.Tensor], method: str, *args: Any) -> Any:
        saved = [table[attr] for table, attr in self.slots]
        try:
            for (table, attr), t in zip(self.slots, tensors):
                table[attr] = t
            return getattr(self.module, method)(*args)
        finally:
            for (table, attr), t in zip(self.slots, saved):
                table[attr] = t


class SeedBatch:
    """S policies of the same algorithm and config, updated as one model.

    policies: built like separate runs (each after `set_seed(its seed)`), with their optimizer states (fresh, or
      loaded from checkpoints at the same step). samplers: each seed's sampler over its data, with its own
      generator. The seeds' data may differ (each seed's own rewards, or its own episodes): a field every seed
      holds the same values of is kept once ([N, ...]), the others are stacked ([S, N, ...], shorter ones padded
      with rows no index reaches), and the samplers are pointed at that one copy. noise: each seed's generator for
      the update's noise (its separate run's torch stream, on the policies' device).
    `update()` draws S batches and runs one batched update, returning S metrics dicts; `unstack()` copies the
    stacked weights and optimizer states back into the S policies (before evaluating or saving them).
    """

    def __init__(
        self,
        policies: list[Policy],
        samplers: list[TransitionSampler],
        noise: list[torch.Generator],
    ) -> None:
        if not policies or len({p.step for p in policies}) != 1:
            raise PbrlError("a seed batch needs policies at the same step")
        why = seed_batchable(policies[0])
        if why is not None:
            raise PbrlError(f"{policies[0].algo} cannot train seeds as one batched model: {why}")
        if not all(isinstance(s, TransitionSampler) for s in samplers):
            raise PbrlError("a seed batch samples uniform transitions (TransitionSampler) only")
        self.shared, self.own = _seed_data(samplers)
        self.policies, self.samplers, self.noise = policies, samplers, noise
        self.template = policies[0]
        names = [n for n, _ in self.template.named_parameters()]
        with torch.no_grad():  # [S, ...] leaves; requires_grad as in the policy (targets stay frozen)
            self.params = {
                n: torch.stack([dict(p.named_parameters())[n] for p in policies]).requires_grad_(
                    dict(self.template.named_parameters())[n].requires_grad
                )
                for n in names
            }
            self.buffers = {n: torch.stack([dict(p.named_buffers())[n] for p in policies])
                            for n, _ in self.template.named_buffers()}
        # the optimizer groups in the policy's own parameter order, so a seed's slice of the state is its state
        pname = {id(p): n for n, p in self.template.named_parameters()}
        self.opt_params: dict[str, list[str]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for key, opt in self.template.optimizers.items():
            self.opt_params[key] = [pname[id(p)] for p in opt.param_groups[0]["params"]]
            batched = type(opt)([self.params[n] for n in self.opt_params[key]], **opt.defaults)
            batched.load_state_dict(_stack_opt_states([p.optimizers[key].state_dict() for p in policies]))
            self.optimizers[key] = batched
        self.phases = self.template.phases() or []
        self.names, self.buffer_names = names, list(self.buffers)
        self.swap = _Swap(self.template, self.names + self.buffer_names)

    @property
    def step(self) -> int:
        return self.template.step

    def sample(self) -> Transitions:
        """S batches [S, B, ...]: each seed's indices from its own generator (into its own rows), gathered in one
        indexing call per field."""
        idx = torch.stack([torch.randint(s.n, (s.batch_size,), generator=s.generator) for s in self.samplers])
        idx = idx.to(self.samplers[0].data.rewards.device)  # [S, B]
        rows = torch.arange(len(self.samplers), device=idx.device)[:, None]  # [S, 1]: seed s reads its own slice
        return Transitions(**{
            f: self.shared[f][idx] if f in self.shared else self.own[f][rows, idx]  # [S, B, ...]
            for f in _FIELDS
        })

    def update(self) -> list[dict[str, float]]:
        batch = self.sample()
        for p in self.policies:
            p.step += 1
        t = self.template
        t.schedule(self.optimizers)
        noise = [t.draw_noise(_seed_slice(batch, s), g) for s, g in enumerate(self.noise)]
        noise_s = {k: torch.stack([n[k] for n in noise]) for k in noise[0]} if noise and noise[0] else {}
        carry: dict[str, torch.Tensor] = {}
        out: dict[str, torch.Tensor] = {}
        for ph in self.phases:
            if t.step % ph.every:
                continue
            loss, metrics, carry = self._losses(ph, batch, noise_s, carry)
            opts = [self.optimizers[key] for key in ph.optimizers]
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # the sum of per-seed losses: each seed's slice gets its own gradient
            for opt in opts:
                opt.step()
            with torch.no_grad():
                for target, source in ph.targets:
                    tgt = [n for n in self.params if n.startswith(target + ".")]
                    src = [source + n[len(target):] for n in tgt]
                    torch._foreach_lerp_([self.params[n] for n in tgt], [self.params[n] for n in src],
                                         t.config.tau)
            out.update(metrics)
        values = {k: v.tolist() for k, v in out.items()}  # one host transfer per metric
        return [{k: v[s] for k, v in values.items()} for s in range(len(self.policies))]

    def _losses(
        self, ph: Phase, batch: Transitions, noise: dict[str, torch.Tensor], carry: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Phase `ph`'s loss [S], metrics [S] and carry [S, ...] for every seed: its loss method under vmap."""
        trained = {n for key in ph.optimizers for n in self.opt_params[key]}
        # weights this phase does not step enter detached: no gradient reaches them (as `frozen` does)
        weights = [self.params[n] if n in trained else self.params[n].detach() for n in self.names]
        weights += [self.buffers[n] for n in self.buffer_names]
        fields = [getattr(batch, f.name) for f in dataclasses.fields(Transitions)]
        n_w, n_f, noise_keys, carry_keys = len(weights), len(fields), list(noise), list(carry)
        keys: dict[str, list[str]] = {}

        def one_seed(flat: list[torch.Tensor]) -> list[torch.Tensor]:
            w, f, rest = flat[:n_w], flat[n_w : n_w + n_f], flat[n_w + n_f :]
            noise_one = dict(zip(noise_keys, rest[: len(noise_keys)]))
            carry_one = dict(zip(carry_keys, rest[len(noise_keys) :]))
            loss, metrics, carry_out = self.swap(w, ph.loss, Transitions(*f), noise_one, carry_one)
            keys["metrics"], keys["carry"] = list(metrics), list(carry_out)
            return [loss, *metrics.values(), *carry_out.values()]

        res = _vmap_flat(one_seed, [*weights, *fields, *noise.values(), *carry.values()], len(self.policies))
        n_m = len(keys["metrics"])
        return res[0], dict(zip(keys["metrics"], res[1 : 1 + n_m])), dict(zip(keys["carry"], res[1 + n_m :]))

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy weights, buffers and optimizer states back into the S policies (their separate-run form)."""
        for s, policy in enumerate(self.policies):
            for n, p in policy.named_parameters():
                p.copy_(self.params[n][s])
            for n, b in policy.named_buffers():
                b.copy_(self.buffers[n][s])
            for key, opt in self.optimizers.items():
                policy.optimizers[key].load_state_dict(_seed_opt_state(opt.state_dict(), s))


def _vmap_flat(fn: Any, inputs: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """`vmap(fn)(inputs)` over dim 0 of every input, for a function of a flat list of tensors returning one.

    Why not `torch.func.vmap` itself: its pytree flattening and checks of every input and output cost a third of
    a 64-wide update; this is its core (torch's own batching levels), used when torch has it.
    """
    if _add_batch_dim is None:
        return vmap(fn)(inputs)
    with vmap_increment_nesting(size, "error") as level:
        outs = fn([_add_batch_dim(t, 0, level) for t in inputs])
        return [_remove_batch_dim(o, level, size, 0) for o in outs]


_FIELDS = [f.name for f in dataclasses.fields(Transitions)]


def _seed_data(samplers: list[TransitionSampler]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The seeds' training data as one copy: (fields every seed shares [N, ...], fields each seed has its own of
    [S, N_max, ...]). Seeds that relabel one dataset with their own rewards share all but `rewards`, so the
    observations are kept once. The samplers are pointed at this copy (their own tensors are freed)."""
    shared: dict[str, torch.Tensor] = {}
    own: dict[str, torch.Tensor] = {}
    for f in _FIELDS:
        ts = [getattr(s.data, f) for s in samplers]
        first = ts[0]
        if all(t is first or (t.shape == first.shape and t.dtype == first.dtype and t.device == first.device
                              and torch.equal(t, first)) for t in ts[1:]):
            shared[f] = first
            continue
        kinds = {(tuple(t.shape[1:]), t.dtype, t.device) for t in ts}
        if len(kinds) != 1:
            raise PbrlError(f"a seed batch needs every seed's {f} of one shape, dtype and device; got "
                            f"{sorted(str(k) for k in kinds)}")
        stacked = first.new_zeros((len(ts), max(len(t) for t in ts), *first.shape[1:]))  # [S, N_max, ...]
        for i, t in enumerate(ts):
            stacked[i, : len(t)] = t
        own[f] = stacked
    for i, s in enumerate(samplers):
        s.data = Transitions(**{f: shared[f] if f in shared else own[f][i, : s.n] for f in _FIELDS})
    return shared, own


def _seed_slice(batch: Transitions, s: int) -> Transitions:
    return Transitions(*(getattr(batch, f.name)[s] for f in dataclasses.fields(Transitions)))


def _stack_opt_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """S optimizer state dicts (same parameter order, same step) -> one over the stacked parameters."""
    first = states[0]
    stacked: dict[int, dict[str, Any]] = {}
    for i, entry in first["state"].items():
        stacked[i] = {}
        for key, value in entry.items():
            if key == "step":  # one counter: every seed has taken the same number of steps
                if any(not torch.equal(torch.as_tensor(s["state"][i]["step"]), torch.as_tensor(value))
                       for s in states):
                    raise PbrlError("the seeds' optimizers are at different steps")
                stacked[i][key] = value
            else:
                stacked[i][key] = torch.stack([s["state"][i][key] for s in states])
    return {"state": stacked, "param_groups": first["param_groups"]}


def _seed_opt_state(state: dict[str, Any], s: int) -> dict[str, Any]:
    """Seed s's slice of a stacked optimizer state dict."""
    out = {
        i: {k: (v.clone() if k == "step" else v[s].clone()) for k, v in entry.items()}
        for i, entry in state["state"].items()
    }
    return {"state": out, "param_groups": state["param_groups"]}
