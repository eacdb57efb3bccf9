"""The LM reward model's file-level API: load a saved model, score {prompt, response} rows, and the LM paths of
`pbrl relabel` (score a JSONL file of responses) and `pbrl reward report` (held-out pairs, correlation with true
scores). `pbrl reward train DATA.jsonl --model lm` runs ``LMRewardLearner.fit``.

The learner itself (registry name `lm`: SegmentRM's bandit, token and segment-level models, Yin et al. 2025, arXiv
2501.02790 — config, data, network, training, normalizer, dense rewards) is ``pbrl.rewards.lm_learner``; its public
names are importable from here too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.rewards.learner import CONFIG_NAME
from pbrl.rewards.lm_learner import (
    BACKBONE_DIR,
    CLAMP,
    REFERENCE_DIR,
    SIGMA_FLOOR,
    TOKENIZER_DIR,
    LMPairs,
    LMRewardConfig,
    LMRewardLearner,
    LMValueEnsemble,
    build_rows,
    dense_rewards,
    eos_index,
    evaluate_lm_pairs,
    lm_segmenter,
    next_token_entropy,
    pair_metrics,
    sequence_scores,
    stop_ids_of,
    token_rewards,
    tokenize_lm_pairs,
)


# ----------------------------------------------------------------------------------------------- loading and scoring
def load_lm_reward(path: str | os.PathLike, device: str = "cpu") -> LMRewardLearner:
    """The LM reward model saved in folder `path` (by `pbrl reward train DATA.jsonl --model lm --out DIR`)."""
    from pbrl.rewards.train import load_reward_model

    model = load_reward_model(path, device=device)
    if not isinstance(model, LMRewardLearner):
        raise PbrlError(f"{path}: a {model.kind!r} reward model, not an LM one (train it with --model lm)")
    return model


def score_responses(
    model: LMRewardLearner, rows: Sequence[dict[str, Any]], source: str = "responses", batch_size: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Score rows {prompt, response} (strings or messages, as in preference records): each row comes back with
    `reward` (the ensemble-mean sequence score), `reward_normalized` (mean of the normalized segment rewards),
    `segments` (K) and `token_rewards` (the dense rewards PPO would see, one per response token)."""
    from pbrl.llm.prefs_data import PreferenceRecord, _check_field

    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "prompt" not in row or "response" not in row:
            raise PbrlError(f"{source}: row {i}: expected an object with prompt and response")
        resp = _check_field(row["response"], f"{source}: row {i}: field 'response'")
        records.append(PreferenceRecord(_check_field(row["prompt"], f"{source}: row {i}: field 'prompt'"), resp, resp))
    pairs = tokenize_lm_pairs(records, model.tokenizer, model.length, source)
    seg = model.segments(pairs.prompt, pairs.chosen, batch_size, progress)
    out = []
    for row, s in zip(rows, seg):
        out.append({**row, "reward": float(s["values"].mean(1).mean()),
                    "reward_normalized": float(model.normalized(s).mean()), "segments": int(len(s["lengths"])),
                    "token_rewards": [round(float(x), 5) for x in dense_rewards(model, s)]})
    return out


# ----------------------------------------------------------------------------------------------- command-line helpers
def is_lm_folder(path: str | os.PathLike) -> bool:
    """Whether `path` holds a saved LM reward model (its config.json names the lm learner)."""
    try:
        return json.loads((Path(path) / CONFIG_NAME).read_text()).get("model") == "lm"
    except (OSError, ValueError, AttributeError):
        return False


def score_file(
    reward_dir: str | os.PathLike, responses: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """`pbrl relabel RESPONSES.jsonl DIR OUT.jsonl`: every {prompt, response} row of `responses` scored by the LM
    reward model (`score_responses`) into OUT (written whole; an existing OUT only with `overwrite`)."""
    from pbrl.utils import atomic_write_text, dumps_json, read_json_lines

    if Path(out).exists() and not overwrite:
        raise PbrlError(f"{out}: exists; pass --overwrite to replace it")
    model = load_lm_reward(reward_dir, device)
    rows = [obj for _, obj in read_json_lines(responses)]
    if not rows:
        raise PbrlError(f"{responses}: no rows")
    scored = score_responses(model, rows, str(responses), progress=True)
    atomic_write_text(str(out), "".join(dumps_json(r) + "\n" for r in scored))
    r = np.array([s["reward"] for s in scored])
    return {"out": str(out), "responses": len(scored), "reward_mean": float(r.mean()), "reward_std": float(r.std()),
            "segments_mean": float(np.mean([s["segments"] for s in scored]))}


def report_file(reward_dir: str | os.PathLike, pairs_path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """`pbrl reward report PAIRS.jsonl --reward DIR`: held-out pair accuracy of the LM reward model and, when the
    rows carry the responses' true scores (`score_chosen`, `score_rejected`, as `pbrl llm chat-data` writes
    them), the Pearson / Spearman correlation of the sequence reward with them over all responses."""
    from pbrl.llm.prefs_data import load_preferences
    from pbrl.rewards.report import pearson, spearman
    from pbrl.utils import read_json_lines

    model = load_lm_reward(reward_dir, device)
    pairs = tokenize_lm_pairs(load_preferences(pairs_path), model.tokenizer, model.length, str(pairs_path))
    rep: dict[str, Any] = {"model": model.kind, "members": model.members, "segmenter": model.segmenter.kind,
                           "dataset": str(pairs_path)}
    scores = sequence_scores(model, pairs.prompt * 2, pairs.chosen + pairs.rejected, progress=True)  # [M, 2P]
    rep.update({f"pairs/{k}": v for k, v in pair_metrics(scores, pairs.label).items()})
    rep["pairs/count"] = len(pairs)
    if Path(pairs_path).is_file():
        raw = [obj for _, obj in read_json_lines(pairs_path)]
        if all(isinstance(o, dict) and "score_chosen" in o and "score_rejected" in o for o in raw):
            true = np.array([o["score_chosen"] for o in raw] + [o["score_rejected"] for o in raw], np.float64)
            learned = scores.mean(0)
            rep["response/pearson"], rep["response/spearman"] = pearson(learned, true), spearman(learned, true)
    return rep


__all__ = [
    "BACKBONE_DIR", "CLAMP", "REFERENCE_DIR", "SIGMA_FLOOR", "TOKENIZER_DIR", "build_rows", "dense_rewards",
    "eos_index", "evaluate_lm_pairs", "is_lm_folder", "lm_segmenter", "LMPairs", "LMRewardConfig",
    "LMRewardLearner", "LMValueEnsemble", "load_lm_reward", "next_token_entropy", "pair_metrics",
    "report_file", "score_file", "score_responses", "sequence_scores", "stop_ids_of", "token_rewards",
    "tokenize_lm_pairs"]
