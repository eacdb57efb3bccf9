"""SASRec and GRU4Rec: they learn a planted next-item rule far above popularity, read histories causally and
without regard to padding, and refuse bad input with one line."""

import numpy as np
import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.rec.baselines import PopularityRecommender
from pbrl.rec.metrics import ranking_metrics
from pbrl.rec.sasrec import (
    GRU4Rec,
    SASRec,
    SeqRecConfig,
    bce_loss,
    ce_loss,
    left_pad,
    sample_negatives,
    training_windows,
)

NUM_ITEMS = 30


def planted(num_users: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences that follow a fixed random permutation (next = perm[current]) from random starts, and the perm."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(NUM_ITEMS)
    seqs = []
    for _ in range(num_users):
        s = [int(rng.integers(NUM_ITEMS))]
        for _ in range(int(rng.integers(5, 25)) - 1):
            s.append(int(perm[s[-1]]))
        seqs.append(np.array(s))
    return seqs, perm


def small(**kw) -> SeqRecConfig:
    return SeqRecConfig(**{"hidden": 32, "max_len": 10, "batch_size": 64, "epochs": 40, "patience": 5, **kw})


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec])
def test_learns_a_planted_sequence(cls):
    seqs, _ = planted(200, 0)
    train = [s[:-2] for s in seqs]
    valid_h, valid_t = [s[:-2] for s in seqs], np.array([s[-2] for s in seqs])
    test_h, test_t = [s[:-1] for s in seqs], np.array([s[-1] for s in seqs])
    model = cls(NUM_ITEMS, small(), progress=False).fit(train, valid_h, valid_t)
    got = ranking_metrics(model.scores(test_h), test_t)
    pop = ranking_metrics(PopularityRecommender(NUM_ITEMS).fit(train).scores(test_h), test_t)
    assert got["rec/recall@1"] >= 0.95, got
    assert pop["rec/recall@1"] <= 0.15, pop
    assert model.history and model.best_epoch >= 1
    # early stopping kept the best validation epoch's weights
    assert model.evaluate(valid_h, valid_t)["rec/ndcg@10"] == pytest.approx(
        max(h["valid_ndcg@10"] for h in model.history), abs=1e-6
    )


def test_bce_loss_learns_to_rank_the_next_items_first():
    # with the paper's loss the negatives exclude the window's own items, so the items a few steps after the
    # target (always in the window on this data) are never pushed down: the target is in the top 5, not top 1
    seqs, _ = planted(200, 1)
    train = [s[:-1] for s in seqs]
    hist, tgt = [s[:-1] for s in seqs], np.array([s[-1] for s in seqs])
    model = SASRec(NUM_ITEMS, small(loss="bce", epochs=30), progress=False).fit(train)
    got = ranking_metrics(model.scores(hist), tgt)
    assert got["rec/recall@5"] >= 0.9, got
    assert len(model.history) == 30  # no validation set: every epoch runs


@pytest.mark.parametrize("cls", [SASRec, GRU4Rec])
def test_states_ignore_padding_and_the_future(cls):
    cfg = small(dropout=0.0)
    model = cls(NUM_ITEMS, cfg, progress=False)
    model.fit([np.arange(12) % NUM_ITEMS], None, None)  # any weights
    net = model.net
    hist = np.array([3, 7, 1, 4])
    with torch.no_grad():
        padded = net(torch.from_numpy(left_pad([hist], cfg.max_len)))[0, -4:]  # [4, d]
        bare = net(torch.from_numpy(hist[None] + 1))[0]  # [4, d] no padding at all
        changed = net(torch.from_numpy(np.array([[4, 8, 2, 9]])))[0]  # last item differs
    torch.testing.assert_close(padded, bare, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(changed[:3], bare[:3], rtol=1e-5, atol=1e-5)  # causal: the past does not see it
    assert not torch.allclose(changed[3], bare[3])


def test_windows_cover_every_target_once():
    w = training_windows([np.arange(7), np.array([5])], max_len=3)
    # sequence 0..6 (ids + 1 = 1..7): windows ending at 7 and at 4, the last one left-padded; [5] has no target
    np.testing.assert_array_equal(w, [[4, 5, 6, 7], [1, 2, 3, 4]])
    targets = w[:, 1:][w[:, 1:] > 0]
    assert sorted(targets.tolist()) == [2, 3, 4, 5, 6, 7]  # items 1..6 each a target once


def test_losses_by_hand():
    states = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # [1, 2, 2]
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # [3, 2]
    targets = torch.tensor([[0, 2]])  # only position 1 has a target: item 1 (id + 1 = 2)
    logits = torch.tensor([0.0, 2.0, 2.0])  # state [0, 2] against the three items
    assert float(ce_loss(states, items, targets)) == pytest.approx(float(-torch.log_softmax(logits, 0)[1]))
    neg = torch.tensor([[0, 1]])  # item 0, score 0
    expect = -np.log(1 / (1 + np.exp(-2.0))) - np.log(1 - 0.5)
    assert float(bce_loss(states, items, targets, neg)) == pytest.approx(expect)


def test_negatives_avoid_the_window():
    rng = np.random.default_rng(0)
    windows = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    neg = sample_negatives(windows, 8, rng)  # ids + 1 in 1..8
    assert neg.shape == (2, 3)
    assert not np.isin(neg[0], [1, 2, 3]).any() and not np.isin(neg[1], [4, 5, 6, 7]).any()
    assert ((neg >= 1) & (neg <= 8)).all()


def test_bad_input_is_one_line():
    with pytest.raises(PbrlError, match=r"sequence 1: item ids must be whole numbers in \[0, 30\)"):
        SASRec(NUM_ITEMS, small(), progress=False).fit([np.array([1, 2]), np.array([3, 30])])
    with pytest.raises(PbrlError, match="no sequence has 2 or more items"):
        SASRec(NUM_ITEMS, small(), progress=False).fit([np.array([1])])
    with pytest.raises(PbrlError, match="validation: 2 histories but 1 targets"):
        SASRec(NUM_ITEMS, small(), progress=False).fit([np.arange(5)], [np.arange(2), np.arange(3)], np.array([1]))
    with pytest.raises(PbrlError, match="heads: hidden 32 is not divisible by heads 3"):
        SASRec(NUM_ITEMS, small(heads=3))
    with pytest.raises(PbrlError, match="loss: expected 'ce' or 'bce'"):
        SASRec(NUM_ITEMS, small(loss="bpr"))
    with pytest.raises(PbrlError, match="scores\\(\\) before fit\\(\\)"):
        GRU4Rec(NUM_ITEMS, small()).scores([np.array([1])])


def test_movielens_table_from_records(tmp_path):
    from baselines.gream_movielens import METRICS, write_table

    def record(column, seed, ndcg10):
        split = {m: 0.1 for m in METRICS} | {"ndcg@10": ndcg10}
        return {"run_id": f"{column}-{seed}", "column": column, "config": {"seed": seed, "epochs": 3, "patience": 2},
                "budget": "test", "device_name": "cpu", "threads": 1, "wall_s": 6.0, "git_revision": "abc",
                "result": {"dataset_users": 9, "dataset_items": 5, "dataset_interactions": 40, "dataset_transitions": 22,
                           "valid": split, "test": split, "valid_seen_removed": split, "test_seen_removed": split,
                           "fit_s": 2.0, "load_start": 1.0, "load_end": 3.0}}

    recs = [record("SASRec", 0, 0.2), record("SASRec", 1, 0.4), record("popularity", 0, 0.05)]
    paths = write_table(recs, str(tmp_path), "t")
    md = open(paths["md"]).read()
    assert "| SASRec | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | 0.1000 ± 0.0000 | 0.3000 ± 0.1000 |" in md
    assert md.index("| popularity |") < md.index("| SASRec |")  # the script's column order
    assert "[gream_llm.md](gream_llm.md)" in md and "1.0 to 3.0" in md
    assert "not run yet" not in md  # every column is run (pbrl's discrete DT has its own records)
    rows = open(paths["csv"]).read().splitlines()
    assert "SASRec,test,ndcg@10,2,0.30000,0.10000,0.20000 0.40000" in rows
