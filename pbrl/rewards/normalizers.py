"""Normalizers: turn the per-member values of a reward ensemble into one normalized value per unit.

A "unit" is what the learner scores: one step (step-wise MLP, Preference Transformer) or one segment (segment-level
model). Inputs are the members' values [M, S] over the WHOLE dataset; outputs are [S], densified afterwards
(r_t = value / unit length). Statistics are population statistics (ddof 0), no clipping.

- member-zscore (DTR, Tu et al. 2025):  r~ = (1/M) sum_m (r_m - mu_m) / sigma_m
- direct (DTR's baseline):              rbar = (1/M) sum_m r_m,   r~ = (rbar - mu) / sigma
- location (SegmentRM, Yin et al. 2025): rbar as above; with p = k/K the unit's relative position in its chunk,
      mu(p) = a_mu ln p + b_mu,  sigma(p) = a_sigma ln p + b_sigma   (Huber regressions, epsilon 1.35, of the
      per-position mean and std against ln p; scikit-learn's HuberRegressor),   r~ = (rbar - mu(p)) / sigma(p)
- scale (CORL / PT / Uni-RLHF for IQL):  r~ = rbar * 1000 / (max_return - min_return) over the dataset's episodes
- none:                                 r~ = rbar

A shift (`shift`) may follow, on the densified per-transition rewards r [N]:
- none:    r
- minmax:  (r - min r) / (max r - min r), over the whole dataset: every reward in [0, 1].
Why: Bradley-Terry on equal-length segments compares segment sums, so a constant per-step reward (locomotion's
alive bonus) cancels and the z-scores centre the learned reward at 0; in a dataset with terminations, ending an
episode then costs the policy nothing. Positive rewards restore the survival incentive that pessimistic offline
RL relies on (Li et al., "Survival Instinct in Offline RL", NeurIPS 2023); measured on pbrl's hopper-medium-replay
in results/dtr_table1-plateau.md.
"""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import numpy as np

from pbrl.errors import PbrlError

# The one list of normalizer names (command-line choices read it).
NormalizerName = Literal["member-zscore", "direct", "location", "scale", "none"]
NORMALIZERS: tuple[str, ...] = get_args(NormalizerName)
ShiftName = Literal["none", "minmax"]
SHIFTS: tuple[str, ...] = get_args(ShiftName)
_EPS = 1e-8


def _zscore(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return (x - x.mean(axis, keepdims=True)) / np.maximum(x.std(axis, keepdims=True), _EPS)


def member_zscore(values: np.ndarray) -> np.ndarray:
    """[M, S] -> [S]: z-score each member over the dataset, then average."""
    return _zscore(np.asarray(values, np.float64), -1).mean(0)


def direct(values: np.ndarray) -> np.ndarray:
    """[M, S] -> [S]: average the members, then z-score."""
    return _zscore(np.asarray(values, np.float64).mean(0))


def huber_fit(x: np.ndarray, y: np.ndarray, epsilon: float = 1.35) -> tuple[float, float]:
    """Robust line y ~ a x + b: Huber regression (Huber 1964; Owen 2007's joint location-scale form) through
    scikit-learn's `HuberRegressor(epsilon, alpha=0)` (no ridge penalty: the fit is the plain Huber M-estimate).

    Returns (a, b). With fewer than two distinct x the slope is 0 and b the median (mean for <= 2 points).
    It replaced a hand-written IRLS with a 1.4826 x MAD scale (same loss, other scale estimate): measured on the
    reward fixtures and a pendulum-medium-replay run, location-normalized rewards moved by a mean |delta| of
    0.002-0.011 for step/pt models and 0.009-0.035 for segment models (few per-position points; max 0.18).
    """
    from sklearn.exceptions import ConvergenceWarning  # imported here: scikit-learn takes seconds to import
    from sklearn.linear_model import HuberRegressor

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) == 0:
        raise PbrlError("huber_fit needs at least one point")
    if np.ptp(x) == 0:
        return 0.0, float(np.median(y)) if len(y) > 2 else float(y.mean())
    with warnings.catch_warnings():
        # lbfgs may stop at max_iter on a (near-)exact line, where the scale goes to its lower bound
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = HuberRegressor(epsilon=epsilon, alpha=0.0, max_iter=1000).fit(x[:, None], y)
    return float(fit.coef_[0]), float(fit.intercept_)


def location_points(
    values: np.ndarray, position: np.ndarray, bins: int | None = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points `location_fit` regresses: per group of at least two units, (mean ln p, mean, population std).

    values [S], position [S] in (0, 1]. Positions are grouped by value when there are at most `bins` distinct ones,
    else into `bins` equal-width bins; `bins=None` groups by the key f"{p:.3f}" (SegmentRM's code, which keys each
    segment by k/K to three decimals). Returns three [G] arrays (G = 0 when no group has two units).
    """
    v, p = np.asarray(values, np.float64), np.asarray(position, np.float64)
    if v.shape != p.shape or v.ndim != 1:
        raise PbrlError(
            f"location normalizer: values and positions must be 1-D of one length; {v.shape}, {p.shape}"
        )
    if np.any((p <= 0) | (p > 1)):
        raise PbrlError("location normalizer: relative positions must lie in (0, 1]")
    if bins is None:
        group = np.round(p * 1000).astype(np.int64)  # the key f"{k/K:.3f}"
    else:
        uniq = np.unique(p)
        group = (
            np.searchsorted(uniq, p) if len(uniq) <= bins else np.minimum((p * bins).astype(np.int64), bins - 1)
        )
    xs, mus, sds = [], [], []
    for g in np.unique(group):
        sel = group == g
        if sel.sum() < 2:
            continue
        xs.append(np.log(p[sel]).mean())
        mus.append(v[sel].mean())
        sds.append(v[sel].std())
    return np.array(xs), np.array(mus), np.array(sds)


def location_fit(
    values: np.ndarray, position: np.ndarray, bins: int | None = 20, epsilon: float = 1.35
) -> tuple[float, float, float, float]:
    """Fit mu(p) and sigma(p) against ln p; returns (a_mu, b_mu, a_sigma, b_sigma).

    The points are `location_points(values, position, bins)`: each group's mean and std at its mean ln p.
    With a single position (the bandit model: K = 1) the fit is the scalar normalizer: slopes 0, mean and std.
    """
    xs, mus, sds = location_points(values, position, bins)
    if not len(xs):  # too few units to group: the scalar (bandit) normalizer
        v = np.asarray(values, np.float64)
        return 0.0, float(v.mean()), 0.0, float(v.std())
    a_mu, b_mu = huber_fit(xs, mus, epsilon)
    a_sd, b_sd = huber_fit(xs, sds, epsilon)
    return a_mu, b_mu, a_sd, b_sd


def location_apply(
    values: np.ndarray, position: np.ndarray, fit: tuple[float, float, float, float], sigma_floor: float = _EPS
) -> np.ndarray:
    """[S], [S] -> [S]: r~ = (v - mu(p)) / max(sigma(p), sigma_floor) for a `location_fit` result (a fit stored with
    a model applies to units it never saw; the floor keeps sigma(p) > 0 where the fitted line crosses 0)."""
    a_mu, b_mu, a_sd, b_sd = fit
    lnp = np.log(np.asarray(position, np.float64))
    sigma = np.maximum(a_sd * lnp + b_sd, max(sigma_floor, _EPS))
    return (np.asarray(values, np.float64) - (a_mu * lnp + b_mu)) / sigma


def location(values: np.ndarray, position: np.ndarray, bins: int | None = 20, epsilon: float = 1.35) -> np.ndarray:
    """[M, S], [S] -> [S]: location-aware normalization of the ensemble mean."""
    v = np.asarray(values, np.float64).mean(0)
    return location_apply(v, position, location_fit(v, position, bins, epsilon))


def scale(
    values: np.ndarray, unit_of: np.ndarray, unit_length: np.ndarray, episode_starts: np.ndarray
) -> np.ndarray:
    """[M, S] -> [S]: ensemble mean times 1000 / (max - min episode return of the densified mean reward)."""
    v = np.asarray(values, np.float64).mean(0)
    dense = v[unit_of] / unit_length[unit_of]  # [N]
    returns = np.add.reduceat(dense, episode_starts[:-1])  # [E]
    spread = returns.max() - returns.min()
    if spread < _EPS:
        raise PbrlError("scale normalizer: every episode has the same learned return (max - min = 0)")
    return v * 1000.0 / spread


def normalize(
    name: str,
    values: np.ndarray,
    *,
    position: np.ndarray | None = None,
    unit_of: np.ndarray | None = None,
    unit_length: np.ndarray | None = None,
    episode_starts: np.ndarray | None = None,
) -> np.ndarray:
    """Dispatch by name (see the module docstring); values [M, S] -> [S] float64."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise PbrlError(f"normalizer input must be [members, units], got shape {values.shape}")
    if name == "member-zscore":
        return member_zscore(values)
    if name == "direct":
        return direct(values)
    if name == "none":
        return values.astype(np.float64).mean(0)
    if name == "location":
        if position is None:
            raise PbrlError("the location normalizer needs the units' relative positions")
        return location(values, position)
    if name == "scale":
        if unit_of is None or unit_length is None or episode_starts is None:
            raise PbrlError("the scale normalizer needs unit_of, unit_length and episode_starts")
        return scale(values, unit_of, unit_length, episode_starts)
    raise PbrlError(f"unknown normalizer {name!r}; expected one of {', '.join(NORMALIZERS)}")


def shift(name: str, rewards: np.ndarray) -> np.ndarray:
    """[N] -> [N] float64: the shift of the module docstring applied to the densified rewards of a whole dataset."""
    r = np.asarray(rewards, np.float64)
    if name == "none":
        return r
    if name == "minmax":
        spread = r.max() - r.min()
        if spread < _EPS:
            raise PbrlError("minmax shift: every learned reward is the same (max - min = 0)")
        return (r - r.min()) / spread
    raise PbrlError(f"unknown shift {name!r}; expected one of {', '.join(SHIFTS)}")
