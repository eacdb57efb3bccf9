"""Alignment SFT data for an LLM recommender over semantic IDs (GREAM's collaborative-semantic alignment tasks).

GREAM (Hong et al., arXiv 2510.20815; official code GRRM, utils/data.py and utils/prompt.py) fine-tunes the LM on a
mix of tasks that tie the new ID tokens to behaviour and to item text. Written here, as chat records that
`pbrl llm sft` reads (`{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`, plus `task` and, for
the ID-answer tasks, `item` = the answer's item index, which the SFT loader ignores):

- seqrec: "The user has interacted with items <ID>, <ID>, ... in chronological order. Can you predict the next
  possible item ...?" -> the next item's ID. From the training part of the leave-one-out split only (each user's
  sequence without its last two items), sliding over each sequence: target t[i] for i >= 1 with the <= max_history
  items before it (the official `_process_train_data`). valid.jsonl holds one seqrec record per user: the history
  before the validation target (second-to-last item) -> that target (prompt 0, as the official valid set).
- item2index: the item's title, or title and description, -> its ID; index2item: the ID -> its title, or title
  and description (official answer layout "<title>\n\n<description>"); every item of the catalog once. The title
  is the item text before its last "; " ("Toy Story (1995)"), the description the genres after it ("Animation,
  Children's, Comedy"); an item text without "; " is all title and only the title templates are drawn.
- preference: a history -> a statement of the genres that history holds most, counted from its items' texts
  (the part after "; ", e.g. "Toy Story (1995); Animation, Children's, Comedy"): "The user mostly chooses Drama
  (9 of 20 items), Comedy (6) and Thriller (4)." One record per user, from the last <= max_history training items.
  (The official preference answers are written by an LLM from reviews; this one is computed from the log.)

Each record draws its prompt template uniformly from the task's short list (seeded; the official code draws one per
example too); IDs are the items' tokens concatenated, items joined by ", ".

Training on it: a seqrec answer is 3-4 tokens after a history of up to 20 IDs, so more than 90 % of its labels are
masked and `pbrl llm sft`'s default filter (max_masked_fraction 0.9, the LIONs rule) would drop most records; pass
`--max-masked-fraction 1.0`. `alignment_tokenizer` builds a chat tokenizer with the ID tokens as single tokens.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.rec.movielens import LooSplit, RecLog
from pbrl.rec.semantic_ids import SemanticIds

TASKS = ("seqrec", "item2index", "index2item", "preference")
HISTORY_SEP = ", "

# a few of the official templates per task (utils/prompt.py), kept short
PROMPTS: dict[str, list[str]] = {
    "seqrec": [
        "The user has interacted with items {inters} in chronological order. Can you predict the next possible item "
        "that the user may expect?",
        "Here are the user's historical interactions: {inters}, try to recommend another item to the user. Note "
        "that the historical interactions are arranged in chronological order.",
        "Based on the items that the user has interacted with: {inters}, can you determine what item would be "
        "recommended to him next?",
        "Which item would the user be likely to interact with next after interacting with items {inters}?",
    ],
    "item2index": [
        'Which item has the title: "{title}"?',
        'An item is called "{title}", could you please let me know which item it is?',
        'An item is called "{title}" and described as "{description}", can you tell me which item it is?',
        'Could you please identify what item is called "{title}" and described as "{description}"?',
    ],
    "index2item": [
        "What is the title of item {item}?",
        "Could you please tell me what item {item} is called?",
        "What is the title and description of item {item}?",
        "Please tell me what item {item} is called, along with a brief description of it.",
    ],
    "preference": [
        "The user has interacted with items {inters} in chronological order. Please estimate his preferences.",
        "Based on the items that the user has interacted with: {inters}, can you infer what preferences he has?",
        "Can you provide a summary of the user's preferences based on his historical interactions: {inters}?",
    ],
}


def item_genres(text: str) -> list[str]:
    """The genres/categories of an item text "<title> (<year>); <genre>, <genre>" (none without "; ")."""
    _, sep, rest = text.rpartition("; ")
    return [g.strip() for g in rest.split(",") if g.strip()] if sep else []


def preference_statement(texts: Sequence[str], top: int = 3) -> str | None:
    """"The user mostly chooses A (n of N items), B (m) and C (l)." for the `top` genres by count over the item
    texts (ties: the genre seen first in the history); None when the texts carry no genres."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        for g in item_genres(t):
            counts[g] += 1
            first.setdefault(g, i)
    if not counts:
        return None
    best = sorted(counts, key=lambda g: (-counts[g], first[g]))[:top]
    parts = [f"{best[0]} ({counts[best[0]]} of {len(texts)} items)"] + [f"{g} ({counts[g]})" for g in best[1:]]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The user mostly chooses {body}."


def title_description(text: str) -> tuple[str, str]:
    """(title, description) of an item text "<title> (<year>); <genres>": split at the last "; " ("" without)."""
    title, sep, rest = text.rpartition("; ")
    return (title.strip(), rest.strip()) if sep else (text.strip(), "")


def _chat(task: str, prompt: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "task": task, **extra}


def alignment_records(log: RecLog, split: LooSplit, ids: SemanticIds, tasks: Sequence[str] = TASKS, seed: int = 0,
                      max_history: int = 20) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of the alignment tasks (see the module docstring)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise PbrlError(f"tasks: expected some of {', '.join(TASKS)}; got {', '.join(unknown) or 'none'}")
    if ids.num_items != log.num_items:
        raise PbrlError(f"semantic IDs cover {ids.num_items} items but the log {log.name} has {log.num_items}")
    if max_history < 1:
        raise PbrlError(f"max_history must be >= 1, got {max_history}")
    rng = random.Random(seed)
    id_text = [ids.item_text(i) for i in range(ids.num_items)]

    def inters(hist: np.ndarray) -> str:
        return HISTORY_SEP.join(id_text[int(i)] for i in hist)

    def pick(task: str, described: bool = False) -> str:
        # without a description only the templates that do not name one are drawn
        choices = [p for p in PROMPTS[task] if described or "description" not in p]
        return choices[rng.randrange(len(choices))]

    train: list[dict] = []
    if "seqrec" in tasks:
        for seq in split.train:
            for i in range(1, len(seq)):
                hist = seq[max(0, i - max_history): i]
                train.append(_chat("seqrec", pick("seqrec").format(inters=inters(hist)), id_text[int(seq[i])],
                                   item=int(seq[i])))
    if "item2index" in tasks:
        for i, text in enumerate(log.item_texts):
            title, desc = title_description(text)
            prompt = pick("item2index", bool(desc)).format(title=title, description=desc)
            train.append(_chat("item2index", prompt, id_text[i], item=i))
    if "index2item" in tasks:
        for i, text in enumerate(log.item_texts):
            title, desc = title_description(text)
            prompt = pick("index2item", bool(desc))
            answer = f"{title}\n\n{desc}" if "description" in prompt else title
            train.append(_chat("index2item", prompt.format(item=id_text[i]), answer, item=i))
    if "preference" in tasks:
        made = 0
        for seq in split.train:
            hist = seq[-max_history:]
            answer = preference_statement([log.item_texts[int(i)] for i in hist])
            if answer is not None:
                train.append(_chat("preference", pick("preference").format(inters=inters(hist)), answer))
                made += 1
        if not made:
            raise PbrlError(f"preference: the item texts of {log.name} carry no genres (the part after '; ')")
    valid = [_chat("seqrec", PROMPTS["seqrec"][0].format(inters=inters(h[-max_history:])), id_text[int(t)],
                   item=int(t))
             for h, t in zip(split.valid_histories, split.valid_targets) if len(h)]
    return train, valid


def write_alignment_data(log: RecLog, split: LooSplit, ids: SemanticIds, out_dir: str | Path,
                         tasks: Sequence[str] = TASKS, seed: int = 0, max_history: int = 20,
                         max_per_task: int | None = None) -> dict[str, dict[str, int]]:
    """Write <out_dir>/sft.jsonl (the tasks' records, shuffled with `seed`) and valid.jsonl (seqrec on the
    validation targets); `max_per_task` keeps a seeded random subset of each task. Returns the record counts
    {"sft": {task: n}, "valid": {"seqrec": n}}."""
    from pbrl.utils import atomic_write_text

    if max_per_task is not None and max_per_task < 1:
        raise PbrlError(f"max_per_task must be >= 1 or None, got {max_per_task}")
    train, valid = alignment_records(log, split, ids, tasks=tasks, seed=seed, max_history=max_history)
    rng = random.Random(seed + 1)
    if max_per_task is not None:
        kept: list[dict] = []
        for task in tasks:
            rows = [r for r in train if r["task"] == task]
            kept += rows if len(rows) <= max_per_task else rng.sample(rows, max_per_task)
        train = kept
    rng.shuffle(train)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sft.jsonl", train), ("valid.jsonl", valid)):
        atomic_write_text(str(out / name), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    made = Counter(r["task"] for r in train)
    return {"sft": {t: made[t] for t in tasks}, "valid": {"seqrec": len(valid)}}


ID_TOKEN = re.compile(r"<\|[a-z]_\d+\|>")


def alignment_tokenizer(records: Sequence[dict], ids: SemanticIds, vocab_size: int = 2000):
    """A chat tokenizer for the records: byte-level BPE (`pbrl.llm.tokenizer.bpe_tokenizer`, ChatML template)
    trained on their text with the ID tokens taken out, then every ID token added as one special token
    (`add_id_tokens`), so an ID of L (+1) tokens encodes to exactly L (+1) ids."""
    from pbrl.llm.tokenizer import bpe_tokenizer
    from pbrl.rec.semantic_ids import add_id_tokens

    texts = (ID_TOKEN.sub(" ", m["content"]) for r in records for m in r["messages"])
    tok = bpe_tokenizer(texts, vocab_size=vocab_size, chat=True)
    add_id_tokens(tok, ids)
    return tok
