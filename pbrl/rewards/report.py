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
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy on `pairs` (if given) and, when the dataset's rewards are not constant, the correlations.
    `progress`: a bar over the stages (pairs, scoring every step, step and segment correlations), and one over
    the scored chunks inside the scoring stage."""
    from tqdm.auto import tqdm

    true = dataset.rewards
    constant = bool(np.ptp(true) == 0)
    stages = (["pairs"] if pairs is not None else []) + ([] if constant else ["scoring", "step corr", "segment corr"])
    bar = tqdm(total=len(stages), desc="reward report", unit="stage", disable=not progress or not stages,
               dynamic_ncols=True)

    def stage(name: str) -> None:
        bar.set_postfix_str(name, refresh=True)

    report: dict[str, Any] = {"model": model.kind, "members": model.members, "dataset": dataset.name}
    if pairs is not None:
        stage("pairs")
        report.update({f"pairs/{k}": v for k, v in evaluate_pairs(model, dataset, pairs).items()})
        report["pairs/count"] = len(pairs)
        bar.update(1)
    if constant:
        bar.close()
        report["note"] = "the dataset's rewards are constant: no true reward to correlate with"
        return report
    stage("scoring")
    learned = learned_rewards(dataset, model, normalizer, progress=progress)
    bar.update(1)
    stage(f"step corr ({len(true)} steps)")
    report["step/pearson"] = pearson(learned, true)
    report["step/spearman"] = spearman(learned, true)
    bar.update(1)
    starts = dataset.window_starts(model.length)
    if len(starts):
        rng = np.random.default_rng(seed)
        pick = starts[rng.integers(0, len(starts), min(num_segments, len(starts)))]
        stage(f"segment corr ({len(pick)} segments)")
        lr, tr = segment_returns(learned, pick, model.length), segment_returns(true, pick, model.length)
        report["segment/pearson"] = pearson(lr, tr)
        report["segment/spearman"] = spearman(lr, tr)
        report["segment/count"] = len(pick)
    bar.update(1)
    bar.close()
    return report
