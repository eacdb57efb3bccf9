"""The repetitiveness helpers of baselines/hyperfit_recommender.py, checked against values worked by hand."""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "baselines"))

import hyperfit_recommender as hr  # noqa: E402

from pbrl.errors import PbrlError  # noqa: E402


def test_top1_stats_by_hand():
    # 4 users: item 7 twice, item 3 once, one user with no valid item -> p = (2/3, 1/3) over the valid ones
    s = hr.top1_stats([7, 3, 7, None])
    assert s["distinct_top1"] == 2
    assert s["top_item_share"] == pytest.approx(2 / 4)  # share of all users, the invalid one included
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert s["top1_entropy_bits"] == pytest.approx(h)


def test_top1_stats_extremes():
    assert hr.top1_stats([5] * 10) == {"distinct_top1": 1.0, "top_item_share": 1.0, "top1_entropy_bits": 0.0}
    s = hr.top1_stats(list(range(8)))
    assert s["distinct_top1"] == 8 and s["top_item_share"] == pytest.approx(1 / 8)
    assert s["top1_entropy_bits"] == pytest.approx(3.0)
    assert hr.top1_stats([None, None])["distinct_top1"] == 0
    with pytest.raises(PbrlError):
        hr.top1_stats([])


def test_mean_std_population():
    m, s = hr.mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(math.sqrt(2 / 3))


def test_padded_lm_loss_ignores_padding():
    torch.manual_seed(0)
    V = 11

    class Bigram(torch.nn.Module):  # logits depend on the current token only, so padding cannot leak
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(V, V)

        def forward(self, input_ids):
            return type("O", (), {"logits": self.emb(input_ids)})()

    m = Bigram()
    a, b = [1, 2, 3, 4], [5, 6]
    ids, mask = hr.padded_rows([a, b], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]] and mask.sum() == 6
    got = hr.padded_lm_loss(m, ids, mask)
    lp = torch.log_softmax(m.emb.weight, -1)
    pairs = [(1, 2), (2, 3), (3, 4), (5, 6)]  # the 4 real next-token predictions
    ref = -sum(lp[x, y] for x, y in pairs) / len(pairs)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


def test_answer_share_by_hand():
    # users' top-1: 3 (an answer), 9 (not), None (no valid item), 3 -> 2 of 4
    assert hr.answer_share([3, 9, None, 3], answers=[3, 4]) == pytest.approx(0.5)
    assert hr.answer_share([1, 2], answers=[]) == 0.0
