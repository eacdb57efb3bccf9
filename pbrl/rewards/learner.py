"""The reward-learner protocol and the registry of learners by name.

A reward learner maps a batch of step sequences x [M, B, T, ...] (M ensemble members) and a mask [M, B, T] to a
`StepOutput`: per-step values v and aggregation weights w, so that the sequence score is S = sum_t w_t v_t
(`sequence_score`). What differs between learners, and nothing else, lives in the learner's own module:

    build_net(in_dim, max_len)   the ensemble network                         (nets.py, segment.py, pt.py)
    prepare(dataset)             data-dependent set-up before training         (segment: behaviour policy, threshold)
    reference_signal(dataset)    a per-step side input of the segmenter [N]     (None for most learners)
    ends(mask, signal)           where its segments end [.., T] bool            (None for step-wise learners)
    units(dataset)               the dataset scored into units for relabeling  (steps or segments, `RawRewards`)
    extra_state() / load_extra_state(state, cfg)   what it saves beyond the network

The trainer (`train.py`), the relabeler (`relabel.py`) and the report (`report.py`) only call these; the
Bradley–Terry loss, normalizers and densifier are shared. `RewardModel` implements the control adapter (a step is
x_t = concat(s_t, a_t), see `features.py`) and the defaults; a learner subclasses it once (no deeper hierarchy) and
registers with `register_learner(name, cls)`. A "step" is one (s, a) in control and one token in a language model:
a learner whose steps are tokens overrides `create` / `features` and keeps the rest.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, get_args, runtime_checkable

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.rewards.features import FeatureSpec, step_features, windows
from pbrl.rewards.units import RawRewards, chunked_outputs, per_step_units
from pbrl.utils import atomic_torch_save, atomic_write_json

if TYPE_CHECKING:
    from pbrl.data import EpisodeDataset
    from pbrl.rewards.train import RewardConfig

# The one list of built-in learner names: `RewardConfig.model` and `pbrl reward train --model` read it, and
# LEARNERS below must hold exactly these (checked at import).
LearnerName = Literal["step", "segment", "pt", "lm"]

CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME = "config.json", "reward.pt", "metrics.jsonl"
FORMAT_VERSION = 1


class StepOutput(NamedTuple):
    values: torch.Tensor  # [M, B, T] per-step values
    weights: torch.Tensor  # [M, B, T] aggregation weights (0 on padding)


def sequence_score(out: StepOutput) -> torch.Tensor:
    """Aggregate per-step values into one score per sequence: S = sum_t w_t v_t  -> [M, B] (float32).

    Summed in float32 even when the values come out of bf16 autocast: a bf16 sum over hundreds of steps would
    round the score (8 mantissa bits) before the Bradley–Terry loss sees it.
    """
    return (out.values.float() * out.weights.float()).sum(-1)


@runtime_checkable
class RewardLearner(Protocol):
    """What every reward learner provides (see the module docstring); `RewardModel` implements it for control."""

    kind: str
    config: RewardConfig
    length: int
    net: nn.Module
    info: dict[str, Any]

    @property
    def members(self) -> int: ...

    def prepare(self, dataset: EpisodeDataset) -> None: ...

    def features(self, dataset: EpisodeDataset) -> torch.Tensor: ...

    def reference_signal(self, dataset: EpisodeDataset) -> torch.Tensor | None: ...

    def ends(self, mask: torch.Tensor, signal: torch.Tensor | None) -> torch.Tensor | None: ...

    def output(self, x: torch.Tensor, mask: torch.Tensor, signal: torch.Tensor | None = None) -> StepOutput: ...

    def units(self, dataset: EpisodeDataset, batch_size: int | None = None) -> RawRewards: ...

    def check(self, dataset: EpisodeDataset, source: str) -> None: ...

    def save(self, out_dir: str | os.PathLike, header: dict[str, Any] | None = None) -> None: ...


class RewardModel:
    """A reward learner plus what it needs to read a control dataset (step spec); the defaults of the protocol.

    Subclasses set `build_net` and override what their kind needs; `kind` is the registry name they are found by.
    """

    kind: ClassVar[str] = ""

    def __init__(
        self, config: RewardConfig, spec: FeatureSpec, length: int, info: dict[str, Any] | None = None
    ) -> None:
        if config.ensemble < 1:
            raise PbrlError(f"ensemble must be >= 1, got {config.ensemble}")
        self.config, self.spec, self.length = config, spec, int(length)
        self.net = self.build_net(spec.step_dim, self.length)
        self.info = dict(info or {})

    @classmethod
    def create(cls, config: RewardConfig, dataset: EpisodeDataset, length: int) -> RewardModel:
        """A fresh learner for `dataset`'s steps and queries of up to `length` steps."""
        return cls(config, FeatureSpec.of(dataset), length)

    def build_net(self, in_dim: int, max_len: int) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must define build_net")

    @property
    def members(self) -> int:
        return self.config.ensemble

    # ------------------------------------------------------------------ learner hooks (defaults)
    def prepare(self, dataset: EpisodeDataset) -> None:
        """Data-dependent set-up before training (nothing by default)."""

    def reference_signal(self, dataset: EpisodeDataset) -> torch.Tensor | None:
        """Per-step side input of the segmenter [N] (None: the learner has none)."""
        return None

    def ends(self, mask: torch.Tensor, signal: torch.Tensor | None) -> torch.Tensor | None:
        """Segment ends [.., T] bool (None: step-wise, every step is its own unit)."""
        return None

    def units(self, dataset: EpisodeDataset, batch_size: int | None = None) -> RawRewards:
        """Score every transition; default: chunks of `length` steps as causal sequences, one unit per step."""
        chunks = chunked_outputs(self, dataset, batch_size or 64)
        values = [out.values[:, mask].float().cpu().numpy() for _, mask, _, out in chunks]  # [M, steps] each
        return per_step_units(np.concatenate(values, 1), dataset, self.length)

    def extra_state(self) -> dict[str, Any]:
        """Tensors saved into reward.pt beside the network (e.g. a behaviour policy)."""
        return {}

    def extra_config(self) -> dict[str, Any]:
        """JSON fields saved into config.json beside the common ones (e.g. a threshold)."""
        return {}

    def load_extra_state(self, state: dict[str, Any], cfg: dict[str, Any]) -> None:
        """Restore what `extra_state` / `extra_config` saved (`state`: reward.pt, `cfg`: config.json)."""

    # ------------------------------------------------------------------ control adapter
    def check(self, dataset: EpisodeDataset, source: str) -> None:
        """Raise a PbrlError when `dataset`'s steps do not look like the ones the learner was trained on."""
        self.spec.check(dataset, source)

    def features(self, dataset: EpisodeDataset) -> torch.Tensor:
        return torch.from_numpy(step_features(dataset, self.spec))  # [N, D]

    def output(self, x: torch.Tensor, mask: torch.Tensor, signal: torch.Tensor | None = None) -> StepOutput:
        """x [B, T, D] (shared by members) or [M, B, T, D]; mask [B, T] or [M, B, T] bool -> StepOutput [M, B, T]."""
        if x.dim() == 3:
            x = x.unsqueeze(0).expand(self.members, -1, -1, -1)
        mask = mask.bool()
        return self.net(x, mask, self.ends(mask, signal))

    def segment_scores(
        self,
        feats: torch.Tensor,
        signal: torch.Tensor | None,
        starts: torch.Tensor,
        length: int,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of the segments [s, s + l) for starts [B] or [M, B] -> [M, B]; padded to `length` steps when
        `lengths` (same shape as starts) gives each segment its own length."""
        x = windows(feats, starts, length)  # [(M,) B, T, D]
        mask = padding_mask(x.shape[:-1], lengths, x.device)
        sig = windows(signal, starts, length) if signal is not None else None
        return sequence_score(self.output(x, mask, sig))

    # ------------------------------------------------------------------ checkpoint
    def save(self, out_dir: str | os.PathLike, header: dict[str, Any] | None = None) -> None:
        """reward.pt (weights, read back with `weights_only=True`) and config.json (`header` first, then the keys
        `load_reward_model` reads: format_version, model, config, spec, length, info, and the learner's own)."""
        out = Path(out_dir)
        atomic_torch_save({"net": self.net.state_dict(), **self.extra_state()}, str(out / WEIGHTS_NAME))
        cfg = {
            **(header or {}),
            "format_version": FORMAT_VERSION,
            "model": self.kind,
            "config": dataclasses.asdict(self.config),
            "spec": dataclasses.asdict(self.spec),
            "length": self.length,
            **self.extra_config(),
            "info": self.info,
        }
        atomic_write_json(str(out / CONFIG_NAME), cfg)


def padding_mask(shape: torch.Size | tuple[int, ...], lengths: torch.Tensor | None, device: Any) -> torch.Tensor:
    """[*, T] bool: step t of row r is valid when t < lengths[r] (all valid when lengths is None)."""
    if lengths is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    return torch.arange(shape[-1], device=device) < lengths[..., None]


# ---------------------------------------------------------------- registry
# name -> the learner class, or "module:Class" imported on first use (the built-ins live beside their networks)
LEARNERS: dict[str, type[RewardModel] | str] = {
    "step": "pbrl.rewards.nets:StepLearner",
    "segment": "pbrl.rewards.segment:SegmentLearner",
    "pt": "pbrl.rewards.pt:PTLearner",
    "lm": "pbrl.rewards.lm_learner:LMRewardLearner",
}

assert set(LEARNERS) == set(get_args(LearnerName)), "LearnerName and LEARNERS name the same learners"


def register_learner(name: str, cls: type[RewardModel] | str) -> None:
    """Make `cls` the learner trained by `RewardConfig(model=name)` (and found by `load_reward_model`)."""
    if not isinstance(cls, str):
        cls.kind = name
    LEARNERS[name] = cls


def get_learner(name: str) -> type[RewardModel]:
    """The learner class registered as `name` (a PbrlError naming the known ones otherwise)."""
    entry = LEARNERS.get(name)
    if entry is None:
        raise PbrlError(f"unknown reward model {name!r}; expected one of {', '.join(LEARNERS)}")
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
        entry.kind = name
        LEARNERS[name] = entry
    return entry
