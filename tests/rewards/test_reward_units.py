"""Reward learners: losses, batched ensembles vs loops, normalizers, segmenters and densifiers on hand-made cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pbrl.errors import PbrlError
from pbrl.rewards.losses import bradley_terry_loss, preference_accuracy
from pbrl.rewards.nets import EnsembleCausalTransformer, StepRewardMLP, sequence_score
from pbrl.rewards.normalizers import direct, huber_fit, location, member_zscore, normalize, scale, shift
from pbrl.rewards.pt import PreferenceTransformer
from pbrl.rewards.report import pearson, rankdata, spearman
from pbrl.rewards.segment import SegmenterConfig, SegmentRewardModel, densify_segments, segment_ends

# ---------------------------------------------------------------- Bradley-Terry


def test_bradley_terry_hand_values():
    sa = torch.tensor([1.0, 1.0, 1.0])
    sb = torch.tensor([0.0, 0.0, 0.0])
    y = torch.tensor([1.0, 0.0, 0.5])  # b preferred (wrong), a preferred (right), tie
    ln1pe, ln1pinve = math.log(1 + math.e), math.log(1 + math.exp(-1))  # 1.3133, 0.3133
    per_pair = [ln1pe, ln1pinve, 0.5 * (ln1pe + ln1pinve)]
    for i in range(3):
        assert bradley_terry_loss(sa[i : i + 1], sb[i : i + 1], y[i : i + 1]).item() == pytest.approx(
            per_pair[i]
        )
    assert bradley_terry_loss(sa, sb, y).item() == pytest.approx(sum(per_pair) / 3)
    # masking the tie averages over the two others only
    w = torch.tensor([1.0, 1.0, 0.0])
    assert bradley_terry_loss(sa, sb, y, w).item() == pytest.approx((ln1pe + ln1pinve) / 2)


def test_bradley_terry_equals_soft_cross_entropy_of_uni_rlhf():
    g = torch.Generator().manual_seed(0)
    sa, sb = torch.randn(3, 50, generator=g) * 5, torch.randn(3, 50, generator=g) * 5
    y = torch.rand(50, generator=g)
    logits = torch.stack([sa, sb], -1)  # [M, B, 2]
    target = torch.stack([1 - y, y], -1).expand_as(logits)
    ref = torch.stack([F.cross_entropy(logits[m], target[m]) for m in range(3)])
    torch.testing.assert_close(bradley_terry_loss(sa, sb, y), ref)


def test_preference_accuracy_ignores_ties():
    sa = torch.tensor([0.0, 2.0, 0.0, 5.0])
    sb = torch.tensor([1.0, 1.0, 3.0, 0.0])
    y = torch.tensor([1.0, 1.0, 0.5, 0.0])  # right, wrong, tie, right
    assert preference_accuracy(sa, sb, y).item() == pytest.approx(2 / 3)


# ---------------------------------------------------------------- batched ensembles == loops of members


def _reference_member(in_dim, hidden):
    layers, d = [], in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LeakyReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 1), nn.Tanh())


def test_batched_step_ensemble_equals_loop_of_members():
    torch.manual_seed(0)
    m, d, hidden = 3, 7, (16, 16, 16)
    refs = [_reference_member(d, hidden) for _ in range(m)]
    ens = StepRewardMLP(d, m, hidden)
    linears = [layer for layer in ens.hidden] + [ens.out]
    with torch.no_grad():
        for i, ref in enumerate(refs):
            ref_lin = [layer for layer in ref if isinstance(layer, nn.Linear)]
            for lin, rl in zip(linears, ref_lin):
                lin.weight[i].copy_(rl.weight.T)
                lin.bias[i, 0].copy_(rl.bias)
    x = torch.randn(m, 4, 5, d)  # each member its own batch
    mask = torch.ones(m, 4, 5, dtype=torch.bool)
    out = ens(x, mask)
    loop = torch.stack([refs[i](x[i]).squeeze(-1) for i in range(m)])  # [M, B, T]
    torch.testing.assert_close(out.values, loop)
    # gradients of the summed member losses match member by member
    y = torch.rand(2)
    s = sequence_score(out)  # [M, 4]
    bradley_terry_loss(s[:, :2], s[:, 2:], y).sum().backward()
    refs_loss = 0.0
    for i in range(m):
        ls = refs[i](x[i]).squeeze(-1).sum(-1)  # [4] summed rewards of member i
        refs_loss = refs_loss + bradley_terry_loss(ls[:2], ls[2:], y)
    refs_loss.backward()
    for i, ref in enumerate(refs):
        ref_lin = [layer for layer in ref if isinstance(layer, nn.Linear)]
        for lin, rl in zip(linears, ref_lin):
            torch.testing.assert_close(lin.weight.grad[i], rl.weight.grad.T)
            torch.testing.assert_close(lin.bias.grad[i, 0], rl.bias.grad)


def _member_state(state, i):
    return {k: v[i : i + 1].clone() for k, v in state.items()}


@pytest.mark.parametrize("cls", [SegmentRewardModel, PreferenceTransformer])
def test_batched_sequence_ensemble_equals_separate_members(cls):
    torch.manual_seed(1)
    m, d, t = 3, 5, 9
    ens = cls(d, members=m, d_model=16, layers=2, heads=2, max_len=t)
    x = torch.randn(m, 4, t, d)
    mask = torch.ones(4, t, dtype=torch.bool)
    mask[1, 6:] = False  # one padded sequence
    ends = segment_ends(SegmenterConfig("fixed", k=3), mask)
    out = ens(x, mask, ends)
    for i in range(m):
        single = cls(d, members=1, d_model=16, layers=2, heads=2, max_len=t)
        single.load_state_dict(_member_state(ens.state_dict(), i))
        one = single(x[i : i + 1], mask, ends)
        torch.testing.assert_close(one.values[0], out.values[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(one.weights[0], out.weights[i], atol=1e-5, rtol=1e-5)


def test_causal_body_ignores_future_steps():
    torch.manual_seed(2)
    body = EnsembleCausalTransformer(4, members=2, d_model=8, layers=2, heads=2, max_len=10)
    x = torch.randn(2, 3, 10, 4)
    mask = torch.ones(3, 10, dtype=torch.bool)
    x2 = x.clone()
    x2[:, :, 6:] = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(body(x, mask)[:, :, :6], body(x2, mask)[:, :, :6])
    assert not torch.allclose(body(x, mask)[:, :, 6:], body(x2, mask)[:, :, 6:])


def test_preference_attention_weights_sum_to_one_over_valid_steps():
    torch.manual_seed(3)
    pt = PreferenceTransformer(4, members=2, d_model=8, heads=2, max_len=6)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    out = pt(torch.randn(2, 2, 6, 4), mask)
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2, 2))
    assert torch.all(out.weights[:, 1, 3:] == 0) and torch.all(out.weights >= 0)


# ---------------------------------------------------------------- segmenters and densifiers


def test_segmenters_on_constructed_entropy_signal():
    signal = torch.tensor([[0.1, 2.5, 0.3, 0.2, 3.0, 0.1, 0.1, 0.1]])
    full = torch.ones(1, 8, dtype=torch.bool)
    short = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)

    def where(e):
        return torch.nonzero(e[0]).flatten().tolist()

    assert where(segment_ends(SegmenterConfig("entropy", entropy_threshold=2.0), full, signal)) == [1, 4, 7]
    assert where(segment_ends(SegmenterConfig("entropy", entropy_threshold=2.0), short, signal)) == [1, 4, 5]
    assert where(segment_ends(SegmenterConfig("entropy"), full, signal, threshold=0.25)) == [1, 2, 4, 7]
    assert where(segment_ends(SegmenterConfig("fixed", k=3), full)) == [2, 5, 7]
    assert where(segment_ends(SegmenterConfig("fixed", k=3), short)) == [2, 5]
    assert where(segment_ends(SegmenterConfig("step"), short)) == [0, 1, 2, 3, 4, 5]
    assert where(segment_ends(SegmenterConfig("query"), short)) == [5]
    with pytest.raises(PbrlError):
        segment_ends(SegmenterConfig("entropy"), full, None)


def test_densify_segments_hand_values():
    v = torch.arange(1.0, 9.0)[None]  # [1, 8] values 1..8
    ends = torch.tensor([[0, 1, 0, 0, 1, 0, 0, 1]], dtype=torch.bool)
    r = densify_segments(v, ends)
    torch.testing.assert_close(r[0], torch.tensor([1, 1, 5 / 3, 5 / 3, 5 / 3, 8 / 3, 8 / 3, 8 / 3]))
    # steps after the last end (padding) get 0
    ends2 = torch.tensor([[0, 1, 0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(densify_segments(v, ends2)[0, 5:], torch.zeros(3))


def test_segment_score_is_mean_of_segment_end_values():
    torch.manual_seed(4)
    model = SegmentRewardModel(3, members=2, d_model=8, heads=2, max_len=8)
    mask = torch.ones(1, 8, dtype=torch.bool)
    ends = torch.tensor([[0, 1, 0, 0, 1, 0, 0, 1]], dtype=torch.bool)
    out = model(torch.randn(2, 1, 8, 3), mask, ends)
    expect = out.values[:, 0, [1, 4, 7]].mean(-1)
    torch.testing.assert_close(sequence_score(out)[:, 0], expect)


# ---------------------------------------------------------------- normalizers


def test_member_zscore_and_direct_differ_on_constructed_case():
    values = np.array([[0.0, 1.0, 2.0], [20.0, 0.0, 10.0]])  # [M=2, S=3]
    # member 0: mean 1, std sqrt(2/3); member 1: mean 10, std 10 sqrt(2/3)
    z = 1 / math.sqrt(2 / 3)  # 1.2247
    np.testing.assert_allclose(member_zscore(values), [0.0, -z / 2, z / 2])
    # direct: mean over members [10, 0.5, 6] -> mean 5.5, std sqrt(45.5 / 3)
    sd = math.sqrt(45.5 / 3)
    np.testing.assert_allclose(direct(values), [4.5 / sd, -5 / sd, 0.5 / sd])
    np.testing.assert_allclose(normalize("none", values), [10.0, 0.5, 6.0])


def test_location_normalizer_hand_values():
    values = np.array([[1.0, 3.0, 10.0, 14.0]])
    position = np.array([0.5, 0.5, 1.0, 1.0])  # p=0.5: mean 2 std 1; p=1: mean 12 std 2
    np.testing.assert_allclose(location(values, position), [-1.0, 1.0, -1.0, 1.0], atol=1e-9)


def test_huber_fit_exact_line_and_robust_to_outlier():
    x = np.arange(10.0)
    a, b = huber_fit(x, 2 * x + 1)
    assert (a, b) == pytest.approx((2.0, 1.0))
    y = 2 * x + 1 + np.random.default_rng(0).normal(0, 0.05, 10)
    y[9] = 100.0
    a, b = huber_fit(x, y)
    ols = np.polyfit(x, y, 1)
    assert abs(a - 2) < 0.1 and abs(b - 1) < 0.3
    assert abs(ols[0] - 2) > 3  # least squares is dragged away by the outlier


def test_scale_normalizer_hand_values():
    values = np.array([[1.0, 1.0, 2.0, 4.0], [1.0, 1.0, 2.0, 4.0]])
    starts = np.array([0, 2, 4])  # episode returns 2 and 6 -> spread 4 -> x250
    out = scale(values, np.arange(4), np.ones(4, np.int64), starts)
    np.testing.assert_allclose(out, [250.0, 250.0, 500.0, 1000.0])


def test_minmax_shift_hand_values_and_errors():
    np.testing.assert_allclose(shift("minmax", np.array([-1.0, 0.0, 3.0])), [0.0, 0.25, 1.0])
    np.testing.assert_array_equal(shift("none", np.array([-1.0, 2.0])), [-1.0, 2.0])
    with pytest.raises(PbrlError, match="every learned reward is the same"):
        shift("minmax", np.full(4, 0.5))
    with pytest.raises(PbrlError, match="unknown shift 'plus'"):
        shift("plus", np.zeros(2))


def test_unknown_normalizer_is_a_clear_error():
    with pytest.raises(PbrlError, match="unknown normalizer"):
        normalize("zscore", np.zeros((1, 3)))


# ---------------------------------------------------------------- report statistics


def test_rank_correlations_against_hand_values():
    np.testing.assert_allclose(rankdata(np.array([10.0, 20.0, 20.0, 5.0])), [2.0, 3.5, 3.5, 1.0])
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, -2 * x + 3) == pytest.approx(-1.0)
    assert pearson(x, x**3) < 1.0 - 1e-3


# ---------------------------------------------------------------- variable-length sequences (LLM-style padding)


@pytest.mark.parametrize("kind", ["step", "segment", "pt"])
def test_right_padding_does_not_change_scores(kind):
    """A sequence padded to a longer batch scores the same as alone: what token sequences of an LLM need."""
    from pbrl.rewards.train import pair_loss

    torch.manual_seed(5)
    d, m = 6, 2
    if kind == "step":
        net = StepRewardMLP(d, m, (8, 8))
    elif kind == "segment":
        net = SegmentRewardModel(d, m, d_model=8, heads=2, max_len=12)
    else:
        net = PreferenceTransformer(d, m, d_model=8, heads=2, max_len=12)
    seq = torch.randn(m, 1, 7, d)  # one 7-step sequence
    padded = torch.cat([seq, torch.randn(m, 1, 5, d) * 100], dim=2)  # + 5 junk steps
    mask7 = torch.ones(1, 7, dtype=torch.bool)
    mask12 = torch.cat([mask7, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    cfg = SegmenterConfig("fixed", k=3)
    s7 = sequence_score(net(seq, mask7, segment_ends(cfg, mask7)))
    s12 = sequence_score(net(padded, mask12, segment_ends(cfg, mask12)))
    torch.testing.assert_close(s7, s12, atol=1e-5, rtol=1e-5)
    # and the generic pair loss runs on such batches: a = padded copy, b = the sequence itself -> a tie in score
    x = torch.cat([padded, torch.cat([seq, torch.zeros(m, 1, 5, d)], dim=2)], dim=1)  # [M, 2, 12, D]
    mask = torch.cat([mask12, mask12]).expand(m, 2, 12)
    ends = segment_ends(cfg, mask)
    loss, acc = pair_loss(net, x, mask, ends, torch.ones(m, 1))
    torch.testing.assert_close(loss, torch.full((m,), math.log(2.0)), atol=1e-5, rtol=1e-5)
