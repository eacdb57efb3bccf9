"""baselines/segment_rlhf.py: argument checks and the boundary-F1 / per-part Spearman helpers, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from baselines import segment_rlhf as sr
from pbrl.errors import PbrlError
from pbrl.rewards.report import spearman
from pbrl_envs.chat import build_task, make_task


def _decode(vocab):
    return lambda ids: "".join(vocab[i] for i in ids)


def test_token_words_assigns_tokens_to_words_and_skips_whitespace():
    # tokens: "3", " 1", "2", " ", "7", "<eot>"(empty): words "3", "12", "7"
    vocab = ["3", " 1", "2", " ", "7", ""]
    assert sr.token_words(_decode(vocab), [0, 1, 2, 3, 4, 5]) == [0, 1, 1, -1, 2, -1]


def test_word_ends_are_the_last_token_of_each_word():
    assert sr.word_ends([0, 1, 1, -1, 2, -1]).tolist() == [True, False, True, False, True, False]


def test_boundary_counts_and_f1_by_hand():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    true = np.array([1, 0, 1, 0, 1, 0], bool)
    tp, fp, fn = sr.boundary_counts(pred, true)
    assert (tp, fp, fn) == (2, 1, 1)
    m = sr.f1(tp, fp, fn)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert sr.f1(0, 0, 3) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}  # nothing predicted
    assert sr.f1(4, 0, 0)["f1"] == 1.0


def test_word_rewards_sum_tokens_per_word():
    out = sr.word_rewards([0.5, 1.0, 2.0, 9.0, -1.0, 0.0], [0, 1, 1, -1, 2, -1])
    assert out == {0: 0.5, 1: 3.0, 2: -1.0}


def test_positional_credits_drop_the_count_part():
    task = build_task("sort", ("asc", ("7", "3", "5")))
    assert task.answer == "3 5 7"
    assert sr.positional_credits(task, "3 7 5") == [1.0, 0.0, 0.0]
    assert sr.positional_credits(task, "3 5") == [1.0, 1.0, 0.0]
    with pytest.raises(PbrlError, match="no positional parts"):
        sr.positional_credits(make_task(0, "arithmetic"), "1")


def test_spearman_pairs_pool_words_with_a_part_and_rank_by_hand():
    per = [({0: 0.9, 1: 0.1, 2: 5.0}, [1.0, 0.0]),  # word 2 has no part: left out
           ({0: 0.2}, [0.0, 1.0])]  # word 1 missing from the response: left out
    xs, ys = sr.spearman_pairs(per)
    assert xs == [0.9, 0.1, 0.2] and ys == [1.0, 0.0, 0.0]
    # ranks x: 3, 1, 2; y (ties averaged): 3, 1.5, 1.5 -> Pearson of the ranks
    rx, ry = np.array([3, 1, 2.0]), np.array([3, 1.5, 1.5])
    want = np.corrcoef(rx, ry)[0, 1]
    assert spearman(np.array(xs), np.array(ys)) == pytest.approx(want)
    assert want == pytest.approx(np.sqrt(3) / 2)


@pytest.mark.parametrize("argv, msg", [
    (["--seeds", "0", "0"], "repeated seeds"),
    (["--seeds", "-1"], "seeds >= 0"),
    (["--threads", "0"], "--threads"),
])
def test_bad_arguments_get_one_error(argv, msg, tmp_path):
    with pytest.raises(PbrlError, match=msg):
        sr.main([*argv, "--out", "none", "--work", str(tmp_path / "w"), "--records", str(tmp_path / "r")])
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()


def test_unknown_budget_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as e:
        sr.main(["--budget", "huge", "--out", "none"])
    assert e.value.code == 2
