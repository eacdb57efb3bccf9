"""pbrl.llm.textstats against values computed by hand: a bigram model with a fixed table (so every loss, entropy
and greedy continuation is known in closed form), the TTR window's boundaries, and the temperature control."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pbrl.errors import PbrlError
from pbrl.llm.textstats import (
    continuation_entropies,
    continue_texts,
    distinct_n,
    match_temperature,
    mean_entropy_at,
    repetition_rate,
    sequence_nll,
    text_stats,
    type_token_ratio,
)


class Bigram(torch.nn.Module):
    """p(x_{t+1} = b | x_t = a) = P[a, b]: logits = log P[x_t], whatever came before (so the sampler's cache is
    irrelevant and every number below is a function of the table)."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        p = torch.tensor(table, dtype=torch.float64)
        assert torch.allclose(p.sum(-1), torch.ones(len(p), dtype=torch.float64))
        self.logp = torch.nn.Parameter(p.log(), requires_grad=False)
        self.config = SimpleNamespace(vocab_size=len(table))

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=self.logp[input_ids])  # [B, S, V]


# greedy follows 0 -> 1 -> 2 -> 0 (each row's largest entry), so a greedy continuation cycles through 3 types
P = [[0.1, 0.6, 0.3],
     [0.2, 0.2, 0.6],
     [0.5, 0.25, 0.25]]


def H(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row)


def test_ttr_window_boundaries():
    toks = list(range(224))  # all distinct
    assert type_token_ratio(toks) == 1.0
    toks[127] = toks[200]  # the last token before the window of the last 96 (224 - 96 = 128): not counted
    assert type_token_ratio(toks) == 1.0
    toks[128] = toks[200]  # the first token inside the window: one type fewer
    assert type_token_ratio(toks) == pytest.approx(95 / 96)
    assert type_token_ratio([5] * 96) == pytest.approx(1 / 96)
    assert type_token_ratio([1, 2, 3, 1], last=3) == 1.0 and type_token_ratio([1, 2, 3, 1], last=4) == 0.75
    with pytest.raises(PbrlError, match="fewer than the TTR window of the last 96"):
        type_token_ratio(list(range(95)))


def test_distinct_and_repetition_by_hand():
    y = [1, 2, 1, 2, 3]
    assert distinct_n(y, 1) == 3 / 5  # {1, 2, 3} of 5
    assert distinct_n(y, 2) == 3 / 4  # (1,2) (2,1) (1,2) (2,3): 3 unique of 4
    assert distinct_n(y, 3) == 1.0  # (1,2,1) (2,1,2) (1,2,3)
    # rep/w over tokens 2..5: with w = 2, 2 in [1]? no; 1 in [1,2] yes; 2 in [2,1] yes; 3 in [1,2] no -> 2 / 4
    assert repetition_rate(y, window=2) == 0.5
    # w = 1 looks one token back only: no token equals its predecessor
    assert repetition_rate(y, window=1) == 0.0 and repetition_rate([4, 4, 4], window=1) == 1.0
    with pytest.raises(PbrlError, match="too few for one 3-gram"):
        distinct_n([1, 2], 3)


def test_loss_entropy_and_greedy_of_a_bigram():
    m = Bigram(P)
    # NLL: -(log P[0,1] + log P[1,2]) / 2 for [0, 1, 2], and -(log P[2,0]) for [2, 0], token-weighted
    nll = sequence_nll(m, [[0, 1, 2], [2, 0]])
    ref = -(math.log(0.6) + math.log(0.6) + math.log(0.5)) / 3
    assert nll["tokens"] == 3 and nll["loss"] == pytest.approx(ref) and nll["perplexity"] == pytest.approx(math.exp(ref))

    cont = continue_texts(m, [[0], [2, 2]], max_new_tokens=6)
    assert cont == [[1, 2, 0, 1, 2, 0], [0, 1, 2, 0, 1, 2]]
    # the entropy of the distribution each token came from: the row of the token before it
    hs = continuation_entropies(m, [[0]], [[1, 2, 0]])
    assert hs[0] == pytest.approx([H(P[0]), H(P[1]), H(P[2])])
    # at temperature T the row softmax(log P / T) is P^(1/T) normalised
    T = 0.5
    q = [p ** (1 / T) / sum(x ** (1 / T) for x in P[1]) for p in P[1]]
    assert continuation_entropies(m, [[0]], [[1, 2]], temperature=T)[0][1] == pytest.approx(H(q))


def test_text_stats_of_a_bigram_by_hand():
    m = Bigram(P)
    s = text_stats(m, None, [[0], [1]], val_sequences=[[0, 1, 2]], max_new_tokens=224, ttr_last=96)
    # greedy continuations cycle through the three tokens: 3 types in every window, 3 n-grams of each order
    assert s["ttr"] == pytest.approx(3 / 96)
    assert s["distinct_1"] == pytest.approx(3 / 224) and s["distinct_2"] == pytest.approx(3 / 223)
    assert s["repetition"] == pytest.approx((223 - 2) / 223)  # all but the 2nd and 3rd token repeat within 16
    # every row of the cycle is visited equally often (224 = 3 * 74 + 2): the mean of the visited rows' entropies
    rows = [[0, 1, 2][(k % 3)] for k in range(224)]  # the row (previous token) of each generated position, from [0]
    rows_b = [[1, 2, 0][(k % 3)] for k in range(224)]  # ... from [1]
    ref = (sum(H(P[r]) for r in rows) + sum(H(P[r]) for r in rows_b)) / 448
    assert s["mean_entropy"] == pytest.approx(ref)
    assert s["val_loss"] == pytest.approx(-math.log(0.6)) and s["contexts"] == 2
    with pytest.raises(PbrlError, match="fewer than the TTR window"):
        text_stats(m, None, [[0]], max_new_tokens=50)


def test_match_temperature_recovers_a_known_temperature():
    # the same distribution after every token: the entropy at T does not depend on what was sampled
    row = [0.7, 0.2, 0.06, 0.04]
    m = Bigram([row] * 4)
    target = mean_entropy_at(m, [[0], [1]], 0.6, max_new_tokens=8)
    q = [p ** (1 / 0.6) for p in row]
    assert target == pytest.approx(H([x / sum(q) for x in q]))
    lines: list[str] = []
    found = match_temperature(m, [[0], [1]], target, max_new_tokens=8, xtol=1e-6, log=lines.append)
    assert found["temperature"] == pytest.approx(0.6, abs=1e-5) and found["entropy"] == pytest.approx(target)
    assert found["evaluations"] >= 3 and len(lines) == found["evaluations"]  # one progress line per evaluation
    assert lines[0].startswith("match_temperature: evaluation 1, T = 0.0500") and "tokens/s" in lines[0]
    with pytest.raises(PbrlError, match="outside the entropies over the temperature bracket"):
        match_temperature(m, [[0]], math.log(4) + 0.1, max_new_tokens=8)  # above the uniform's entropy


def test_bad_inputs_are_one_line():
    m = Bigram(P)
    with pytest.raises(PbrlError, match=r"contexts\[1\]: token ids must lie in 0..2"):
        continue_texts(m, [[0], [3]], max_new_tokens=2)
    with pytest.raises(PbrlError, match=r"sequences\[0\]: 1 tokens, expected at least 2"):
        sequence_nll(m, [[0]])
    with pytest.raises(PbrlError, match="expected at least one sequence"):
        sequence_nll(m, [])
