"""A dataset scored into units for relabeling, and the chunked pass every sequence learner shares.

Each episode is cut into chunks of the learner's query length L (the last one shorter, `chunk_table`); a sequence
learner runs over each chunk as one causal sequence (context restarts at chunk starts), many chunks per batch,
right-padded to L (`chunked_outputs`). A unit is what a learner scores: one step (step-wise MLP, Preference
Transformer) or one segment (segment-level model); `RawRewards` holds the members' values of the units [M, S], the
unit of each transition, each unit's length and its relative position k/K in its chunk (the location normalizer's
input). Densifying is shared: r_t = v[unit(t)] / l_unit(t).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from pbrl.data import EpisodeDataset
    from pbrl.rewards.learner import RewardLearner, StepOutput


_SCORING_PROGRESS: contextvars.ContextVar[Callable[[int, int, str], None] | None] = contextvars.ContextVar(
    "pbrl_scoring_progress", default=None
)


@contextlib.contextmanager
def scoring_progress(callback: Callable[[int, int, str], None]) -> Iterator[None]:
    """Inside the block, every scoring pass over a dataset (`chunked_outputs`, the step-wise MLP's rows) calls
    `callback(done, total, unit)` after each batch, in the pass's own unit (`chunk` or `step`): how a progress bar follows a
    relabel without each learner's `units` taking a bar argument."""
    token = _SCORING_PROGRESS.set(callback)
    try:
        yield
    finally:
        _SCORING_PROGRESS.reset(token)


def report_scoring(done: int, total: int, unit: str) -> None:
    """Tell the `scoring_progress` callback, if any, that `done` of `total` units (`chunk`, `step`) are scored."""
    cb = _SCORING_PROGRESS.get()
    if cb is not None:
        cb(done, total, unit)


@dataclass(frozen=True)
class RawRewards:
    """The ensemble's unnormalized values over a dataset, as units (steps or segments)."""

    values: np.ndarray  # [M, S] float32 per-member value of each unit
    unit_of: np.ndarray  # [N] int64 unit of each flat transition
    unit_length: np.ndarray  # [S] int64 steps per unit
    position: np.ndarray  # [S] float64 relative position k/K of the unit in its chunk, in (0, 1]

    def densify(self, unit_values: np.ndarray) -> np.ndarray:
        """r_t = v[unit(t)] / l_unit(t)  -> [N]."""
        return unit_values[self.unit_of] / self.unit_length[self.unit_of]


def chunk_table(ds: EpisodeDataset, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts [C], lengths [C]) of consecutive chunks of at most `length` steps inside each episode."""
    ep_starts, ep_lens = ds.episode_starts[:-1], ds.episode_lengths
    per_ep = -(-ep_lens // length)  # ceil
    starts = np.repeat(ep_starts, per_ep) + length * (
        np.arange(per_ep.sum()) - np.repeat(np.cumsum(per_ep) - per_ep, per_ep)
    )
    ends = np.repeat(ep_starts + ep_lens, per_ep)
    return starts.astype(np.int64), np.minimum(ends - starts, length).astype(np.int64)


def per_step_units(values: np.ndarray, ds: EpisodeDataset, length: int) -> RawRewards:
    """Units = the transitions themselves (values [M, N] in flat order); position = (k + 1) / chunk length."""
    n = ds.num_transitions
    starts, lens = chunk_table(ds, length)
    k = np.arange(n) - np.repeat(starts, lens)  # [N] position inside its chunk (chunks tile the flat array)
    return RawRewards(values, np.arange(n), np.ones(n, np.int64), (k + 1) / np.repeat(lens, lens))


def chunked_outputs(
    model: RewardLearner, ds: EpisodeDataset, rows: int = 64
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None, StepOutput]]:
    """Run `model` over `rows` chunks at a time; yields (flat indices of the valid steps in row-major order [V],
    mask [B, L], segment ends [B, L] or None, StepOutput [M, B, L]). Chunks come in flat order."""
    dev = model.config.device
    feats = model.features(ds).to(dev)  # [N, D]
    signal = model.reference_signal(ds)
    signal = signal.to(dev) if signal is not None else None
    n, length = ds.num_transitions, model.length
    starts, lens = chunk_table(ds, length)
    ar = torch.arange(length, device=dev)
    for i in range(0, len(starts), rows):
        s = torch.from_numpy(starts[i : i + rows]).to(dev)  # [B]
        ln = torch.from_numpy(lens[i : i + rows]).to(dev)  # [B]
        mask = ar[None] < ln[:, None]  # [B, L]
        idx = torch.minimum(s[:, None] + ar[None], torch.tensor(n - 1, device=dev))  # [B, L] (padding clamped)
        sig = signal[idx] if signal is not None else None
        out = model.output(feats[idx], mask, sig)
        flat = (s[:, None] + ar[None])[mask].cpu().numpy()  # valid flat indices, row-major
        yield flat, mask, model.ends(mask, sig), out
        report_scoring(min(i + rows, len(starts)), len(starts), "chunk")
