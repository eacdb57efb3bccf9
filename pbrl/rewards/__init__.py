"""Reward learners: losses, networks, segmenters, normalizers, training, relabeling.

Python API: `train_reward(dataset, pairs, RewardConfig(...), out_dir=None) -> RewardModel`,
`load_reward_model(dir)`, `relabel(dataset, model, normalizer) -> EpisodeDataset`, `reward_report(...)`.
"""

from pbrl.rewards.normalizers import NORMALIZERS, normalize
from pbrl.rewards.relabel import learned_rewards, relabel, relabel_to_minari
from pbrl.rewards.report import reward_report
from pbrl.rewards.segment import SegmenterConfig
from pbrl.rewards.train import RewardConfig, RewardModel, evaluate_pairs, load_reward_model, train_reward

__all__ = [
    "NORMALIZERS",
    "RewardConfig",
    "RewardModel",
    "SegmenterConfig",
    "evaluate_pairs",
    "learned_rewards",
    "load_reward_model",
    "normalize",
    "relabel",
    "relabel_to_minari",
    "reward_report",
    "train_reward",
]
