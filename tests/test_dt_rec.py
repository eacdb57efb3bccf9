"""pbrl's discrete DT as a recommender: the log-to-episodes conversion by hand, and learning a planted sequence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.policies.dt import DTConfig
from pbrl.rec.dt_rec import DTRecommender, genre_year_features, sequences_to_episodes
from pbrl.rec.movielens import evaluate_ranking, leave_one_out

torch.set_num_threads(1)


def test_genre_year_features_by_hand():
    feats, names = genre_year_features(["A (1990); Comedy, Drama", "B (2000); Drama", "C"])
    assert names == ["Comedy", "Drama"]
    np.testing.assert_allclose(feats, [[1, 1, 0.0], [0, 1, 1.0], [0, 0, 0.0]])


def test_two_user_log_to_episodes_by_hand():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)  # 3 items, D = 2
    ds = sequences_to_episodes([np.array([2, 0, 1]), np.array([], dtype=np.int64), np.array([1, 2])], feats)
    # user 0: steps (s, a) = (0, 2), (phi 2, 0), (phi 0, 1), final next obs phi 1; the empty user is skipped
    np.testing.assert_array_equal(ds.episode_starts, [0, 3, 5])
    np.testing.assert_array_equal(ds.actions, [2, 0, 1, 1, 2])
    np.testing.assert_array_equal(ds.rewards, [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(ds.truncations, [False, False, True, False, True])
    np.testing.assert_array_equal(ds.terminations, [False] * 5)
    np.testing.assert_array_equal(ds.observations_all, [[0, 0], [1, 1], [1, 0], [0, 1],
                                                        [0, 0], [0, 1], [1, 1]])
    np.testing.assert_array_equal(ds.episode_returns(), [3.0, 2.0])
    with pytest.raises(PbrlError, match=r"sequences\[0\]: item id 3 outside the catalog 0..2"):
        sequences_to_episodes([np.array([0, 3])], feats)


def test_dt_ranks_the_planted_next_item_first():
    # item i is always followed by item i + 1 (mod 30); each user starts at its own item
    rng = np.random.default_rng(0)
    num_items, users = 30, 60
    seqs = [(int(rng.integers(num_items)) + np.arange(int(rng.integers(12, 25)))) % num_items for _ in range(users)]
    feats = rng.normal(size=(num_items, 4)).astype(np.float32)  # features carry no order; ids must be learned
    split = leave_one_out(seqs, max_history=20)
    cfg = DTConfig(context=8, embed_dim=32, n_layers=1, n_heads=1, dropout=0.0, batch_size=32, lr=3e-3,
                   warmup_steps=20, rtg_scale=10.0)
    rec = DTRecommender(feats, cfg, updates=400, seed=0, progress=False).fit(split.train)
    assert rec.history[-1]["loss"] < rec.history[0]["loss"] - 1.0
    pos = [len(t) + 1 for t in split.train]
    test = evaluate_ranking(rec.scores, list(zip(split.test_histories, pos)), split.test_targets)
    assert test["recall@1"] > 0.8
    untrained = DTRecommender(feats, cfg, updates=1, seed=0, progress=False).fit(split.train)
    assert evaluate_ranking(untrained.scores, list(zip(split.test_histories, pos)), split.test_targets)[
        "recall@1"] < 0.3
