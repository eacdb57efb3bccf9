"""Relabel every transition of an offline dataset with a learned reward, in batches.

`raw_rewards(dataset, model)` scores the whole dataset into the learner's units (`model.units`, see `units.py`):
each episode is cut into chunks of the model's query length L (the last one shorter); a sequence learner runs over
each chunk as one causal sequence (context restarts at chunk starts), a step-wise one scores every step alone. The
result is the members' values [M, S] of the units: steps (MLP, Preference Transformer) or segments (segment model).
`relabel(dataset, model, normalizer)` normalizes the units (see `normalizers.py`) and densifies them into one reward
per transition, r_t = r~_unit / l_unit, and returns a new EpisodeDataset whose metadata provenance records the reward
model, the normalizer and the source. `relabel_to_minari` writes it as a local Minari dataset (spaces are inferred
from the data when the source, e.g. a D4RL file, carries no environment id).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pbrl.data import EpisodeDataset
from pbrl.rewards.learner import RewardLearner
from pbrl.rewards.nets import step_chunk_rows
from pbrl.rewards.normalizers import normalize
from pbrl.rewards.normalizers import shift as shift_rewards
from pbrl.rewards.units import RawRewards, chunk_table, scoring_progress

__all__ = ["RawRewards", "chunk_table", "learned_rewards", "raw_rewards", "relabel", "relabel_to_minari",
           "step_chunk_rows"]


@torch.inference_mode()
def raw_rewards(
    ds: EpisodeDataset, model: RewardLearner, batch_size: int | None = None, progress: bool = False
) -> RawRewards:
    """Score every transition of `ds` with every member, as the learner's units (see the module docstring).
    `progress`: a bar over the scored chunks of the query length (or steps, for a step-wise learner), with the rate."""
    model.net.eval()
    if not progress:
        return model.units(ds, batch_size)
    from tqdm.auto import tqdm

    with tqdm(desc="scoring", leave=False, dynamic_ncols=True, mininterval=0.5) as bar:

        def tick(done: int, total: int, unit: str) -> None:
            bar.total, bar.unit = total, unit
            bar.update(done - bar.n)

        with scoring_progress(tick):
            return model.units(ds, batch_size)


def learned_rewards(
    ds: EpisodeDataset,
    model: RewardLearner,
    normalizer: str = "member-zscore",
    progress: bool = False,
    shift: str = "none",
) -> np.ndarray:
    """One normalized (then shifted, see `normalizers.shift`) learned reward per flat transition [N] float32."""
    raw = raw_rewards(ds, model, progress=progress)
    unit = normalize(
        normalizer,
        raw.values,
        position=raw.position,
        unit_of=raw.unit_of,
        unit_length=raw.unit_length,
        episode_starts=ds.episode_starts,
    )
    return shift_rewards(shift, raw.densify(unit)).astype(np.float32)


def relabel(
    dataset: EpisodeDataset,
    model: RewardLearner,
    normalizer: str = "member-zscore",
    provenance: dict[str, Any] | None = None,
    progress: bool = False,
    shift: str = "none",
) -> EpisodeDataset:
    """A new dataset with the model's normalized (and shifted) rewards; the provenance entry names model,
    normalizer, shift and source."""
    model.check(dataset, dataset.name)
    rewards = learned_rewards(dataset, model, normalizer, progress=progress, shift=shift)
    entry = {
        "step": "relabel",
        "reward_model": model.kind,
        "ensemble": model.members,
        "segment_length": model.length,
        "normalizer": normalizer,
        "shift": shift,
        "source": dataset.name,
        "reward_info": {k: model.info.get(k) for k in ("dataset", "pairs", "source", "git_revision")},
        # the true returns stay with the data, so `pbrl data info` reports them without the source dataset
        "true_episode_returns": dataset.episode_returns().tolist(),
    }
    entry.update(provenance or {})
    return dataset.with_rewards(rewards, provenance=entry)


def relabel_to_minari(
    spec: str,
    reward_dir: str,
    out_id: str,
    normalizer: str = "member-zscore",
    overwrite: bool = False,
    device: str = "cpu",
    progress: bool = False,
    shift: str = "none",
) -> tuple[EpisodeDataset, str]:
    """Load `spec`, relabel it with the reward model in `reward_dir`, write Minari dataset `out_id`."""
    from pbrl.data import load_dataset
    from pbrl.data.minari_io import dataset_exists
    from pbrl.errors import PbrlError
    from pbrl.rewards.train import load_reward_model

    if dataset_exists(out_id) and not overwrite:  # before scoring the whole dataset, not after
        raise PbrlError(f"Minari dataset {out_id!r} already exists (pass --overwrite to replace it)")
    ds = load_dataset(spec)
    model = load_reward_model(reward_dir, device=device)
    out = relabel(ds, model, normalizer, provenance={"source": spec, "reward_dir": reward_dir}, progress=progress,
                  shift=shift)
    if out.metadata.get("name") in (None, "dataset"):
        out.metadata["name"] = out_id
    path = out.to_minari(
        out_id, overwrite=overwrite, description=f"{spec} relabeled by a learned reward ({normalizer}, shift {shift})"
    )
    return out, path
