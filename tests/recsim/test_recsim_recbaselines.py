"""Popularity and co-occurrence recommenders, Recall@K / NDCG@K against naive references."""

import numpy as np
import pytest

from pbrl.data import EpisodeDataset
from pbrl.data.dataset import Episode
from pbrl.errors import PbrlError
from pbrl.rec import (
    CooccurrenceRecommender,
    PopularityRecommender,
    evaluate_next_item,
    item_sequences,
    leave_last_out,
    ranking_metrics,
    target_ranks,
)


def test_metrics_by_hand():
    scores = np.array([[0.1, 0.9, 0.5, 0.3],   # target 2 -> rank 1
                       [0.4, 0.4, 0.1, 0.0],   # target 1 ties with item 0 (lower index first) -> rank 1
                       [0.0, 0.1, 0.2, 0.3]])  # target 0 -> rank 3
    targets = np.array([2, 1, 0])
    np.testing.assert_array_equal(target_ranks(scores, targets), [1, 1, 3])
    m = ranking_metrics(scores, targets, ks=(1, 2, 4))
    assert m["rec/recall@1"] == 0.0 and m["rec/recall@2"] == pytest.approx(2 / 3) and m["rec/recall@4"] == 1.0
    assert m["rec/ndcg@2"] == pytest.approx((2 / np.log2(3)) / 3)
    assert m["rec/ndcg@4"] == pytest.approx((2 / np.log2(3) + 1 / np.log2(5)) / 3)


def test_ranks_equal_a_stable_argsort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 20)).astype(float)  # many ties
    targets = rng.integers(0, 20, 50)
    naive = [int(np.flatnonzero(np.argsort(-s, kind="stable") == t)[0]) for s, t in zip(scores, targets)]
    np.testing.assert_array_equal(target_ranks(scores, targets), naive)


def test_leave_last_out():
    train, hist, tgt = leave_last_out([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])])
    assert [t.tolist() for t in train] == [[1, 2], [4], [5]]
    assert [h.tolist() for h in hist] == [[1, 2], [5]] and tgt.tolist() == [3, 6]


def test_cooccurrence_equals_a_dense_naive_count():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 12, rng.integers(1, 9)) for _ in range(40)]
    rec = CooccurrenceRecommender(12, window=2, recent=2, decay=0.5, normalize=True).fit(seqs)
    C = np.zeros((12, 12))
    for s in seqs:
        for p in range(len(s)):
            for q in range(p + 1, min(p + 2, len(s) - 1) + 1):
                C[s[p], s[q]] += 1
    n = np.bincount(np.concatenate(seqs), minlength=12).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        C = np.where(C > 0, C / np.sqrt(np.outer(n, n)), 0.0)
    hists = [np.array([3, 7]), np.array([5]), np.array([0, 1, 2])]
    pop = 1e-9 * n / n.max()
    expected = np.stack([pop + C[h[-1]] + 0.5 * (C[h[-2]] if len(h) > 1 else 0) for h in hists])
    np.testing.assert_allclose(rec.scores(hists), expected, rtol=1e-12)


def test_popularity_counts():
    rec = PopularityRecommender(5).fit([np.array([0, 1, 1]), np.array([1, 4])])
    np.testing.assert_array_equal(rec.scores([np.array([2])])[0], [1, 3, 0, 0, 1])


def _markov_sequences(num_items, n, length, seed):
    """Users walk a fixed 'next item' chain (i -> succ[i] with prob 0.8, else a uniform item)."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(num_items)
    seqs = []
    for _ in range(n):
        s = [int(rng.integers(num_items))]
        for _ in range(length - 1):
            s.append(int(succ[s[-1]]) if rng.random() < 0.8 else int(rng.integers(num_items)))
        seqs.append(np.array(s))
    return seqs


def test_cooccurrence_learns_sequential_structure_that_popularity_cannot():
    seqs = _markov_sequences(50, 300, 8, seed=0)
    pop = evaluate_next_item(PopularityRecommender(50), seqs, ks=(1, 10))
    co = evaluate_next_item(CooccurrenceRecommender(50), seqs, ks=(1, 10))
    assert co["rec/num_targets"] == 300
    assert pop["rec/recall@10"] < 0.4  # popularity is near chance (10 / 50) on a uniform chain
    assert co["rec/recall@1"] > 0.6 and co["rec/ndcg@10"] > pop["rec/ndcg@10"] + 0.4


def test_item_sequences_by_episode_and_by_user():
    def ep(actions):
        t = len(actions)
        return Episode(np.zeros((t + 1, 1), np.float32), np.asarray(actions, np.int64), np.ones(t, np.float32),
                       np.zeros(t, bool), np.zeros(t, bool))

    ds = EpisodeDataset.from_episodes([ep([1, 2]), ep([3]), ep([4, 5])], metadata={"session_user": ["u", "u", "v"]})
    assert [s.tolist() for s in item_sequences(ds)] == [[1, 2], [3], [4, 5]]
    assert [s.tolist() for s in item_sequences(ds, by="user")] == [[1, 2, 3], [4, 5]]
    with pytest.raises(PbrlError, match="session_user"):
        item_sequences(EpisodeDataset.from_episodes([ep([1, 2])]), by="user")


def test_exclude_seen_and_bad_ids():
    seqs = [np.array([0, 1, 0]), np.array([1, 0, 2])]
    m = evaluate_next_item(PopularityRecommender(3), seqs, ks=(1,), exclude_seen=True)
    assert m["rec/recall@1"] == 0.5  # target 0 was seen (excluded); item 2 is the only unseen one for user 2
    with pytest.raises(PbrlError, match=r"item ids must lie in \[0, 3\)"):
        PopularityRecommender(3).fit([np.array([0, 3])])


def test_cooccurrence_beats_popularity_on_click_model_sessions():
    # the click-model behaviour policy follows the user's history, so next items depend on previous ones
    from pbrl_envs.recsim_data import collect_sessions

    ds = collect_sessions("click", num_transitions=5000, seed=0)
    seqs = item_sequences(ds)
    co = evaluate_next_item(CooccurrenceRecommender(ds.action_space.n), seqs, ks=(10,))
    pop = evaluate_next_item(PopularityRecommender(ds.action_space.n), seqs, ks=(10,))
    assert co["rec/num_targets"] == pop["rec/num_targets"] == sum(len(s) >= 2 for s in seqs)
    assert co["rec/recall@10"] > pop["rec/recall@10"] + 0.2
