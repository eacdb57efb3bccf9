"""A verifiable chat task suite: seeded prompts, a graded scorer, train / held-out splits, a pre-training corpus and
scripted-teacher preference pairs.

No preference data, judge model or benchmark can be downloaded here, so the LLM branch gets its ground truth from
tasks whose answers can be checked. Every task has a reference answer and a list of required *parts*; the scorer
gives each part a credit in [0, 1] and the score is their mean,

    score(task, response) = (1 / P) * sum_p credit_p(task, response)   in [0, 1],

so a response that gets some parts right earns partial credit, and which tokens earn it is known (credit assignment
inside a response matters). Responses are read as whitespace-separated words (what a word-level tokenizer sees).

Families (each a small generator from a ``numpy.random.Generator``; the rules are in each ``_credits_*`` docstring):
``sort``, ``filter``, ``count``, ``transform``, ``arithmetic``, ``format``, ``constrained``. The vocabulary is small
(about forty words and the numbers 0-99) so that a tiny LM can learn it on a CPU.

Splits: a task's key is (family, prompt) (the prompt is a function of the family's arguments, so equal arguments
mean equal keys; constrained writing's reference choices do not enter it, so one prompt is never in both splits);
a key is held out when crc32(key) mod 5 == 0 (about 20 %), so the train and held-out splits never share a prompt or
(family, arguments) whatever the seeds. The corpus is drawn from the train split only.

Preference pairs: two responses per prompt at different corruption levels (``corrupt``), scored, and labelled by
pbrl's scripted teachers (B-Pref noise models, ``pbrl.data.teachers.label_pairs``) with the two scores as the two
segments' returns (a response is one "segment" of length 1, so the myopic discount has no effect). Rows follow TRL's
preference layout ``{prompt, chosen, rejected}`` (prompt as a list of messages) plus the two scores.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.data.teachers import TeacherConfig, get_teacher, label_pairs
from pbrl.errors import PbrlError
from pbrl.utils import atomic_write_text, dumps_json

# ---------------------------------------------------------------------------------------------------------------
# vocabulary (small on purpose: a tiny LM must learn it on a CPU)

COLORS = ("red", "blue", "green", "yellow", "black", "white")
ANIMALS = ("cat", "dog", "fox", "owl", "bee", "cow", "hen", "pig")
OBJECTS = ("tree", "house", "river", "hat", "ball", "cup", "box", "road")
VERBS = ("sees", "finds", "likes", "wants")
STARTERS = ("today", "look", "my", "every", "one")
LIST_WORDS = COLORS + ANIMALS + OBJECTS
"""Words of the list families (sort, filter, transform, format)."""
MAX_LIST_NUMBER = 19
"""List families draw numbers from 0..MAX_LIST_NUMBER."""

Args = tuple[Any, ...]
"""A task's generator arguments: nested tuples of str / int (hashable, with a stable repr)."""


@dataclass(frozen=True)
class ChatTask:
    """One task: a user prompt, its reference answer and the parts the scorer checks."""

    family: str
    """Instruction family (a key of FAMILIES)."""
    prompt: str
    """The user's instruction as plain text."""
    messages: list[dict[str, str]]
    """The conversation so far: one {"role": "user", "content": prompt} turn (TRL's conversational format)."""
    answer: str
    """The reference response; it scores 1.0."""
    parts: tuple[str, ...]
    """The required parts, in the order of ``part_credits``."""
    seed: int
    """``make_task(seed)`` rebuilds this task."""
    args: Args = field(default=())
    """The family generator's arguments (they determine the prompt and the reference answer)."""

    @property
    def key(self) -> tuple[str, str]:
        """(family, prompt): the split key; tasks with one key are duplicates for evaluation."""
        return (self.family, self.prompt)


@dataclass(frozen=True)
class _Family:
    generate: Callable[[np.random.Generator], Args]
    prompt: Callable[[Args], str]
    answer_items: Callable[[Args], list[str]]
    render: Callable[[Args, list[str]], str]
    parts: Callable[[Args], list[str]]
    credits: Callable[[Args, str], list[float]]


def _words(response: str) -> list[str]:
    return response.split()


def _is_int(word: str) -> bool:
    return re.fullmatch(r"-?\d+", word) is not None


def _draw_list(rng: np.random.Generator, kind: str, lo: int = 3, hi: int = 6) -> tuple[str, ...]:
    """k distinct items (numbers 0..MAX_LIST_NUMBER or LIST_WORDS), k in [lo, hi]."""
    k = int(rng.integers(lo, hi + 1))
    if kind == "numbers":
        return tuple(str(int(x)) for x in rng.choice(MAX_LIST_NUMBER + 1, k, replace=False))
    return tuple(str(LIST_WORDS[int(i)]) for i in rng.choice(len(LIST_WORDS), k, replace=False))


def _positional(expected: Sequence[str], response: str) -> list[float]:
    """One credit per position (word i of the response equals expected[i]) and one for exactly len(expected) words."""
    got = _words(response)
    pos = [float(i < len(got) and got[i] == x) for i, x in enumerate(expected)]
    return pos + [float(len(got) == len(expected))]


def _positional_parts(expected: Sequence[str]) -> list[str]:
    return [f"item {i + 1} is {x}" for i, x in enumerate(expected)] + [f"exactly {len(expected)} items"]


def _space_join(_args: Args, items: list[str]) -> str:
    return " ".join(items)


# --- sort ------------------------------------------------------------------------------------------------------

_SORT_PROMPTS = {
    "asc": "Sort these numbers from smallest to largest, separated by spaces: {}",
    "desc": "Sort these numbers from largest to smallest, separated by spaces: {}",
    "alpha": "Sort these words in alphabetical order, separated by spaces: {}",
}


def _gen_sort(rng: np.random.Generator) -> Args:
    order = str(rng.choice(list(_SORT_PROMPTS)))
    return (order, _draw_list(rng, "words" if order == "alpha" else "numbers"))


def _sorted_items(args: Args) -> list[str]:
    order, items = args
    if order == "alpha":
        return sorted(items)
    return [str(x) for x in sorted((int(x) for x in items), reverse=order == "desc")]


def _credits_sort(args: Args, response: str) -> list[float]:
    """Sort: one part per position (word i of the response is the i-th item of the sorted list) plus one part for
    exactly k words. E.g. "3 5 7" for [7, 3, 5] ascending: 1.0; "3 7 5": (1 + 0 + 0 + 1) / 4 = 0.5."""
    return _positional(_sorted_items(args), response)


# --- filter ----------------------------------------------------------------------------------------------------

def _keeps(rule: tuple[str, ...], item: str) -> bool:
    if rule[0] == "even":
        return int(item) % 2 == 0
    if rule[0] == "odd":
        return int(item) % 2 == 1
    if rule[0] == "greater":
        return int(item) > int(rule[1])
    return item.startswith(rule[1])  # "letter"


def _rule_text(rule: tuple[str, ...]) -> str:
    return {"even": "even numbers", "odd": "odd numbers"}.get(rule[0]) or (
        f"numbers greater than {rule[1]}" if rule[0] == "greater" else f"words that start with {rule[1]}"
    )


def _gen_rule_list(rng: np.random.Generator, need_both: bool) -> Args:
    """(rule, items) with at least one kept item and (if need_both) one dropped item."""
    for _ in range(100):
        if rng.random() < 0.6:
            items = _draw_list(rng, "numbers")
            kind = str(rng.choice(["even", "odd", "greater"]))
            rule: tuple[str, ...] = (kind, str(int(rng.integers(3, 16)))) if kind == "greater" else (kind,)
        else:
            items = _draw_list(rng, "words")
            rule = ("letter", str(rng.choice(sorted({w[0] for w in items}))))
        kept = [x for x in items if _keeps(rule, x)]
        if kept and (not need_both or len(kept) < len(items)):
            return (rule, items)
    raise AssertionError("unreachable: a list with a kept and a dropped item is drawn within 100 tries")


def _filtered(args: Args) -> list[str]:
    rule, items = args
    return [x for x in items if _keeps(rule, x)]


def _parts_filter(args: Args) -> list[str]:
    return [f"keeps {x}" for x in _filtered(args)] + ["drops the other items", "the kept items once each, in order"]


def _credits_filter(args: Args, response: str) -> list[float]:
    """Filter: one part per item that should be kept (it appears in the response), one part for dropping the rest
    (no item that fails the rule appears) and one for the exact list (the response's words are the kept items once
    each, in the original order). E.g. keep evens of [3, 8, 5, 2]: "8 2" 1.0; "8 5 2": (1 + 1 + 0 + 0) / 4 = 0.5."""
    rule, items = args
    kept = _filtered(args)
    got = _words(response)
    dropped = [x for x in items if x not in kept]
    return [float(x in got) for x in kept] + [float(not any(x in got for x in dropped)), float(got == kept)]


# --- count -----------------------------------------------------------------------------------------------------

def _count_value(args: Args) -> str:
    return str(len(_filtered(args)))


def _credits_single_number(value: str, response: str) -> list[float]:
    got = _words(response)
    first = next((w for w in got if _is_int(w)), None)
    return [float(len(got) == 1 and _is_int(got[0])), float(first == value)]


def _credits_count(args: Args, response: str) -> list[float]:
    """Count: two parts, "the reply is one number" (exactly one word, an integer) and "the count is right" (the
    first integer in the reply equals the number of items that pass the rule). E.g. evens of [3, 8, 5, 2]: "2" 1.0;
    "2 items" 0.5; "3" 0.5; "three" 0."""
    return _credits_single_number(_count_value(args), response)


# --- transform -------------------------------------------------------------------------------------------------

_TRANSFORM_PROMPTS = {
    "reverse": "Reverse this list, separated by spaces: {}",
    "upper": "Write these words in upper case, separated by spaces: {}",
    "add1": "Add 1 to each number, separated by spaces: {}",
}


def _gen_transform(rng: np.random.Generator) -> Args:
    op = str(rng.choice(list(_TRANSFORM_PROMPTS)))
    kind = {"upper": "words", "add1": "numbers"}.get(op) or str(rng.choice(["words", "numbers"]))
    return (op, _draw_list(rng, kind))


def _transformed(args: Args) -> list[str]:
    op, items = args
    if op == "reverse":
        return list(reversed(items))
    if op == "upper":
        return [x.upper() for x in items]
    return [str(int(x) + 1) for x in items]


def _credits_transform(args: Args, response: str) -> list[float]:
    """Transform (reverse / upper case / add 1): one part per position of the transformed list plus one part for
    exactly k words, as for sort. E.g. add 1 to [4, 9]: "5 10" 1.0; "5 9": (1 + 0 + 1) / 3."""
    return _positional(_transformed(args), response)


# --- arithmetic ------------------------------------------------------------------------------------------------

def _gen_arithmetic(rng: np.random.Generator) -> Args:
    op = str(rng.choice(["+", "-", "*"]))
    if op == "*":  # small products keep the number vocabulary small
        a, b = int(rng.integers(2, 10)), int(rng.integers(2, 13))
    else:
        a, b = int(rng.integers(0, 100)), int(rng.integers(0, 100))
        if op == "-" and b > a:  # no negative results
            a, b = b, a
    return (a, op, b)


def _arith_value(args: Args) -> str:
    a, op, b = args
    return str(a + b if op == "+" else a - b if op == "-" else a * b)


def _credits_arithmetic(args: Args, response: str) -> list[float]:
    """Arithmetic (a op b, 1-2 digit numbers, no negative results): two parts, "the reply is one number" and "the
    value is right" (the first integer in the reply is the exact result; no partial credit for near misses).
    E.g. 7 + 12: "19" 1.0; "19 ." 0.5; "18" 0.5."""
    return _credits_single_number(_arith_value(args), response)


# --- format ----------------------------------------------------------------------------------------------------

_FORMAT_PROMPTS = {
    "comma": "Write these words as a comma separated list: {}",
    "numbered": "Write these words as numbered lines: {}",
}


def _render_format(args: Args, items: list[str]) -> str:
    style = args[0]
    if style == "comma":
        return ", ".join(items)
    return "\n".join(f"{i + 1}. {x}" for i, x in enumerate(items))


def _format_items(response: str) -> list[str]:
    """The words of a reply with commas and line numbers ("3.") taken out."""
    return [w for w in re.split(r"[\s,]+", response) if w and re.fullmatch(r"\d+\.", w) is None]


def _credits_format(args: Args, response: str) -> list[float]:
    """Format (comma separated / numbered lines): one part per position (the i-th word of the reply, commas and
    line numbers taken out, is the i-th item) and one layout part: the reply has k items and is exactly those items
    laid out in the requested style (", " between items; or lines "1. x"). E.g. comma [red, fox]: "red, fox" 1.0;
    "red fox" 2/3; "fox, red" 1/3."""
    _, items = args
    got = _format_items(response)
    pos = [float(i < len(got) and got[i] == x) for i, x in enumerate(items)]
    return pos + [float(len(got) == len(items) and response.strip() == _render_format(args, got))]


# --- constrained writing ---------------------------------------------------------------------------------------

_CONSTRAINT_KINDS = ("color", "animal", "ends_number", "starts", "mentions", "words")


def _gen_constrained(rng: np.random.Generator) -> Args:
    k = int(rng.integers(2, 5))
    kinds = sorted(str(x) for x in rng.choice(_CONSTRAINT_KINDS, k, replace=False))
    out: list[tuple[Any, ...]] = []
    for kind in kinds:
        if kind == "starts":
            out.append((kind, str(rng.choice(STARTERS))))
        elif kind == "mentions":
            out.append((kind, str(rng.choice(OBJECTS))))
        elif kind == "words":
            out.append((kind, int(rng.integers(7, 10))))  # the longest reference has 6 words
        else:
            out.append((kind,))
    # the reference's own choices (which color, animal, number) are arguments too, so the answer is a function
    # of the arguments; they are not in the prompt, so one prompt can have several references (all score 1)
    fill = (str(rng.choice(COLORS)), str(rng.choice(ANIMALS)), str(rng.choice(VERBS)), int(rng.integers(0, 20)))
    return (tuple(out), fill)


def _constraint_text(c: tuple[Any, ...]) -> str:
    return {
        "color": "names a color",
        "animal": "names an animal",
        "ends_number": "ends with a number",
        "starts": f"starts with the word {c[-1]}",
        "mentions": f"uses the word {c[-1]}",
        "words": f"has 3 to {c[-1]} words",
    }[c[0]]


def _constrained_items(args: Args) -> list[str]:
    cons, (color, animal, verb, number) = args
    kinds = {c[0]: c for c in cons}
    words = [kinds["starts"][1] if "starts" in kinds else "the"]
    if "color" in kinds:
        words.append(color)
    words.append(animal if "animal" in kinds else "thing")
    words.append(verb)
    words.append(kinds["mentions"][1] if "mentions" in kinds else "it")
    if "ends_number" in kinds:
        words.append(str(number))
    return words


def _credits_constrained(args: Args, response: str) -> list[float]:
    """Constrained writing (2-4 required parts): one part per constraint, 1 when the reply satisfies it:
    "names a color" (a word of COLORS), "names an animal" (a word of ANIMALS), "ends with a number" (the last word
    is an integer), "starts with the word w", "uses the word w", "has 3 to n words". E.g. [color, animal,
    ends_number]: "the red fox sees it 7" 1.0; "the red thing sees it" 1/3."""
    cons, _ = args
    got = _words(response)
    out = []
    for c in cons:
        kind = c[0]
        if kind == "color":
            ok = any(w in COLORS for w in got)
        elif kind == "animal":
            ok = any(w in ANIMALS for w in got)
        elif kind == "ends_number":
            ok = bool(got) and _is_int(got[-1])
        elif kind == "starts":
            ok = bool(got) and got[0] == c[1]
        elif kind == "mentions":
            ok = c[1] in got
        else:  # words
            ok = 3 <= len(got) <= c[1]
        out.append(float(ok))
    return out


def _prompt_constrained(args: Args) -> str:
    texts = [_constraint_text(c) for c in args[0]]
    return "Write one line that " + ", ".join(texts[:-1]) + " and " + texts[-1] + "."


# ---------------------------------------------------------------------------------------------------------------

FAMILIES: dict[str, _Family] = {
    "sort": _Family(
        _gen_sort, lambda a: _SORT_PROMPTS[a[0]].format(" ".join(a[1])), _sorted_items, _space_join,
        lambda a: _positional_parts(_sorted_items(a)), _credits_sort,
    ),
    "filter": _Family(
        lambda rng: _gen_rule_list(rng, need_both=True),
        lambda a: f"Keep only the {_rule_text(a[0])}, separated by spaces: {' '.join(a[1])}",
        _filtered, _space_join, _parts_filter, _credits_filter,
    ),
    "count": _Family(
        lambda rng: _gen_rule_list(rng, need_both=False),
        lambda a: f"Count the {_rule_text(a[0])} in this list, answer with one number: {' '.join(a[1])}",
        lambda a: [_count_value(a)], _space_join,
        lambda a: ["one number", f"the count is {_count_value(a)}"], _credits_count,
    ),
    "transform": _Family(
        _gen_transform, lambda a: _TRANSFORM_PROMPTS[a[0]].format(" ".join(a[1])), _transformed, _space_join,
        lambda a: _positional_parts(_transformed(a)), _credits_transform,
    ),
    "arithmetic": _Family(
        _gen_arithmetic, lambda a: f"Compute {a[0]} {a[1]} {a[2]} , answer with one number.",
        lambda a: [_arith_value(a)], _space_join,
        lambda a: ["one number", f"the value is {_arith_value(a)}"], _credits_arithmetic,
    ),
    "format": _Family(
        lambda rng: (str(rng.choice(list(_FORMAT_PROMPTS))), _draw_list(rng, "words", 2, 5)),
        lambda a: _FORMAT_PROMPTS[a[0]].format(" ".join(a[1])), lambda a: list(a[1]), _render_format,
        lambda a: [f"item {i + 1} is {x}" for i, x in enumerate(a[1])] + [f"laid out as {a[0]}"], _credits_format,
    ),
    "constrained": _Family(
        _gen_constrained, _prompt_constrained, _constrained_items, _space_join,
        lambda a: [_constraint_text(c) for c in a[0]], _credits_constrained,
    ),
}
"""Instruction families: name -> generator, prompt, reference answer, parts and per-part credit."""

HELDOUT_MODULUS = 5
"""A key (family, prompt) is held out when crc32 of its UTF-8 repr % HELDOUT_MODULUS == 0."""


def split_of(family: str, prompt: str) -> str:
    """"heldout" or "train" for a task key (``ChatTask.key``); a pure function of the key (stable across processes
    and seeds)."""
    return "heldout" if zlib.crc32(repr((family, prompt)).encode()) % HELDOUT_MODULUS == 0 else "train"


def _family(name: str) -> _Family:
    if name not in FAMILIES:
        raise PbrlError(f"family: expected one of {sorted(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


def make_task(seed: int, family: str | None = None) -> ChatTask:
    """The task of ``seed`` (its family drawn uniformly unless given); deterministic."""
    rng = np.random.default_rng(seed)
    name = str(rng.choice(list(FAMILIES))) if family is None else family
    return build_task(name, _family(name).generate(rng), seed)


def build_task(family: str, args: Args, seed: int = -1) -> ChatTask:
    """The task of a family and its arguments (as ``ChatTask.args``; e.g. ("asc", ("7", "3", "5")) for sort)."""
    fam = _family(family)
    prompt = fam.prompt(args)
    return ChatTask(
        family=family, prompt=prompt, messages=[{"role": "user", "content": prompt}],
        answer=fam.render(args, fam.answer_items(args)), parts=tuple(fam.parts(args)), seed=seed, args=args,
    )


def make_tasks(
    n: int, seed: int = 0, split: str = "train", families: Sequence[str] | None = None, unique: bool = True
) -> list[ChatTask]:
    """``n`` tasks of ``split`` ("train" | "heldout"), families in turn (round robin over ``families``, default all).

    Task seeds are drawn from ``seed``; tasks whose key (family, prompt) falls in the other split are skipped, so
    the splits never share a prompt. ``unique`` also skips keys already drawn (no repeated prompt).
    """
    if split not in ("train", "heldout"):
        raise PbrlError(f"split: expected 'train' or 'heldout', got {split!r}")
    if n < 0:
        raise PbrlError(f"n: expected >= 0, got {n}")
    names = list(FAMILIES) if families is None else [_family(f) and f for f in families]
    if not names:
        raise PbrlError("families: expected at least one family")
    rng = np.random.default_rng(seed)
    out: list[ChatTask] = []
    seen: set[tuple[str, str]] = set()
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise PbrlError(f"make_tasks: only {len(out)} distinct {split} tasks of {names} found for n={n}")
        name = names[len(out) % len(names)]
        task = make_task(int(rng.integers(0, 2**31 - 1)), name)
        key = task.key
        if split_of(*key) != split or (unique and key in seen):
            continue
        seen.add(key)
        out.append(task)
    return out


def part_credits(task: ChatTask, response: str) -> list[float]:
    """The credit in [0, 1] of each of ``task.parts`` for ``response`` (rules in the family's docstring)."""
    credits = _family(task.family).credits(task.args, response)
    assert len(credits) == len(task.parts), (task.family, task.parts, credits)
    return credits


def score(task: ChatTask, response: str) -> float:
    """Mean part credit in [0, 1]; the reference answer scores 1. Deterministic."""
    c = part_credits(task, response)
    return float(sum(c) / len(c))


# ---------------------------------------------------------------------------------------------------------------
# responses of graded quality

_GARBLE_POOL = LIST_WORDS + tuple(str(i) for i in range(20)) + ("it", "and", "is")


def _corrupt_once(task: ChatTask, rng: np.random.Generator, level: float) -> str:
    fam = _family(task.family)
    items = list(fam.answer_items(task.args))
    n_ops = max(1, int(round(level * len(items))))
    for _ in range(n_ops):
        op = str(rng.choice(["drop", "swap", "garble"] if len(items) >= 2 else ["drop", "garble"]))
        if not items:
            break
        i = int(rng.integers(0, len(items)))
        if op == "drop":
            items.pop(i)
        elif op == "swap":
            j = int(rng.integers(0, len(items) - 1))
            j += j >= i
            items[i], items[j] = items[j], items[i]
        else:
            old = items[i]
            if _is_int(old):  # a near miss: the number off by 1..3 (never negative)
                items[i] = str(abs(int(old) + int(rng.choice([-3, -2, -1, 1, 2, 3]))))
            else:
                items[i] = str(rng.choice(_GARBLE_POOL))
    text = fam.render(task.args, items)
    if rng.random() < level:  # break the layout too: chatter around the answer or the wrong separator
        text = str(rng.choice(["the answer is " + text, text + " ok", text.replace(" ", ", ", 1), text.replace("\n", " ")]))
    return text


def corrupt(task: ChatTask, rng: np.random.Generator, level: float) -> str:
    """A response of graded quality: the reference with about ``level * (number of answer items)`` random edits
    (drop an item, swap two, garble one: another word, or a number off by 1-3) and, with probability ``level``, a
    broken layout (chatter before/after, a wrong separator). ``level`` 0 returns the reference; ``level`` > 0 always
    returns a response that scores below 1 (edits that happen to cancel out are redrawn). Higher levels score lower
    on average, not in every draw."""
    if not 0.0 <= level <= 1.0:
        raise PbrlError(f"level: expected a number in [0, 1], got {level}")
    if level == 0.0:
        return task.answer
    for _ in range(20):
        text = _corrupt_once(task, rng, level)
        if score(task, text) < 1.0:
            return text
    return "it"  # reachable only by an adversarial rng: one filler word satisfies no family's parts fully


# ---------------------------------------------------------------------------------------------------------------
# pre-training corpus

def _running_text(rng: np.random.Generator) -> str:
    """A few sentences over the families' vocabulary (colors, animals, objects, verbs, numbers, and the chatter and
    comma-separated numbers that ``corrupt`` writes, so a word-level vocabulary built on the corpus covers them)."""
    sents = []
    for _ in range(int(rng.integers(2, 5))):
        kind = int(rng.integers(0, 4))
        if kind == 0:
            sents.append(f"{rng.choice(STARTERS)} {rng.choice(COLORS)} {rng.choice(ANIMALS)} {rng.choice(VERBS)} "
                         f"the {rng.choice(OBJECTS)} {int(rng.integers(0, 20))}")
        elif kind == 1:
            a = int(rng.integers(0, 90))
            sents.append(" ".join(str(a + i) for i in range(int(rng.integers(3, 8)))))
        elif kind == 2:
            ws = list(rng.choice(LIST_WORDS, int(rng.integers(3, 6)), replace=False))
            sents.append(f"the {rng.choice(ANIMALS)} {rng.choice(VERBS)} " + " and ".join(str(w) for w in ws))
        else:
            ns = [str(int(x)) for x in rng.choice(MAX_LIST_NUMBER + 2, int(rng.integers(2, 5)), replace=False)]
            sents.append(f"the answer is {', '.join(ns)} ok")
    return " .\n".join(sents) + " ."


def corpus(n_docs: int, seed: int = 0, task_fraction: float = 0.7) -> list[str]:
    """Pre-training documents: train-split tasks as plain text (prompt, newline, reference answer) with probability
    ``task_fraction``, otherwise running text over the vocabulary. Held-out tasks never appear."""
    if n_docs < 0:
        raise PbrlError(f"n_docs: expected >= 0, got {n_docs}")
    if not 0.0 <= task_fraction <= 1.0:
        raise PbrlError(f"task_fraction: expected a number in [0, 1], got {task_fraction}")
    rng = np.random.default_rng(seed)
    is_task = rng.random(n_docs) < task_fraction  # [n_docs]
    tasks = iter(make_tasks(int(is_task.sum()), seed=seed + 1, unique=False))
    docs = []
    for flag in is_task:
        if flag:
            t = next(tasks)
            docs.append(f"{t.prompt}\n{t.answer}")
        else:
            docs.append(_running_text(rng))
    return docs


# ---------------------------------------------------------------------------------------------------------------
# preference pairs

LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Corruption levels the two responses of a pair are drawn from (two different ones per prompt)."""


def preference_pairs(
    tasks: Sequence[ChatTask],
    seed: int = 0,
    teacher: TeacherConfig = TeacherConfig(),  # noqa: B008  frozen dataclass: a safe default
    *,
    levels: Sequence[float] = LEVELS,
    conversational: bool = True,
    return_counts: bool = False,
) -> list[dict[str, Any]] | tuple[list[dict[str, Any]], dict[str, int]]:
    """One labelled pair per task: two responses at two different levels of ``levels`` (``corrupt``), scored, and
    labelled by the scripted teacher with the scores as returns (label P(b) from ``label_pairs``). Ties (label 0.5)
    and skipped queries are dropped and counted.

    Rows: {"prompt": task.messages (or task.prompt if not ``conversational``), "chosen", "rejected",
    "score_chosen", "score_rejected"}. With ``return_counts``: (rows, {"pairs", "ties", "skipped"}).
    """
    if len(levels) < 2 or len(set(levels)) < 2:
        raise PbrlError(f"levels: expected at least two different corruption levels, got {list(levels)}")
    t = get_teacher(teacher)
    rng = np.random.default_rng(seed)
    resp_a, resp_b = [], []
    for task in tasks:
        la, lb = rng.choice(np.asarray(levels, dtype=np.float64), 2, replace=False)
        resp_a.append(corrupt(task, rng, float(la)))
        resp_b.append(corrupt(task, rng, float(lb)))
    sa = np.array([score(task, r) for task, r in zip(tasks, resp_a)], dtype=np.float64)
    sb = np.array([score(task, r) for task, r in zip(tasks, resp_b)], dtype=np.float64)
    label, keep = label_pairs(sa, sb, t, rng)
    rows: list[dict[str, Any]] = []
    ties = 0
    for i, task in enumerate(tasks):
        if not keep[i]:
            continue
        if label[i] == 0.5:
            ties += 1
            continue
        b_wins = label[i] == 1.0
        chosen, rejected = (resp_b[i], resp_a[i]) if b_wins else (resp_a[i], resp_b[i])
        sc, sr = (sb[i], sa[i]) if b_wins else (sa[i], sb[i])
        rows.append({
            "prompt": [dict(m) for m in task.messages] if conversational else task.prompt,
            "chosen": chosen, "rejected": rejected, "score_chosen": float(sc), "score_rejected": float(sr),
        })
    counts = {"pairs": len(rows), "ties": ties, "skipped": int((~keep).sum())}
    return (rows, counts) if return_counts else rows


def write_pairs_jsonl(
    path: str | Path,
    tasks: Sequence[ChatTask],
    seed: int = 0,
    teacher: TeacherConfig = TeacherConfig(),  # noqa: B008  frozen dataclass: a safe default
    *,
    overwrite: bool = False,
    **kwargs: Any,
) -> dict[str, int]:
    """Write ``preference_pairs`` as JSONL (one row a line, strict JSON, atomically); returns the counts.
    An existing file is refused unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PbrlError(f"{path}: exists; pass overwrite=True to replace it")
    rows, counts = preference_pairs(tasks, seed, teacher, return_counts=True, **kwargs)
    if not rows:
        raise PbrlError(f"{path}: no pairs to write ({counts['ties']} ties, {counts['skipped']} skipped)")
    atomic_write_text(str(path), "".join(dumps_json(r) + "\n" for r in rows))
    return counts


def judge(row: dict[str, Any], response: str) -> float:
    """The task's scorer as an online-DPO judge (`pbrl llm odpo PROMPTS --judge pbrl_envs.chat:judge`): `row` is a
    prompt row written by `pbrl llm chat-data` (it carries the task's `family` and `seed`)."""
    try:
        task = make_task(int(row["seed"]), str(row["family"]))
    except (KeyError, TypeError, ValueError):
        raise PbrlError("chat judge: a prompt row needs the task's 'family' and 'seed' (from pbrl llm chat-data)") from None
    return score(task, response)


__all__ = [
    "FAMILIES", "LEVELS", "ChatTask", "build_task", "corpus", "corrupt", "judge", "make_task", "make_tasks", "part_credits",
    "preference_pairs", "score", "split_of", "write_pairs_jsonl",
]
