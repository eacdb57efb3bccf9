"""Recommendation: session logs (MovieLens, Amazon), the session teacher, baseline recommenders, ranking metrics,
and the LLM recommender (GREAM: semantic IDs, alignment data, SRPO, constrained decoding, the end-to-end pipeline).

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

# the torch-based modules load on first use, so that reading a log (pbrl.rec.logs) does not import torch
_LAZY = {
    **dict.fromkeys(("constrained_beam_search", "id_trie", "level_sets_allowed"), "pbrl.rec.decoding"),
    **dict.fromkeys(("GreamConfig", "run_gream"), "pbrl.rec.gream"),
    **dict.fromkeys(("GRU4Rec", "SASRec", "SeqRecConfig"), "pbrl.rec.sasrec"),
    **dict.fromkeys(("SrpoConfig", "bgae_advantages", "grpo_advantages", "rsvr_reward", "train_srpo"),
                    "pbrl.rec.srpo"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pbrl.rec' has no attribute {name!r}")


__all__ = [
    "GRU4Rec",
    "GreamConfig",
    "SASRec",
    "SeqRecConfig",
    "SrpoConfig",
    "bgae_advantages",
    "constrained_beam_search",
    "grpo_advantages",
    "id_trie",
    "level_sets_allowed",
    "rsvr_reward",
    "run_gream",
    "train_srpo",
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
