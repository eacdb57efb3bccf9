"""What every offline policy shares: the dataset facts it needs (`PolicySpec`), the base class, batch sampling,
checkpoint IO, and the algorithm registry.

A policy works in normalized coordinates: observations z-scored with dataset statistics, Box actions mapped to
[-1, 1]. `act` takes raw environment observations and returns raw environment actions.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pbrl.data import EpisodeDataset, Transitions, reference_scores
from pbrl.errors import PbrlError
from pbrl.policies.nets import soft_update
from pbrl.utils import atomic_torch_save, resolve_device, safe_torch_load

PhaseLoss = Callable[[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]],
                     tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]]


@dataclass
class ObservationConfig:
    """The observation coordinates every algorithm's config shares (its first field)."""

    normalize_obs: bool = True
    """Z-score observations with the dataset's statistics (as CORL does); False trains and acts on raw
    observations, as d3rlpy does without an observation scaler (results/peer_scores-peer.md compares both, IQL)."""


@dataclass(frozen=True)
class Phase:
    """One optimizer step of an update, written so that S seeds can run it as one batched model.

    `loss` names a method `(batch, noise, carry) -> (loss, metrics, carry)` that reads the policy's modules and
    returns tensors only (no `.item()`, no random draws, no in-place changes to weights): the same method runs
    on the module for one seed and under `torch.func.vmap` over stacked weights for S seeds (pbrl.policies.seeds).
    Its loss is summed over the optimizers' parameter groups (each group's gradient comes from its own term);
    `carry` passes tensors to the next phase. The phase runs when `step % every == 0`, and after its step the
    (target, source) module pairs in `targets` are Polyak-averaged at the config's `tau`.
    """

    loss: str
    optimizers: tuple[str, ...]
    every: int = 1
    targets: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class PolicySpec:
    """Facts about the dataset and environment that shape a policy (JSON-serializable, saved in checkpoints)."""

    obs_dim: int
    """Flattened observation size."""
    act_dim: int
    """Action size (Box) or number of actions (Discrete)."""
    discrete: bool
    """Discrete action space."""
    action_low: list[float]
    """Box lower bounds (raw env units); empty for discrete."""
    action_high: list[float]
    """Box upper bounds (raw env units); empty for discrete."""
    obs_mean: list[float]
    """Dataset observation mean, for z-scoring."""
    obs_std: list[float]
    """Dataset observation std (floored at 1e-3)."""
    max_episode_length: int
    """Longest episode in the dataset."""
    return_max: float
    """Highest episode return in the dataset (its current rewards)."""
    env_id: str | None = None
    """Environment to evaluate in."""
    dataset_name: str | None = None
    """Name of the training dataset."""
    ref_scores: tuple[float, float] | None = None
    """(random, expert) reference returns for normalized scores, when known."""

    @classmethod
    def from_dataset(cls, ds: EpisodeDataset, env_id: str | None = None) -> PolicySpec:
        obs = ds.observations.reshape(ds.num_transitions, -1).astype(np.float64)  # [N, D]
        if ds.is_discrete:
            act_dim, low, high = int(ds.action_space.n), [], []
        else:
            act = ds.actions.reshape(ds.num_transitions, -1)  # [N, A]
            act_dim = act.shape[1]
            space = ds.action_space
            finite = (
                isinstance(space, gym.spaces.Box)
                and np.all(np.isfinite(space.low))
                and np.all(np.isfinite(space.high))
            )
            if finite:
                low, high = space.low.reshape(-1).tolist(), space.high.reshape(-1).tolist()
            else:  # inferred space: the data's range
                low, high = act.min(0).tolist(), act.max(0).tolist()
                high = [h if h > lo else lo + 1.0 for lo, h in zip(low, high)]
        try:
            ref: tuple[float, float] | None = reference_scores(ds)
        except PbrlError:
            ref = None
        return cls(
            obs_dim=obs.shape[1],
            act_dim=act_dim,
            discrete=ds.is_discrete,
            action_low=[float(x) for x in low],
            action_high=[float(x) for x in high],
            obs_mean=obs.mean(0).tolist(),
            obs_std=np.maximum(obs.std(0), 1e-3).tolist(),
            max_episode_length=int(ds.episode_lengths.max()),
            return_max=float(ds.episode_returns().max()),
            env_id=env_id or ds.env_id,
            dataset_name=ds.name,
            ref_scores=ref,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PolicySpec:
        d = json.loads(text)
        if d.get("ref_scores") is not None:
            d["ref_scores"] = tuple(d["ref_scores"])
        return cls(**d)


class TransitionSampler:
    """Uniform minibatches of transitions, all data on the training device, rows picked with an index tensor."""

    def __init__(self, data: Transitions, batch_size: int, generator: torch.Generator) -> None:
        self.data, self.batch_size, self.generator = data, batch_size, generator
        self.n = len(data)

    def __call__(self) -> Transitions:
        idx = torch.randint(self.n, (self.batch_size,), generator=self.generator)  # [B] (CPU generator)
        idx = idx.to(self.data.rewards.device)
        return Transitions(*(getattr(self.data, f.name)[idx] for f in dataclasses.fields(Transitions)))


class Policy(nn.Module):
    """Base class: normalization buffers, `act`, optimizer/step state, save/load.

    Subclasses set `algo`, build networks and optimizers in `__init__(config, spec, total_steps)`, and implement
    `update(batch) -> dict[str, float]` and `_act(obs [B, D] normalized) -> actions [B, A] in [-1, 1] (or [B] ids)`.
    Sequence policies override `make_sampler` and `reset`.
    An update written as `phases()` (pure loss methods, see `Phase`) with its random draws in `draw_noise` and its
    learning-rate schedule in `schedule` gets `update = run_phases`, and its seeds can train as one batched model.
    """

    algo: ClassVar[str] = ""

    def __init__(self, config: Any, spec: PolicySpec, total_steps: int) -> None:
        super().__init__()
        self.config, self.spec, self.total_steps = config, spec, int(total_steps)
        self.step = 0  # updates done so far (schedules read it)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.register_buffer("obs_mean", torch.tensor(spec.obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(spec.obs_std, dtype=torch.float32))
        if not config.normalize_obs:  # identity coordinates: the buffers (and so checkpoints) say so
            self.obs_mean.zero_()
            self.obs_std.fill_(1.0)
        if not spec.discrete:
            low = torch.tensor(spec.action_low, dtype=torch.float32)
            high = torch.tensor(spec.action_high, dtype=torch.float32)
            self.register_buffer("act_center", (high + low) / 2)
            self.register_buffer("act_half", (high - low) / 2)

    @property
    def device(self) -> torch.device:
        return self.obs_mean.device

    # ---------------------------------------------------------------- coordinates
    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.reshape(*obs.shape[: obs.dim() - 1], -1) - self.obs_mean) / self.obs_std

    def normalize_actions(self, act: torch.Tensor) -> torch.Tensor:
        if self.spec.discrete:
            return act.long()
        return ((act - self.act_center) / self.act_half).clamp(-1.0, 1.0)

    def unnormalize_actions(self, act: torch.Tensor) -> torch.Tensor:
        return act if self.spec.discrete else act * self.act_half + self.act_center

    # ---------------------------------------------------------------- data
    def make_sampler(self, dataset: EpisodeDataset, generator: torch.Generator) -> Callable[[], Any]:
        """A callable returning one training batch; default: uniform transitions in normalized coordinates."""
        t = dataset.transitions(self.device)
        n = dataset.num_transitions
        data = Transitions(
            observations=self.normalize_obs(t.observations.reshape(n, -1).float()),
            actions=self.normalize_actions(t.actions.reshape(n, -1) if not self.spec.discrete else t.actions),
            rewards=t.rewards,
            next_observations=self.normalize_obs(t.next_observations.reshape(n, -1).float()),
            terminals=t.terminals,
            timeouts=t.timeouts,
        )
        return TransitionSampler(data, self.config.batch_size, generator)

    # ---------------------------------------------------------------- acting
    def reset(self, num_envs: int) -> None:
        """Start new episodes in `num_envs` parallel environments (sequence policies clear their context)."""

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Raw observations [B, *obs_shape] -> raw actions [B, A] (Box) or [B] (Discrete)."""
        was_training = self.training
        self.eval()
        x = torch.tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        a = self.unnormalize_actions(self._act(self.normalize_obs(x)))
        self.train(was_training)
        return a.cpu().numpy()

    def _act(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, batch: Any) -> dict[str, float]:
        raise NotImplementedError

    # ---------------------------------------------------------------- phase-based updates
    def phases(self) -> list[Phase] | None:
        """The update as pure loss phases (None: `update` is written imperatively and seeds train one by one)."""
        return None

    def draw_noise(self, batch: Any, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Every random tensor an update needs, drawn in a fixed order from `generator` (None: torch's global
        generator of the batch's device), so a batched run can give each seed its own stream."""
        return {}

    def schedule(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Set learning rates for the update about to run (reads `self.step`, already incremented)."""

    def run_phases(self, batch: Any) -> dict[str, float]:
        """One update from `phases()`: each phase's loss, one backward, its optimizers' steps, its target updates."""
        phases = self.phases()
        assert phases is not None, f"{type(self).__name__} has no phases"
        self.step += 1
        self.schedule(self.optimizers)
        noise, carry = self.draw_noise(batch, None), {}
        out: dict[str, torch.Tensor] = {}
        for ph in phases:
            if self.step % ph.every:
                continue
            loss, metrics, carry = getattr(self, ph.loss)(batch, noise, carry)
            opts = [self.optimizers[name] for name in ph.optimizers]
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
            for target, source in ph.targets:
                soft_update(getattr(self, target), getattr(self, source), self.config.tau)
            out.update(metrics)
        return {k: v.item() for k, v in out.items()}

    # ---------------------------------------------------------------- state
    def training_state(self) -> dict[str, Any]:
        """Weights, optimizer states and the step counter (everything resuming needs besides RNG states)."""
        return {
            "model": self.state_dict(),
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "step": self.step,
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["model"])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])

    def save(self, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
        """One file: algorithm, config (JSON), spec (JSON), training state; written to a temp name, then renamed."""
        obj = {
            "algo": getattr(self, "algo_name", self.algo),
            "config": json.dumps(dataclasses.asdict(self.config)),
            "spec": self.spec.to_json(),
            "total_steps": self.total_steps,
            "state": self.training_state(),
            "extra": extra or {},
        }
        atomic_torch_save(obj, str(path))


# ---------------------------------------------------------------- registry
# The one list of algorithm names (command-line choices read it); ALGORITHMS below must hold exactly these.
AlgoName = Literal["iql", "cql", "td3bc", "bc", "dt", "qt", "dtr"]

# name -> ("module:Class", "module:Config", preset overrides applied to the config's defaults)
ALGORITHMS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bc": ("pbrl.policies.bc:BC", "pbrl.policies.bc:BCConfig", {}),
    "iql": ("pbrl.policies.iql:IQL", "pbrl.policies.iql:IQLConfig", {}),
    "td3bc": ("pbrl.policies.td3bc:TD3BC", "pbrl.policies.td3bc:TD3BCConfig", {}),
    "cql": ("pbrl.policies.cql:CQL", "pbrl.policies.cql:CQLConfig", {}),
    "dt": ("pbrl.policies.dt:DecisionTransformer", "pbrl.policies.dt:DTConfig", {}),
    "dtr": ("pbrl.policies.dtr:DTR", "pbrl.policies.dtr:DTRConfig", {}),
    # Q-value regularized transformer (Hu et al., ICML 2024) = DTR with a constant policy-improvement weight
    "qt": ("pbrl.policies.dtr:DTR", "pbrl.policies.dtr:DTRConfig", {"eta_schedule": "constant"}),
}


assert set(ALGORITHMS) == set(get_args(AlgoName)), "AlgoName and ALGORITHMS name the same algorithms"


def _import(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def algorithm(name: str) -> tuple[type[Policy], type]:
    """(policy class, config class) of a registered algorithm."""
    if name not in ALGORITHMS:
        raise PbrlError(f"unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}")
    cls, cfg, _ = ALGORITHMS[name]
    return _import(cls), _import(cfg)


def default_config(name: str, **overrides: Any) -> Any:
    """The algorithm's config with its preset (e.g. qt's constant eta) and `overrides` applied."""
    _, cfg_cls = algorithm(name)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise PbrlError(f"{name} config has no field(s) {bad}; fields: {sorted(fields)}")
    return cfg_cls(**{**ALGORITHMS[name][2], **overrides})


def make_policy(name: str, spec: PolicySpec, config: Any = None, total_steps: int = 1_000_000) -> Policy:
    cls, cfg_cls = algorithm(name)
    config = default_config(name) if config is None else config
    if not isinstance(config, cfg_cls):
        raise PbrlError(f"{name} expects a {cfg_cls.__name__}, got {type(config).__name__}")
    policy = cls(config, spec, total_steps)
    policy.algo_name = name  # qt and dtr share a class; the checkpoint keeps the name asked for
    return policy


def load_policy(path: str | os.PathLike, device: str = "cpu") -> tuple[Policy, dict[str, Any]]:
    """Rebuild a policy from `Policy.save`'s file; returns it and the file's `extra` dict.

    The file is read with the safe loader (tensors and plain containers only); a missing, truncated, foreign or
    crafted file, or one whose weights do not fit its own config, raises one PbrlError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise PbrlError(f"checkpoint not found: {path}")
    obj = safe_torch_load(path, map_location=resolve_device(device), what="pbrl policy checkpoint")
    try:
        name = obj["algo"]
        _, cfg_cls = algorithm(name)
        # JSON turns tuples (layer sizes, multipliers) into lists; every list-valued config field is a tuple
        config = cfg_cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(obj["config"]).items()}
        )
        spec = PolicySpec.from_json(obj["spec"])
        policy = make_policy(name, spec, config, obj["total_steps"]).to(device)
        policy.load_training_state(obj["state"])
        extra = obj["extra"]
    except Exception as e:  # noqa: BLE001  a foreign or crafted file is the user's input error
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise PbrlError(f"{path}: not a pbrl policy checkpoint ({type(e).__name__}: {msg})") from None
    return policy, extra


def check_overrides(name: str, overrides: dict[str, Any], where: str = "--set") -> dict[str, Any]:
    """`overrides` for algorithm `name`'s config checked against the config dataclass's field types (as the
    command line reads them: JSON numbers, booleans, lists, strings); returns them converted (int -> float for
    float fields, lists -> tuples). An unknown key or a value of the wrong type raises one PbrlError naming it."""
    _, cfg_cls = algorithm(name)
    hints = typing.get_type_hints(cfg_cls)
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise PbrlError(f"{where} {key}: {name} config has no field {key!r}; fields: {sorted(fields)}")
        ok, converted = _fits(value, hints[key])
        if not ok:
            raise PbrlError(f"{where} {key}: expected {_type_name(hints[key])}, got {value!r}")
        out[key] = converted
    return out


def _fits(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether `value` (read from JSON) is an instance of the annotation `tp`, and the value converted to it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if tp is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, v = _fits(value, arg)
            if ok:
                return True, v
        return False, value
    if origin is Literal:
        return value in args, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_fits(v, args[0]) for v in value]
        elif len(args) == len(value):
            items = [_fits(v, a) for v, a in zip(value, args)]
        else:
            return False, value
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_fits(v, args[0]) if args else (True, v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value  # an annotation this check does not model: the config's own checks decide


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))
