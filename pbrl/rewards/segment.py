"""Segment-level reward model and segmenters (SegmentRM, Yin et al. 2025, arXiv 2501.02790, generalized to steps).

A causal sequence model gives a value r(x_<=t) at every step of a query. A segmenter splits the query into K
segments with end steps e_1 < ... < e_K (the last valid step always ends a segment). Then

    sequence score  S = (1/K) sum_k r(x_<=e_k)                      (mean of segment-end values)
    dense reward    r_t = r~_k / l_k   for t in segment k           (l_k = its length; r~ the normalized value)

Segmenters (all return ends [.., T] bool):
- fixed length k:     a segment ends every k steps;
- entropy threshold:  step t ends a segment when the reference signal H_t > c (SegmentRM's "peak" method; in
                      control H is the action entropy of a behaviour-cloned Gaussian policy, see `features.py`);
- every step:         K = T (the token-level variant, SegmentRM's c = 0);
- whole query:        K = 1 (the bandit variant, SegmentRM's c = 1000).

`SegmentLearner` (registry name `segment`) is the learner: before training it fits the behaviour policy and sets
the entropy threshold (`prepare`), both saved with its weights; relabeling scores one unit per segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.rewards.features import (
    BehaviorPolicy,
    behavior_entropy,
    behavior_policy_from_state,
    behavior_policy_state,
    fit_behavior_policy,
)
from pbrl.rewards.learner import RewardModel, StepOutput
from pbrl.rewards.nets import EnsembleSequenceModel
from pbrl.rewards.units import RawRewards, chunked_outputs

if TYPE_CHECKING:
    from pbrl.data import EpisodeDataset

SegmenterKind = Literal["fixed", "entropy", "step", "query"]


@dataclass
class SegmenterConfig:
    """How a query is cut into segments."""

    kind: SegmenterKind = "fixed"
    """fixed: every `k` steps; entropy: where the reference signal exceeds the threshold; step: every step;
    query: one segment per query."""
    k: int = 10
    """Segment length of the fixed-length segmenter."""
    entropy_threshold: float | None = None
    """Absolute threshold c on the reference signal; None = the `entropy_quantile` quantile over the dataset."""
    entropy_quantile: float = 0.8
    """Quantile of the dataset's reference signal used as the threshold when `entropy_threshold` is None."""


def last_valid(mask: torch.Tensor) -> torch.Tensor:
    """[.., T] bool: true at the last true position of each row's mask (right padding assumed)."""
    nxt = torch.cat([mask[..., 1:], torch.zeros_like(mask[..., :1])], dim=-1)  # [.., T]
    return mask & ~nxt


def segment_ends(
    config: SegmenterConfig,
    mask: torch.Tensor,
    signal: torch.Tensor | None = None,
    threshold: float | None = None,
) -> torch.Tensor:
    """Segment ends [.., T] bool for a mask [.., T] (bool) and, for the entropy segmenter, a signal [.., T]."""
    mask = mask.bool()
    t = mask.shape[-1]
    if config.kind == "fixed":
        if config.k < 1:
            raise PbrlError(f"segmenter.k must be >= 1, got {config.k}")
        ends = ((torch.arange(t, device=mask.device) + 1) % config.k == 0).expand_as(mask)
    elif config.kind == "entropy":
        c = config.entropy_threshold if threshold is None else threshold
        if signal is None or c is None:
            raise PbrlError("the entropy segmenter needs a reference signal and a threshold")
        ends = signal > c
    elif config.kind == "step":
        ends = torch.ones_like(mask)
    elif config.kind == "query":
        ends = torch.zeros_like(mask)
    else:
        raise PbrlError(f"unknown segmenter {config.kind!r}; expected fixed, entropy, step or query")
    return (ends & mask) | last_valid(mask)


def densify_segments(
    values: torch.Tensor, ends: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """r_t = v[e_k] / l_k for every step t of segment k; 0 after the last end.  values, ends: [.., T] -> [.., T]."""
    t = values.shape[-1]
    idx = torch.arange(t, device=values.device).expand_as(ends)  # [.., T]
    # index of the first end at or after t (t if none: marked invalid below)
    nxt = torch.where(ends, idx, torch.full_like(idx, t)).flip(-1).cummin(-1).values.flip(-1)  # [.., T]
    # index of the last end strictly before t (-1 if none)
    prev_incl = torch.where(ends, idx, torch.full_like(idx, -1)).cummax(-1).values  # [.., T]
    prev = torch.cat([torch.full_like(prev_incl[..., :1], -1), prev_incl[..., :-1]], dim=-1)
    valid = nxt < t
    seg_value = values.gather(-1, nxt.clamp_max(t - 1))  # [.., T]
    out = torch.where(valid, seg_value / (nxt - prev).clamp_min(1).to(values.dtype), torch.zeros_like(values))
    return out if mask is None else out * mask.to(values.dtype)


class SegmentRewardModel(EnsembleSequenceModel):
    """Causal transformer ensemble -> value per step; score = mean of the values at segment ends."""

    @staticmethod
    def head_dim(d_model: int) -> int:
        return 1

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ends: torch.Tensor | None = None) -> StepOutput:
        if ends is None:
            raise PbrlError("the segment-level reward model needs segment ends")
        values = self.head(self.body(x, mask)).squeeze(-1)  # [M, B, T]
        e = (ends & mask.bool()).to(values.dtype).expand_as(values)  # [M, B, T]
        return StepOutput(values, e / e.sum(-1, keepdim=True).clamp_min(1.0))


class SegmentLearner(RewardModel):
    """The segment-level learner (registry name `segment`): `SegmentRewardModel` + a segmenter."""

    behavior: BehaviorPolicy | None = None  # the entropy segmenter's behaviour-cloned policy
    threshold: float | None = None  # the entropy segmenter's threshold c

    def build_net(self, in_dim: int, max_len: int) -> nn.Module:
        c = self.config
        return SegmentRewardModel(in_dim, c.ensemble, d_model=c.d_model, layers=c.layers, heads=c.heads, max_len=max_len)

    def prepare(self, dataset: EpisodeDataset) -> None:
        """Entropy segmenter: behaviour cloning on `dataset`, then c = the configured threshold or the
        `entropy_quantile` quantile of the dataset's action entropy."""
        seg = self.config.segmenter
        if seg.kind != "entropy":
            return
        self.behavior = fit_behavior_policy(dataset, steps=self.config.bc_steps, seed=self.config.seed)
        self.threshold = seg.entropy_threshold
        if self.threshold is None:
            self.threshold = float(np.quantile(behavior_entropy(self.behavior, dataset), seg.entropy_quantile))

    def reference_signal(self, dataset: EpisodeDataset) -> torch.Tensor | None:
        """Per-step action entropy of the behaviour policy [N] (entropy segmenter; None for the others)."""
        if self.config.segmenter.kind != "entropy":
            return None
        if self.behavior is None:
            raise PbrlError("entropy segmenter without a behaviour policy (was the model trained?)")
        return torch.from_numpy(behavior_entropy(self.behavior, dataset))

    def ends(self, mask: torch.Tensor, signal: torch.Tensor | None) -> torch.Tensor:
        return segment_ends(self.config.segmenter, mask, signal, self.threshold)

    def units(self, dataset: EpisodeDataset, batch_size: int | None = None) -> RawRewards:
        """One unit per segment: value at its end, length to the previous end, position k/K in its chunk."""
        values, unit_len, position = [], [], []
        unit_of = np.empty(dataset.num_transitions, np.int64)
        offset = 0
        for flat, mask, ends, out in chunked_outputs(self, dataset, batch_size or 64):
            ar = torch.arange(mask.shape[-1], device=mask.device)
            seg_idx = torch.cumsum(ends.long(), -1) - ends.long()  # [B, L] segment number inside the row
            per_row = ends.sum(-1)  # [B] K
            row_off = torch.cumsum(per_row, 0) - per_row  # [B]
            unit_of[flat] = offset + (row_off[:, None] + seg_idx)[mask].cpu().numpy()
            end_pos = ar.expand_as(ends)[ends]  # [S_b] end index in its row
            prev = torch.cat([torch.full_like(end_pos[:1], -1), end_pos[:-1]])
            # segment length: distance to the previous end in the same row (or to the row start)
            starts_new_row = seg_idx[ends] == 0
            unit_len.append(torch.where(starts_new_row, end_pos + 1, end_pos - prev).cpu().numpy())
            k_of = (seg_idx[ends] + 1).double()
            position.append((k_of / per_row.repeat_interleave(per_row).double()).cpu().numpy())
            values.append(out.values[:, ends].float().cpu().numpy())  # [M, S_b]
            offset += int(per_row.sum())
        return RawRewards(
            np.concatenate(values, 1), unit_of, np.concatenate(unit_len).astype(np.int64), np.concatenate(position)
        )

    def extra_state(self) -> dict[str, Any]:
        return {} if self.behavior is None else {"behavior": behavior_policy_state(self.behavior)}

    def extra_config(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def load_extra_state(self, state: dict[str, Any], cfg: dict[str, Any]) -> None:
        self.threshold = cfg.get("threshold")
        if "behavior" in state:
            self.behavior = behavior_policy_from_state(state["behavior"])
