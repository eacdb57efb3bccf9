"""Reference scores and normalized scores (D4RL's convention, 0-100).

normalized = 100 * (R - R_min) / (R_max - R_min), with R_min the return of a random policy and R_max that of an
expert (D4RL, Fu et al. 2020). The table holds D4RL's published numbers; pbrl's own suites register theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset

# family -> (random return, expert return); D4RL's numbers (d4rl/infos.py)
REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
}


def register_reference_scores(name: str, min_score: float, max_score: float) -> None:
    """Add (or replace) a family's reference returns; `name` is matched as a prefix of dataset names."""
    if not max_score > min_score:
        raise PbrlError(f"reference scores for {name!r}: max ({max_score}) must exceed min ({min_score})")
    REFERENCE_SCORES[name.lower()] = (float(min_score), float(max_score))


def reference_scores(name_or_dataset: str | EpisodeDataset) -> tuple[float, float]:
    """(min, max) reference returns: from the dataset's metadata if it has them, else the table by name."""
    if not isinstance(name_or_dataset, str):
        meta = name_or_dataset.metadata
        if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
            return float(meta["ref_min_score"]), float(meta["ref_max_score"])
        candidates = [str(meta.get(k) or "") for k in ("name", "dataset_id", "env_id")]
    else:
        candidates = [name_or_dataset]
    for cand in candidates:
        key = cand.lower().replace("pbrl/", "").replace("mujoco/", "").replace("d4rl:", "")
        key = (
            key.rsplit("/", 1)[-1]
            if key.count("/") and not any(key.startswith(f) for f in REFERENCE_SCORES)
            else key
        )
        # longest family name that prefixes the name (so "walker2d-medium-v2" -> walker2d)
        for fam in sorted(REFERENCE_SCORES, key=len, reverse=True):
            if key.startswith(fam):
                return REFERENCE_SCORES[fam]
    raise PbrlError(
        f"no reference scores for {candidates[0] or 'this dataset'!r}: known families {sorted(REFERENCE_SCORES)}; "
        "set ref_min_score/ref_max_score in the dataset metadata or call register_reference_scores"
    )


def normalized_score(name_or_dataset: str | EpisodeDataset, returns: np.ndarray | float) -> np.ndarray:
    """D4RL-normalized score(s) on the 0-100 scale."""
    lo, hi = reference_scores(name_or_dataset)
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
