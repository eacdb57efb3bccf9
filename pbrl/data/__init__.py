"""Data: EpisodeDataset, Minari and D4RL IO, reference scores, preference pairs, label IO, scripted teachers,
the dataset-recipe registry (`pbrl.data.recipes`)."""

from pbrl.data.collect import collect_episodes
from pbrl.data.dataset import Episode, EpisodeDataset, Transitions
from pbrl.data.preferences import PreferencePairs, safe_unpickle
from pbrl.data.recipes import RECIPES, Recipe, register_recipe
from pbrl.data.registry import load_dataset, make_env, register_loader
from pbrl.data.scores import REFERENCE_SCORES, normalized_score, reference_scores, register_reference_scores
from pbrl.data.teachers import TEACHERS, Teacher, TeacherConfig, TeacherName, scripted_preferences

__all__ = [
    "RECIPES",
    "REFERENCE_SCORES",
    "TEACHERS",
    "PreferencePairs",
    "Recipe",
    "Teacher",
    "TeacherConfig",
    "TeacherName",
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
    "register_recipe",
    "register_reference_scores",
]
