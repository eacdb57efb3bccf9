"""Data: EpisodeDataset, Minari and D4RL IO, reference scores, preference pairs, label IO, scripted teachers."""

from pbrl.data.collect import collect_episodes
from pbrl.data.dataset import Episode, EpisodeDataset, Transitions
from pbrl.data.preferences import PreferencePairs, safe_unpickle
from pbrl.data.registry import load_dataset, make_env, register_loader
from pbrl.data.scores import REFERENCE_SCORES, normalized_score, reference_scores, register_reference_scores
from pbrl.data.teachers import TEACHERS, Teacher, scripted_preferences

__all__ = [
    "REFERENCE_SCORES",
    "TEACHERS",
    "PreferencePairs",
    "Teacher",
    "safe_unpickle",
    "scripted_preferences",
    "Episode",
    "EpisodeDataset",
    "Transitions",
    "collect_episodes",
    "load_dataset",
    "make_env",
    "normalized_score",
    "reference_scores",
    "register_loader",
    "register_reference_scores",
]
