"""How good is a learned reward: held-out preference accuracy, and agreement with true rewards where they exist.

Pearson r = cov(x, y) / (sd(x) sd(y));  Spearman rho = Pearson of the ranks (ties get their average rank).
Correlations are reported per step (learned dense reward vs true reward) and per segment (summed over random
windows of the model's query length inside episodes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pbrl.data import EpisodeDataset, PreferencePairs
from pbrl.data.teachers import segment_returns
from pbrl.rewards.learner import RewardLearner
from pbrl.rewards.relabel import learned_rewards
from pbrl.rewards.train import evaluate_pairs

__all__ = ["pearson", "rankdata", "reward_report", "spearman"]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r (scipy.stats.pearsonr); nan when either side is constant or has fewer than two points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy import stats  # imported here: scipy.stats takes about a second to import

    return float(stats.pearsonr(x, y).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rho (scipy.stats.spearmanr: Pearson of the average-tie ranks); nan where `pearson` is."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(x, y).statistic)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties averaged (scipy.stats.rankdata)."""
    from scipy import stats

    return stats.rankdata(x)


def reward_report(
    dataset: EpisodeDataset,
    model: RewardLearner,
    pairs: PreferencePairs | None = None,
    num_segments: int = 2000,
    normalizer: str = "none",
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy on `pairs` (if given) and, when the dataset's rewards are not constant, the correlations."""
    report: dict[str, Any] = {"model": model.kind, "members": model.members, "dataset": dataset.name}
    if pairs is not None:
        report.update({f"pairs/{k}": v for k, v in evaluate_pairs(model, dataset, pairs).items()})
        report["pairs/count"] = len(pairs)
    true = dataset.rewards
    if np.ptp(true) == 0:
        report["note"] = "the dataset's rewards are constant: no true reward to correlate with"
        return report
    learned = learned_rewards(dataset, model, normalizer)
    report["step/pearson"] = pearson(learned, true)
    report["step/spearman"] = spearman(learned, true)
    starts = dataset.window_starts(model.length)
    if len(starts):
        rng = np.random.default_rng(seed)
        pick = starts[rng.integers(0, len(starts), min(num_segments, len(starts)))]
        lr, tr = segment_returns(learned, pick, model.length), segment_returns(true, pick, model.length)
        report["segment/pearson"] = pearson(lr, tr)
        report["segment/spearman"] = spearman(lr, tr)
        report["segment/count"] = len(pick)
    return report
