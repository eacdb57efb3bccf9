"""Next-item ranking metrics: Recall@K and NDCG@K for one relevant (held-out) item per history.

With rank = the 0-based position of the target when items are sorted by decreasing score (ties broken by item index,
as a stable sort would):
    Recall@K = 1[rank < K]                 (= hit rate with one relevant item)
    NDCG@K   = 1[rank < K] / log2(rank + 2)   (the ideal DCG is 1)
averaged over histories (Jarvelin & Kekalainen 2002 for NDCG; the leave-last-out use follows SASRec, Kang & McAuley
2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pbrl.errors import PbrlError


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[B] 0-based rank of each target under decreasing score, ties broken by item index (stable sort order)."""
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(scores) != len(targets):
        raise PbrlError(f"scores must be [B, I] with B = {len(targets)} targets; got shape {scores.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise PbrlError(f"targets must be item ids in [0, {scores.shape[1]})")
    t = scores[np.arange(len(targets)), targets][:, None]  # [B, 1]
    idx = np.arange(scores.shape[1])[None, :]  # [1, I]
    return ((scores > t) | ((scores == t) & (idx < targets[:, None]))).sum(1)


def metrics_from_ranks(rank: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """{"rec/recall@K", "rec/ndcg@K"} averaged over targets, from their 0-based ranks [B]."""
    rank = np.asarray(rank)
    if len(rank) == 0:
        raise PbrlError("ranking metrics need at least one target")
    out: dict[str, float] = {}
    for k in ks:
        hit = rank < k
        out[f"rec/recall@{k}"] = float(hit.mean())
        out[f"rec/ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())
    return out


def ranking_metrics(
    scores: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """{"rec/recall@K", "rec/ndcg@K"} of [B, I] scores against [B] targets (see the module docstring)."""
    return metrics_from_ranks(target_ranks(scores, targets), ks)
