"""S seeds of one algorithm trained as one batched model: the weights of S policies stacked along a leading seed
axis, every phase's loss evaluated for all seeds at once by `torch.func.vmap` over `functional_call`.

Why it equals S separate runs: each seed's policy is built exactly as a separate run builds it (seeded, then its
weights stacked), draws its own batch indices from its own generator and its own noise from a copy of the torch
stream its separate run would use, and the batched loss is the sum of the S per-seed losses, so the gradient of
seed s's slice is seed s's own gradient. Adam is elementwise, so one Adam over the stacked tensors is S Adams. What
differs is float rounding: a batched matmul may sum in another order than S single ones (tests bound it).

Only phase-based policies (`Policy.phases()`, see `pbrl.policies.base.Phase`) batch; the others train seed after
seed (`seed_batchable`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from pbrl.data import Transitions
from pbrl.errors import PbrlError
from pbrl.policies.base import Policy, TransitionSampler
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


class _Call(nn.Module):
    """`functional_call` calls `forward`; this forwards to one named method of the policy."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.policy, method)(*args)


class SeedBatch:
    """S policies of the same algorithm and config, updated as one model.

    policies: built like separate runs (each after `set_seed(its seed)`), with their optimizer states (fresh, or
      loaded from checkpoints at the same step). generators: each seed's sampling generator. noise: each seed's
      generator for the update's noise (its separate run's torch stream, on the policies' device).
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
        self.policies, self.samplers, self.noise = policies, samplers, noise
        self.template = policies[0]
        self.call = _Call(self.template)
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

    @property
    def step(self) -> int:
        return self.template.step

    def sample(self) -> Transitions:
        """S batches [S, B, ...]: each seed's indices from its own generator, gathered in one indexing call."""
        first = self.samplers[0]
        idx = torch.stack([torch.randint(s.n, (s.batch_size,), generator=s.generator) for s in self.samplers])
        idx = idx.to(first.data.rewards.device)  # [S, B]
        return Transitions(*(getattr(first.data, f.name)[idx] for f in dataclasses.fields(Transitions)))

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
            trained = {n for key in ph.optimizers for n in self.opt_params[key]}
            # weights this phase does not step enter detached: no gradient reaches them (as `frozen` does)
            params = {n: (v if n in trained else v.detach()) for n, v in self.params.items()}

            def loss_fn(params, buffers, fields, noise, carry, _ph=ph):
                one = Transitions(**fields)  # one seed's batch [B, ...] (vmap maps over dicts, not dataclasses)
                return functional_call(self.call, ({**params, **buffers},), (_ph.loss, one, noise, carry))

            loss, metrics, carry = vmap(loss_fn)(
                {f"policy.{n}": v for n, v in params.items()},
                {f"policy.{n}": v for n, v in self.buffers.items()},
                {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}, noise_s, carry,
            )
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
