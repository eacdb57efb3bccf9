"""Recommendation: session logs (MovieLens, Amazon), the session teacher, baseline recommenders, ranking metrics.

Generic over session datasets (any EpisodeDataset whose episodes are sessions and whose actions are item ids); the
RecSim simulator and its dataset recipes are a task of the `pbrl_envs` package. Dataset specs `movielens:<path>` and
`amazon:<path>` route to `pbrl.rec.logs`.
"""

from pbrl.rec.align_data import write_alignment_data
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
from pbrl.rec.movielens import LooSplit, RecLog, evaluate_ranking, leave_one_out, load_atomic, load_ml100k
from pbrl.rec.semantic_ids import SemanticIds, add_id_tokens, build_semantic_ids, embed_texts
from pbrl.rec.sessions import returns_to_go, session_preferences

__all__ = [
    "CooccurrenceRecommender",
    "LooSplit",
    "PopularityRecommender",
    "RecLog",
    "Recommender",
    "SemanticIds",
    "add_id_tokens",
    "build_semantic_ids",
    "embed_texts",
    "evaluate_next_item",
    "evaluate_ranking",
    "history_ids",
    "item_sequences",
    "leave_last_out",
    "leave_one_out",
    "load_amazon",
    "load_atomic",
    "load_ml100k",
    "load_movielens",
    "metrics_from_ranks",
    "ranking_metrics",
    "returns_to_go",
    "session_preferences",
    "target_ranks",
    "write_alignment_data",
]
