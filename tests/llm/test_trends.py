"""pbrl.llm.trends: the trend classifier on constructed series (within-error ones included) and the plot."""

from __future__ import annotations

import math

import pytest

from pbrl.errors import PbrlError
from pbrl.llm.trends import Panel, Series, classify_trend, plot_trends

X = [1e4, 1e5, 1e6, 1e7]


@pytest.mark.parametrize("y, se, want", [
    ([0.5, 0.6, 0.7, 0.8], [0.01] * 4, "positive"),
    ([0.8, 0.7, 0.6, 0.5], [0.01] * 4, "inverse"),
    ([0.8, 0.4, 0.5, 0.85], [0.02] * 4, "U-shaped"),
    ([0.4, 0.8, 0.7, 0.45], [0.02] * 4, "inverted-U"),
    # a steady rise whose end-to-end gap (0.06) is under 2 se of the gap (2 * 0.05 * sqrt 2 = 0.141): flat
    ([0.5, 0.52, 0.54, 0.56], [0.05] * 4, "flat"),
    # a dip and a recovery inside the error bars: flat
    ([0.8, 0.75, 0.72, 0.81], [0.05] * 4, "flat"),
    # a significant rise to the middle, then a fall within error: positive, not inverted-U
    ([0.5, 0.9, 0.85, 0.88], [0.02] * 4, "positive"),
    # one interior point above the first but not significantly above the last: not inverted-U
    ([0.5, 0.9, 0.86, 0.87], [0.02] * 4, "positive"),
])
def test_constructed_series(y, se, want):
    assert classify_trend(X, y, se) == want


def test_the_k_threshold_by_hand():
    # gap 1.0, se of the gap sqrt(0.3^2 + 0.4^2) = 0.5: exactly 2 standard errors, which is not more than k = 2
    assert classify_trend([1, 2], [0.0, 1.0], [0.3, 0.4]) == "flat"
    assert classify_trend([1, 2], [0.0, 1.0], [0.3, 0.4], k=1.9) == "positive"
    assert classify_trend([1, 2], [0.0, 1.01], [0.3, 0.4]) == "positive"


def test_a_loss_is_read_as_lower_is_better():
    loss = [2.0, 1.5, 1.0, 0.5]
    assert classify_trend(X, loss, [0.05] * 4, higher_is_better=False) == "positive"
    assert classify_trend(X, loss, [0.05] * 4) == "inverse"
    # a loss that rises then falls is a performance dip: U-shaped
    assert classify_trend(X, [1.0, 2.0, 1.9, 0.9], [0.05] * 4, higher_is_better=False) == "U-shaped"


def test_points_are_ordered_by_x_and_zero_errors_work():
    assert classify_trend([1e6, 1e4, 1e5], [0.9, 0.5, 0.7], [0.0] * 3) == "positive"
    assert classify_trend([1, 2, 3], [0.5, 0.5, 0.5], [0.0] * 3) == "flat"
    assert classify_trend([1, 2, 3], [0.5, 0.4, 0.5], [0.0] * 3) == "U-shaped"


def test_both_a_dip_and_a_peak_take_the_larger_margin():
    # dip at x2 (0.2 vs ends 0.5: 0.3 / 0.0141 = 21 se), peak at x3 (0.6 vs 0.5: 7 se)
    assert classify_trend(X, [0.5, 0.2, 0.6, 0.5], [0.01] * 4) == "U-shaped"
    assert classify_trend(X, [0.5, 0.8, 0.4, 0.5], [0.01] * 4) == "inverted-U"


def test_bad_series_are_refused():
    with pytest.raises(PbrlError, match="at least 2 models"):
        classify_trend([1], [0.5], [0.1])
    with pytest.raises(PbrlError, match="one length"):
        classify_trend([1, 2], [0.5], [0.1, 0.1])
    with pytest.raises(PbrlError, match="distinct x"):
        classify_trend([1, 1], [0.5, 0.6], [0.1, 0.1])
    with pytest.raises(PbrlError, match="finite"):
        classify_trend([1, 2], [0.5, math.nan], [0.1, 0.1])
    with pytest.raises(PbrlError, match="finite"):
        classify_trend([1, 2], [0.5, 0.6], [0.1, -0.1])


def test_plot_writes_the_same_png_for_the_same_series(tmp_path):
    panels = [Panel("accuracy", [Series("trap", X, [0.8, 0.6, 0.4, 0.2], [0.02] * 4)], chance=0.5),
              Panel("loss", [Series("trap", X, [0.5, 0.7, 0.9, 1.2], [0.02] * 4)], chance=math.log(2), log_y=True)]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_trends(panels, a, title="t")
    plot_trends(panels, b, title="t")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
    with pytest.raises(PbrlError, match="no panels"):
        plot_trends([], a)


def test_proportion_error_is_never_zero_and_a_perfect_score_is_not_special():
    from pbrl.llm.trends import proportion_se

    assert proportion_se(1.0, 300) == pytest.approx(math.sqrt((301 / 302) * (1 / 302) / 300))
    assert proportion_se(0.5, 100) == pytest.approx(math.sqrt(0.25 / 100))
    # 300 / 300 against 296 / 300: the plain SEMs (0 and 0.0066) call it a fall, the add-one errors do not
    acc = [0.92, 1.0, 296 / 300]
    plain = [math.sqrt(p * (1 - p) / 300) for p in acc]
    assert classify_trend([1, 2, 3], acc, plain) == "inverted-U"
    assert classify_trend([1, 2, 3], acc, [proportion_se(p, 300) for p in acc]) == "positive"
    with pytest.raises(PbrlError, match="n must be"):
        proportion_se(0.5, 0)
