"""Reward learners: losses, networks, segmenters, normalizers, training, relabeling.

Python API: `train_reward(dataset, pairs, RewardConfig(...), out_dir=None) -> RewardModel`,
`load_reward_model(dir)`, `relabel(dataset, model, normalizer, shift=...) -> EpisodeDataset`, `reward_report(...)`.
A learner is one class registered by name (`register_learner(name, cls)`; built-ins step, segment, pt; see
`learner.py` for the protocol). Domain-free pieces for other step types (LLM tokens): a learner maps x [M, B, T, D] + mask [M, B, T] (+ segment
ends) to `StepOutput(values, weights)`; `sequence_score` aggregates, `pair_loss` is one Bradley–Terry batch,
`segment_ends` / `densify_segments` segment and densify, `normalize` combines members.
"""

from pbrl.rewards.learner import (
    LEARNERS,
    LearnerName,
    RewardLearner,
    StepOutput,
    get_learner,
    register_learner,
    sequence_score,
)
from pbrl.rewards.nets import StepLearner, StepRewardMLP
from pbrl.rewards.normalizers import NORMALIZERS, SHIFTS, NormalizerName, ShiftName, normalize, shift
from pbrl.rewards.pt import PreferenceTransformer, PTLearner
from pbrl.rewards.relabel import learned_rewards, relabel, relabel_to_minari
from pbrl.rewards.report import reward_report
from pbrl.rewards.segment import (
    SegmenterConfig,
    SegmentLearner,
    SegmentRewardModel,
    densify_segments,
    segment_ends,
)
from pbrl.rewards.train import (
    RewardConfig,
    RewardModel,
    evaluate_pairs,
    load_reward_model,
    pair_loss,
    train_reward,
)
from pbrl.rewards.units import RawRewards

__all__ = [
    "LEARNERS",
    "LearnerName",
    "NORMALIZERS",
    "SHIFTS",
    "ShiftName",
    "shift",
    "NormalizerName",
    "PTLearner",
    "RawRewards",
    "RewardLearner",
    "SegmentLearner",
    "StepLearner",
    "get_learner",
    "register_learner",
    "RewardConfig",
    "RewardModel",
    "PreferenceTransformer",
    "SegmentRewardModel",
    "SegmenterConfig",
    "StepOutput",
    "StepRewardMLP",
    "densify_segments",
    "evaluate_pairs",
    "learned_rewards",
    "load_reward_model",
    "normalize",
    "pair_loss",
    "relabel",
    "relabel_to_minari",
    "reward_report",
    "segment_ends",
    "sequence_score",
    "train_reward",
]
