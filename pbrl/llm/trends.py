"""Scaling trends of a metric across a model family (McKenzie et al., TMLR 2023): classification of the trend
with its standard errors, and the paper's plot (metric against parameters or training FLOPs on a log axis, error
bars of one standard error, the chance line).

The trend is judged on performance, z = y where higher is better and z = -y otherwise (a loss). Points are put in
the order of x (parameters or FLOPs; only the order matters). Two points i, j differ when their gap is larger than
``k`` standard errors of the gap:

    differs(i, j)  =  |z_j - z_i| > k * sqrt(se_i^2 + se_j^2)          (k = 2 by default, about a 95 % two-sided
                                                                        test for independent normal means)

With first = the smallest model and last = the largest, and m ranging over the interior points:

    U-shaped     some interior z_m is below both z_first and z_last, differing from each (worse, then better)
    inverted-U   some interior z_m is above both z_first and z_last, differing from each (better, then worse)
    positive     otherwise, z_last > z_first and they differ
    inverse      otherwise, z_last < z_first and they differ
    flat         otherwise: no change outside the error bars

For a 0/1 metric (accuracy) the standard error std / sqrt(n) is 0 at a mean of exactly 0 or 1, which would make
any change from a perfect score "significant" (0 errors in 300 against 4 in 300 differs by 2 such standard errors,
while Fisher's exact test gives p = 0.12). ``proportion_se`` is the error to classify such a metric with: the same
formula on the add-one (Laplace) estimate p~ = (k + 1) / (n + 2), sqrt(p~ (1 - p~) / n), which is never 0.

When a series has both a significant interior dip and a significant interior peak, the one with the larger
margin (the smaller of its two gaps to the ends, in units of their standard error) names it. A series whose
every change is within its error bars is flat, however the means move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pbrl.errors import PbrlError

Trend = Literal["positive", "flat", "inverse", "U-shaped", "inverted-U"]
TRENDS: tuple[str, ...] = ("positive", "flat", "inverse", "U-shaped", "inverted-U")


def _margin(z: np.ndarray, se: np.ndarray, i: int, j: int) -> float:
    """(z_j - z_i) in standard errors of the difference (inf when both errors are 0 and the means differ)."""
    d = z[j] - z[i]
    s = math.hypot(se[i], se[j])
    if s == 0:
        return 0.0 if d == 0 else math.copysign(math.inf, d)
    return d / s


def proportion_se(mean: float, n: int) -> float:
    """Standard error of a proportion for the trend test: sqrt(p~ (1 - p~) / n) with p~ = (k + 1) / (n + 2),
    k = mean * n successes (module docstring)."""
    if n < 1:
        raise PbrlError(f"proportion_se: n must be >= 1, got {n}")
    p = (mean * n + 1) / (n + 2)
    return math.sqrt(p * (1 - p) / n)


def classify_trend(x: Sequence[float], y: Sequence[float], se: Sequence[float], *, higher_is_better: bool = True,
                   k: float = 2.0) -> Trend:
    """The trend of ``y`` (± ``se``) over ``x`` by the rule of the module docstring."""
    xa, ya, sa = (np.asarray(v, dtype=np.float64) for v in (x, y, se))
    if not (xa.shape == ya.shape == sa.shape) or xa.ndim != 1:
        raise PbrlError(f"classify_trend: x, y and se must be 1-d of one length, got {xa.shape}, {ya.shape}, "
                        f"{sa.shape}")
    if xa.size < 2:
        raise PbrlError(f"classify_trend: a trend needs at least 2 models, got {xa.size}")
    if not (np.isfinite(xa).all() and np.isfinite(ya).all() and np.isfinite(sa).all()) or (sa < 0).any():
        raise PbrlError("classify_trend: x, y must be finite and se finite and >= 0")
    if len(set(xa.tolist())) != xa.size:
        raise PbrlError("classify_trend: two models share one x (parameters or FLOPs); a trend needs distinct x")
    if not k > 0:
        raise PbrlError(f"classify_trend: k must be > 0, got {k}")
    order = np.argsort(xa)
    z = ya[order] if higher_is_better else -ya[order]
    s = sa[order]
    last = z.size - 1
    dip = peak = 0.0  # the best interior margins (standard errors) of a dip and of a peak
    for m in range(1, last):
        below = min(_margin(z, s, m, 0), _margin(z, s, m, last))  # > 0: z_m below both ends by that many se
        above = min(_margin(z, s, 0, m), _margin(z, s, last, m))
        dip, peak = max(dip, below), max(peak, above)
    if dip > k or peak > k:
        return "U-shaped" if dip >= peak else "inverted-U"
    ends = _margin(z, s, 0, last)
    if ends > k:
        return "positive"
    if ends < -k:
        return "inverse"
    return "flat"


# ----------------------------------------------------------------------------------------------- the plot
@dataclass
class Series:
    """One line: a metric's mean and standard error per model, at x (parameters or FLOPs)."""

    label: str
    x: list[float]
    y: list[float]
    se: list[float]


@dataclass
class Panel:
    """One plot: series of one metric, its chance line, the axis labels."""

    ylabel: str
    series: list[Series] = field(default_factory=list)
    chance: float | None = None
    xlabel: str = "parameters"
    log_y: bool = False
    title: str = ""
    ylim: tuple[float, float] | None = None
    """Fixed y range (the pipeline draws accuracy on -0.02 .. 1.02)."""


def plot_trends(panels: Sequence[Panel], path: str | Path, title: str = "") -> str:
    """The paper's plot, one panel per metric: mean ± one standard error against x on a log axis, the chance
    baseline dashed. Written as a PNG without a version stamp (``pbrl.plot.save_png``)."""
    from pbrl.plot import pyplot, save_png

    if not panels:
        raise PbrlError("plot_trends: no panels to draw")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for s in p.series:
            order = np.argsort(s.x)
            ax.errorbar(np.asarray(s.x)[order], np.asarray(s.y)[order], yerr=np.asarray(s.se)[order],
                        marker="o", capsize=3, label=s.label)
        if p.chance is not None:
            ax.axhline(p.chance, linestyle="--", color="k", linewidth=1, label="chance (equal probability)")
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only: minor labels of a short range overlap
        if p.log_y:
            ax.set_yscale("log")
        if p.ylim is not None:
            ax.set_ylim(*p.ylim)
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.ylabel)
        if p.title:
            ax.set_title(p.title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = save_png(fig, str(path))
    plt.close(fig)
    return out
