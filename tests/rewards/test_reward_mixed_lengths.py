"""Preference pairs of different lengths: padded batches + mask train, score and relabel like unpadded pairs."""

import numpy as np
import pytest
import torch

from pbrl.data import EpisodeDataset, PreferencePairs
from pbrl.rewards import RewardConfig, SegmenterConfig, evaluate_pairs, relabel, train_reward

TINY = dict(hidden=(32, 32), d_model=16, heads=2, batch_size=32, early_stop=False)


@pytest.fixture(scope="module")
def task():
    """Reward s_0 on 3000 steps of 10 episodes; 400 pairs of lengths 5..30 labelled by the true segment return."""
    rng = np.random.default_rng(0)
    n, e = 3000, 10
    obs = rng.normal(size=(n + e, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    keep = np.ones(n + e, bool)
    keep[np.arange(1, e + 1) * (n // e) + np.arange(e)] = False
    r = obs[keep][:, 0]
    starts = np.arange(e + 1) * (n // e)
    trunc = np.zeros(n, bool)
    trunc[starts[1:] - 1] = True
    ds = EpisodeDataset(obs, act, r, np.zeros(n, bool), trunc, starts)
    m = 400
    lengths = rng.integers(5, 31, m)
    a, b = (rng.integers(0, n - lengths) for _ in range(2))
    ret = np.cumsum(np.concatenate([[0.0], r]))
    y = (ret[b + lengths] - ret[b] > ret[a + lengths] - ret[a]).astype(np.float32)
    return ds, PreferencePairs.of_lengths(a, b, lengths, y)


def test_pairs_carry_their_lengths(task):
    ds, pairs = task
    assert pairs.length == 30 and not pairs.fixed_length and pairs.lengths.min() == 5
    train, val = pairs.split(0.25, seed=0)
    assert train.length == val.length == 30
    np.testing.assert_array_equal(np.sort(np.concatenate([train.lengths, val.lengths])), np.sort(pairs.lengths))


@pytest.mark.parametrize("kind", ["step", "pt"])
def test_model_trained_on_mixed_lengths_learns(task, kind):
    ds, pairs = task
    train, held = pairs.split(0.25, seed=3)
    cfg = RewardConfig(model=kind, ensemble=2, epochs=15 if kind == "step" else 8, lr=1e-3, val_fraction=0.0, **TINY)
    model = train_reward(ds, train, cfg, progress=False)
    acc = evaluate_pairs(model, ds, held)["accuracy"]
    assert acc > 0.8, acc  # chance is 0.5
    assert np.isfinite(relabel(ds, model, "location").rewards).all()


@pytest.mark.parametrize("kind", ["step", "segment", "pt"])
def test_padded_pair_scores_as_the_pair_alone(task, kind):
    """The score of a pair padded into a batch of longer ones equals its score alone, unpadded (float32 round-off:
    the padded sums add exact zeros, attention of valid steps never sees padded keys; rtol 1e-6)."""
    ds, pairs = task
    seg = SegmenterConfig("fixed", k=4)
    model = train_reward(
        ds, pairs, RewardConfig(model=kind, ensemble=2, epochs=1, segmenter=seg, **TINY), progress=False
    )
    feats = model.features(ds)
    starts = torch.from_numpy(pairs.start_a[:64])
    lengths = torch.from_numpy(pairs.lengths[:64])
    with torch.no_grad():
        padded = model.segment_scores(feats, None, starts, pairs.length, lengths)  # [M, 64]
        alone = torch.stack(
            [model.segment_scores(feats, None, s[None], int(ln))[:, 0] for s, ln in zip(starts, lengths)], 1
        )
    torch.testing.assert_close(padded, alone, rtol=1e-6, atol=1e-6)
    # evaluation over the padded pairs equals evaluation of each length group alone, fixed-length
    ev = evaluate_pairs(model, ds, pairs.subset(np.arange(64)))
    correct, total = 0, 0
    for ln in np.unique(pairs.lengths[:64]):
        sel = np.flatnonzero(pairs.lengths[:64] == ln)
        group = PreferencePairs(pairs.start_a[sel], pairs.start_b[sel], int(ln), pairs.label[sel])
        correct += evaluate_pairs(model, ds, group)["accuracy"] * len(sel)
        total += len(sel)
    assert ev["accuracy"] == pytest.approx(correct / total)
