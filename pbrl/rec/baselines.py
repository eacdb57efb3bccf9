"""Baseline recommenders and their leave-last-out evaluation: popularity and item-to-item co-occurrence.

The reference points the learned recommenders (offline RL policies, LLM recommenders) are compared against on
held-out next items. Data are item sequences: the actions of each episode of a discrete-action EpisodeDataset
(`item_sequences`), or of each user when the dataset records `session_user` (the recommendation-log loaders do).

Protocol (leave-last-out, as in SASRec / the Amazon and MovieLens sequential-recommendation papers): the last item
of every sequence with at least 2 items is the test target, the items before it are the history, and models are
fitted on the sequences without their last item (`leave_last_out`).

Metrics: Recall@K and NDCG@K of the held-out item (`pbrl.rec.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pbrl.data.dataset import EpisodeDataset
from pbrl.errors import PbrlError
from pbrl.rec.metrics import metrics_from_ranks, target_ranks


class Recommender(Protocol):
    num_items: int

    def fit(self, sequences: Sequence[np.ndarray]) -> Recommender: ...

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[B, I] a score per item for each history (items most recent LAST, as in the sequences)."""
        ...


def item_sequences(dataset: EpisodeDataset, by: str = "episode") -> list[np.ndarray]:
    """Item id sequences in time order: one per episode (`by="episode"`) or per user (`by="user"`, joining the
    consecutive sessions of one user; needs `session_user` in the metadata)."""
    if not dataset.is_discrete:
        raise PbrlError(f"{dataset.name}: item sequences need a Discrete action space (item ids)")
    seqs = [
        np.asarray(dataset.actions[s:e], dtype=np.int64)
        for s, e in zip(dataset.episode_starts[:-1], dataset.episode_starts[1:])
    ]
    if by == "episode":
        return seqs
    if by != "user":
        raise PbrlError(f"by must be 'episode' or 'user', got {by!r}")
    owners = dataset.metadata.get("session_user")
    if owners is None or len(owners) != len(seqs):
        raise PbrlError(
            f"{dataset.name}: metadata has no session_user list of {len(seqs)} entries (by='user')"
        )
    out: list[np.ndarray] = []
    for i, seq in enumerate(seqs):
        if i > 0 and owners[i] == owners[i - 1]:
            out[-1] = np.concatenate([out[-1], seq])
        else:
            out.append(seq)
    return out


def leave_last_out(
    sequences: Sequence[np.ndarray], min_length: int = 2
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """(train sequences, test histories, test targets [B]): the last item of each sequence of at least
    `min_length` items is held out; shorter sequences stay whole in the training set."""
    if min_length < 2:
        raise PbrlError(f"min_length must be >= 2 (a history and a target), got {min_length}")
    train, histories, targets = [], [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) >= min_length:
            train.append(seq[:-1])
            histories.append(seq[:-1])
            targets.append(int(seq[-1]))
        elif len(seq):
            train.append(seq)
    return train, histories, np.asarray(targets, dtype=np.int64)


def _check_items(sequences: Sequence[np.ndarray], num_items: int) -> None:
    for n, seq in enumerate(sequences):
        if len(seq) and (np.min(seq) < 0 or np.max(seq) >= num_items):
            raise PbrlError(
                f"sequence {n}: item ids must lie in [0, {num_items}); got {np.min(seq)}..{np.max(seq)}"
            )


class PopularityRecommender:
    """Score = how often the item occurs in the training sequences (the same ranking for every history)."""

    def __init__(self, num_items: int):
        self.num_items = num_items
        self.counts = np.zeros(num_items)

    def fit(self, sequences: Sequence[np.ndarray]) -> PopularityRecommender:
        _check_items(sequences, self.num_items)
        flat = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
            if sequences
            else np.zeros(0, int)
        )
        self.counts = np.bincount(flat, minlength=self.num_items).astype(np.float64)  # [I]
        return self

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), self.num_items)).copy()  # [B, I]


class CooccurrenceRecommender:
    """Item-to-item: items that followed the user's recent items in training sequences.

    C[i, j] = sum over training sequences and positions p < q <= p + window with (s_p, s_q) = (i, j) of 1, optionally
    normalised to C[i, j] / sqrt(n_i n_j) (n = item counts; cosine-like, so popular items do not swamp the rest).
    score(h) = sum_{m < recent} decay^m C[h_{-1-m}, :] + 1e-9 * popularity (ties and unseen items fall back to
    popularity). C is stored sparse (CSR arrays), so large catalogues fit.
    """

    def __init__(
        self, num_items: int, window: int = 3, recent: int = 3, decay: float = 0.5, normalize: bool = True
    ):
        if window < 1 or recent < 1 or not 0.0 < decay <= 1.0:
            raise PbrlError("CooccurrenceRecommender: window >= 1, recent >= 1 and decay in (0, 1] expected")
        self.num_items, self.window, self.recent, self.decay, self.normalize = (
            num_items,
            window,
            recent,
            decay,
            normalize,
        )
        self.popularity = PopularityRecommender(num_items)
        self.indptr = np.zeros(num_items + 1, dtype=np.int64)
        self.indices = np.zeros(0, dtype=np.int64)
        self.data = np.zeros(0)

    def fit(self, sequences: Sequence[np.ndarray]) -> CooccurrenceRecommender:
        self.popularity.fit(sequences)
        src, dst = [], []
        for seq in sequences:
            seq = np.asarray(seq, dtype=np.int64)
            for d in range(1, self.window + 1):
                if len(seq) > d:
                    src.append(seq[:-d])
                    dst.append(seq[d:])
        n_items = self.num_items
        if src:
            key = np.concatenate(src) * n_items + np.concatenate(dst)  # [P] one per (earlier, later) pair
            uniq, count = np.unique(key, return_counts=True)  # sorted by row, then column: CSR order
        else:
            uniq, count = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rows, cols = uniq // n_items, uniq % n_items
        data = count.astype(np.float64)
        if self.normalize:
            n = self.popularity.counts
            data = data / np.sqrt(n[rows] * n[cols])
        self.indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n_items))].astype(np.int64)
        self.indices, self.data = cols, data
        return self

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(columns, values) of C[i, :]."""
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.data[s:e]

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        _check_items(histories, self.num_items)
        pop = self.popularity.counts
        out = np.tile(1e-9 * pop / max(pop.max(), 1.0), (len(histories), 1))  # [B, I]
        for b, hist in enumerate(histories):
            for m, item in enumerate(np.asarray(hist, dtype=np.int64)[::-1][: self.recent]):
                cols, vals = self.row(int(item))
                out[b, cols] += self.decay**m * vals
        return out


def evaluate_next_item(
    recommender: Recommender,
    sequences: Sequence[np.ndarray],
    ks: Sequence[int] = (1, 5, 10),
    exclude_seen: bool = False,
    batch_size: int = 512,
) -> dict[str, float]:
    """Leave-last-out: fit `recommender` on the training part of `sequences`, score the held-out next items.

    `exclude_seen` removes each history's own items from its ranking (datasets where items are not repeated).
    """
    train, histories, targets = leave_last_out(sequences)
    if len(targets) == 0:
        raise PbrlError("evaluate_next_item: no sequence has 2 or more items to hold one out")
    recommender.fit(train)
    ranks = []
    for s in range(0, len(histories), batch_size):
        hist = histories[s : s + batch_size]
        sc = recommender.scores(hist).astype(np.float64)  # [b, I]
        if exclude_seen:
            for b, h in enumerate(hist):
                sc[b, h] = -np.inf
        ranks.append(target_ranks(sc, targets[s : s + batch_size]))
    out = metrics_from_ranks(np.concatenate(ranks), ks)
    out["rec/num_targets"] = float(len(targets))
    return out
