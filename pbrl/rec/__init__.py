"""Recommendation: session logs (MovieLens, Amazon), the session teacher, baseline recommenders, ranking metrics.

Generic over session datasets (any EpisodeDataset whose episodes are sessions and whose actions are item ids); the
RecSim simulator and its dataset recipes are a task of the `pbrl_envs` package. Dataset specs `movielens:<path>` and
`amazon:<path>` route to `pbrl.rec.logs`.
"""

from pbrl.rec.baselines import (
    CooccurrenceRecommender,
    PopularityRecommender,
    Recommender,
    evaluate_next_item,
    item_sequences,
    leave_last_out,
)
from pbrl.rec.logs import history_ids, load_amazon, load_movielens
from pbrl.rec.metrics import metrics_from_ranks, ranking_metrics, target_ranks
from pbrl.rec.sessions import returns_to_go, session_preferences

__all__ = [
    "CooccurrenceRecommender",
    "PopularityRecommender",
    "Recommender",
    "evaluate_next_item",
    "history_ids",
    "item_sequences",
    "leave_last_out",
    "load_amazon",
    "load_movielens",
    "metrics_from_ranks",
    "ranking_metrics",
    "returns_to_go",
    "session_preferences",
    "target_ranks",
]
