import os
import pickle
import shutil

import numpy as np
import pytest

from pbrl.data import Episode, EpisodeDataset, PreferencePairs, safe_unpickle, scripted_preferences
from pbrl.data.teachers import Teacher, label_pairs, segment_returns
from pbrl.errors import PbrlError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "fixtures")
UNI = os.path.join(FIXTURES, "uni_rlhf", "hopper-medium-replay-v2")
PT = os.path.join(FIXTURES, "pt_human", "hopper-medium-replay-v2")
needs_fixtures = pytest.mark.skipif(not os.path.isdir(UNI), reason="shared fixtures not beside the checkout")


@needs_fixtures
def test_uni_rlhf_human_labels():
    p = PreferencePairs.from_uni_rlhf(UNI)
    assert len(p) == 2000 and p.length == 200
    assert int(p.ties.sum()) == 292  # labels == -1 in the real file
    assert p.start_a[:3].tolist() == [261131, 44325, 305249] and p.start_b[:3].tolist() == [134692, 20912, 170461]
    assert p.label[:3].tolist() == [0.0, 0.5, 0.0]
    assert p.meta["labels"] == "human"


@needs_fixtures
def test_pt_human_labels():
    p = PreferencePairs.from_pt(PT)
    assert len(p) == 500 and p.length == 100
    assert int(p.ties.sum()) == 191
    assert p.label[:2].tolist() == [0.5, 1.0]
    assert p.start_a[0] == 185304 and p.start_b[0] == 19987


@needs_fixtures
def test_uni_rlhf_write_read_round_trip(tmp_path):
    p = PreferencePairs.from_uni_rlhf(UNI)
    p.to_uni_rlhf(str(tmp_path), env="hopper-medium-replay-v2", kind="human")
    q = PreferencePairs.load(str(tmp_path))
    np.testing.assert_array_equal(p.start_a, q.start_a)
    np.testing.assert_array_equal(p.label, q.label)


def test_scripted_float_labels_and_npz_round_trip(tmp_path):
    folder = tmp_path / "uni"
    p = PreferencePairs(np.array([0, 5]), np.array([3, 1]), 2, np.array([0.25, 1.0]), {"x": 1})
    p.to_uni_rlhf(str(folder))  # soft label -> float [N, 2] layout
    raw = safe_unpickle(str(next(folder.glob("fake_label_*"))))
    np.testing.assert_allclose(raw, [[0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_allclose(PreferencePairs.load(str(folder)).label, [0.25, 1.0])
    p.save(str(tmp_path / "npz"))
    q = PreferencePairs.load(str(tmp_path / "npz"))
    assert q.meta == {"x": 1} and q.length == 2
    np.testing.assert_array_equal(q.start_b, [3, 1])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "label_human"
    with open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(PbrlError, match="refused to unpickle posix.system|refused to unpickle os.system"):
        safe_unpickle(str(path))
    with open(path, "wb") as f:
        pickle.dump([0, 1, 2], f)  # 2 is not a label
    (tmp_path / "indices_num3").write_bytes(pickle.dumps(np.arange(3)))
    (tmp_path / "indices_2_num3").write_bytes(pickle.dumps(np.arange(3)))
    with pytest.raises(PbrlError, match="label entry 2 is 2"):
        PreferencePairs.from_pt(str(tmp_path))


@needs_fixtures
def test_validate_names_the_offending_entry(tmp_path):
    ds = EpisodeDataset.from_episodes(
        [Episode(np.zeros((1001, 1)), np.zeros((1000, 1)), np.zeros(1000), np.zeros(1000, bool), np.zeros(1000, bool))]
    )
    shutil.copytree(UNI, tmp_path / "u")
    p = PreferencePairs.load(str(tmp_path / "u"))
    with pytest.raises(PbrlError, match=r"start_a\[0\] = 261131 with length 200 runs past the dataset \(1000"):
        p.validate(ds, source="u")


def _ramp_dataset(n_eps=20, T=50, seed=0) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n_eps):
        r = rng.normal(size=T).astype(np.float32)
        eps.append(Episode(rng.normal(size=(T + 1, 3)), rng.normal(size=(T, 2)), r, np.zeros(T, bool), np.eye(T, dtype=bool)[-1]))
    return EpisodeDataset.from_episodes(eps, metadata={"name": "ramp"})


def test_exact_teacher_agrees_with_true_returns():
    ds = _ramp_dataset()
    p = scripted_preferences(ds, 500, 10, "exact", seed=1)
    ra = segment_returns(ds.rewards, p.start_a, 10)
    rb = segment_returns(ds.rewards, p.start_b, 10)
    np.testing.assert_array_equal(p.label, np.where(rb > ra, 1.0, np.where(rb == ra, 0.5, 0.0)))
    # windows never cross an episode
    ep = ds.episode_index_of(p.start_a)
    assert np.all(ds.episode_index_of(p.start_a + 9) == ep)
    p10 = scripted_preferences(ds, 500, 10, "exact", seed=1, tie_threshold=1.0)
    np.testing.assert_array_equal(p10.ties, np.abs(rb - ra) <= 1.0)


def test_segment_returns_by_hand():
    r = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(segment_returns(r, np.array([0, 1]), 3), [7.0, 14.0])
    # myopic: gamma^(H-1-t): [0.25, 0.5, 1] for H=3, gamma=0.5
    np.testing.assert_allclose(segment_returns(r, np.array([0]), 3, gamma=0.5), [0.25 + 1.0 + 4.0])


def test_bpref_models_change_label_statistics():
    rng = np.random.default_rng(0)
    ra, rb = rng.normal(size=20000), rng.normal(size=20000)
    exact, _ = label_pairs(ra, rb, Teacher(), np.random.default_rng(1))
    truth = (rb > ra).astype(np.float32)
    np.testing.assert_array_equal(exact, truth)
    # mistake: about epsilon of the labels flipped
    mis, _ = label_pairs(ra, rb, Teacher(epsilon=0.2), np.random.default_rng(1))
    assert abs((mis != truth).mean() - 0.2) < 0.015
    # stochastic: agreement equals the mean Bradley-Terry probability of the better segment
    sto, _ = label_pairs(ra, rb, Teacher(beta=1.0), np.random.default_rng(1))
    expected = np.mean(1 / (1 + np.exp(-np.abs(rb - ra))))
    assert abs((sto == truth).mean() - expected) < 0.015
    # equal: ties exactly where |diff| < threshold
    eq, _ = label_pairs(ra, rb, Teacher(equal_threshold=0.5), np.random.default_rng(1))
    np.testing.assert_array_equal(eq == 0.5, np.abs(rb - ra) < 0.5)
    # skip: queries with both returns below the threshold are dropped
    _, keep = label_pairs(ra, rb, Teacher(skip_threshold=0.0), np.random.default_rng(1))
    np.testing.assert_array_equal(keep, np.maximum(ra, rb) >= 0.0)


def test_myopic_teacher_weights_the_segment_end():
    # segment a is good early, b late: the exact teacher prefers a, the myopic one b
    r = np.array([10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0])
    ds = EpisodeDataset.from_episodes(
        [Episode(np.zeros((9, 1)), np.zeros((8, 1)), r, np.zeros(8, bool), np.eye(8, dtype=bool)[-1])]
    )
    ra, rb = segment_returns(r, np.array([0]), 4), segment_returns(r, np.array([4]), 4)
    assert ra > rb
    y, _ = label_pairs(segment_returns(r, np.array([0]), 4, 0.5), segment_returns(r, np.array([4]), 4, 0.5), Teacher(gamma=0.5), np.random.default_rng(0))
    assert y[0] == 1.0
    p = scripted_preferences(ds, 50, 4, "myopic", seed=0, gamma=0.5)
    assert p.meta["teacher_params"]["gamma"] == 0.5


def test_skip_teacher_redraws_until_enough_queries():
    ds = _ramp_dataset()
    p = scripted_preferences(ds, 200, 10, "skip", seed=0, skip_threshold=0.0)
    ra = segment_returns(ds.rewards, p.start_a, 10)
    rb = segment_returns(ds.rewards, p.start_b, 10)
    assert len(p) == 200 and np.all(np.maximum(ra, rb) >= 0.0)


def test_split_is_disjoint_and_complete():
    p = scripted_preferences(_ramp_dataset(), 100, 5, seed=0)
    tr, va = p.split(0.2, seed=0)
    assert len(tr) == 80 and len(va) == 20
    pairs = set(zip(tr.start_a, tr.start_b)) | set(zip(va.start_a, va.start_b))
    assert pairs == set(zip(p.start_a, p.start_b))


def test_bad_labels_rejected():
    with pytest.raises(PbrlError, match="label entry 1"):
        PreferencePairs(np.array([0, 1]), np.array([1, 2]), 3, np.array([0.0, 1.5]))


def test_per_pair_lengths_round_trip_validate_and_old_npz(tmp_path):
    import io

    p = PreferencePairs.of_lengths(np.array([0, 10, 4]), np.array([5, 2, 7]), np.array([3, 8, 1]), np.array([1.0, 0.0, 0.5]))
    assert p.length == 8 and not p.fixed_length
    assert p.subset(np.array([0, 2])).lengths.tolist() == [3, 1]
    q = PreferencePairs.load(p.save(str(tmp_path / "mixed")))
    np.testing.assert_array_equal(q.lengths, [3, 8, 1])
    assert q.length == 8
    # a file written before per-pair lengths existed: no `lengths` array, every pair has `length` steps
    buf = io.BytesIO()
    np.savez(buf, start_a=np.array([0, 1]), start_b=np.array([2, 3]), label=np.array([1.0, 0.0], np.float32),
             length=np.int64(4), format_version=np.int64(1), meta=np.array("{}"))
    (tmp_path / "old.npz").write_bytes(buf.getvalue())
    old = PreferencePairs.load(str(tmp_path / "old.npz"))
    assert old.fixed_length and old.lengths.tolist() == [4, 4]
    # validation uses each pair's own length: pair 1 (start 10, 8 steps) needs 18 transitions
    ds = EpisodeDataset.from_episodes([_episode(17)])
    with pytest.raises(PbrlError, match=r"start_a\[1\] = 10 with length 8 runs past"):
        p.validate(ds)
    p.validate(EpisodeDataset.from_episodes([_episode(18)]))
    with pytest.raises(PbrlError, match="one segment length"):
        p.to_uni_rlhf(str(tmp_path / "uni"))
    with pytest.raises(PbrlError, match="lengths entry 0 is 9"):
        PreferencePairs(np.array([0]), np.array([1]), 8, np.array([1.0]), lengths=np.array([9]))


def _episode(n):
    return Episode(
        observations=np.zeros((n + 1, 2), np.float32),
        actions=np.zeros((n, 1), np.float32),
        rewards=np.zeros(n, np.float32),
        terminations=np.zeros(n, bool),
        truncations=np.eye(1, n, n - 1, dtype=bool)[0],
    )


def test_repr_is_one_line_summary_without_arrays():
    pairs = PreferencePairs(np.arange(400), np.arange(400) + 1000, 25, np.r_[np.full(100, 0.5), np.ones(300)],
                            {"source": "scripted", "teacher": "mistake"})
    assert repr(pairs) == "PreferencePairs(400 pairs of 25 steps, ties 25.0%, source scripted (mistake))"
    assert str(pairs) == repr(pairs)
    mixed = PreferencePairs.of_lengths(np.arange(3), np.arange(3), np.array([2, 5, 4]), np.array([1.0, 0.0, 0.2]))
    assert repr(mixed) == "PreferencePairs(3 pairs of 2-5 steps, ties 0.0%, source pbrl)"
    empty = PreferencePairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 3, np.zeros(0))
    assert repr(empty) == "PreferencePairs(0 pairs of 3 steps, ties -, source pbrl)"
