"""GREAM's reasoning curriculum written from a simulator's ground truth: chains of thought for reasoning-mode SFT.

GREAM (Hong et al., "Generative Reasoning Recommendation via LLMs", arXiv 2510.20815, section "reasoning
curriculum") fine-tunes the recommender on responses that reason in five stages before they answer:

    behavioural evidence -> latent preference -> intent -> recommendation -> denoised (rewritten) history,
    then the answer as ``<answer>ID</answer>``

Here each stage states facts a simulator knows and a log does not, at a logged step whose recommendation the user
clicked (the record's answer is that clicked item, so the answer is the logged next item):

    <think>Evidence: clicked <ID> music, <ID> film; skipped <ID> finance.
    Preference: likes music (0.6) and film (0.3); dislikes politics (-0.5).
    Intent: wants film now (interest 0.3, boredom 0.1); satisfaction 0.7.
    Recommendation: <ID>, a film item of quality 0.5 and appeal 0.4.
    Denoised history: <ID>.</think><answer><ID></answer>

- Evidence: the observed history (oldest first), each item's topic and whether it was clicked.
- Preference: the user's latent topic interests u: the (at most two) highest positive ones, the lowest if negative.
- Intent: the topic the user wants at this step, argmax_k u_k - boredom_weight * b_k (boredom b lowers a topic's
  utility: RecSim-v0 uses w_boredom / w_interest = 0.4), and the user's latent satisfaction.
- Recommendation: the clicked item, its topic, quality and appeal.
- Denoised history: the history with the noise removed: skipped items and clicks on topics the user does not like
  (u <= 0, clicks won by appeal), i.e. the clicks that reflect the latent preference.

What differs from the paper: its chains are written by a large LLM from review text and rationalise the true next
item; these are templates filled from the simulator's hidden state (exact, short, and the same wording each time),
over a history of at most the simulator's 5 observed items instead of 20, and the paper's "history >= 4 items" rule is
a parameter (``min_history``, default 0: a simulated session starts from an empty history and the policy must answer
from its first step). Numbers are rounded to one decimal to keep chains short for a tiny model.

Pure functions over plain arrays (no simulator import: `pbrl_envs.recsim_data.logged_user_states` regenerates the
states of a RecSim log and `catalog_facts` gives the items' truth); `pbrl rec reason-data` writes the records.
Records are chat records in the alignment layout (`pbrl.rec.align_data`): ``{"messages": [user, assistant],
"task": "reasoning", "item": answer item}``, which `pbrl llm sft` reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.errors import PbrlError

STAGES = ("Evidence", "Preference", "Intent", "Recommendation", "Denoised history")
REASON_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
NO_HISTORY = "(none yet)"
REASON_PROMPT = ("The user has interacted with items {inters} in chronological order. Reason about the user's "
                 "preferences step by step, then recommend the next item as <answer>ID</answer>.")


@dataclass(frozen=True)
class ItemFacts:
    """The ground truth of a catalog, indexed by item id."""

    topics: np.ndarray  # [I] int, index into topic_names
    topic_names: tuple[str, ...]
    appeal: np.ndarray  # [I] float in [0, 1]: how clickable the item looks
    quality: np.ndarray  # [I] float in [-1, 1]: how good it is once consumed

    @property
    def num_items(self) -> int:
        return len(self.topics)


@dataclass(frozen=True)
class UserStates:
    """The latent user state at N logged steps, before each step's recommendation."""

    interest: np.ndarray  # [N, K] topic interests u
    boredom: np.ndarray  # [N, K] per-topic boredom b >= 0
    satisfaction: np.ndarray  # [N] in [0, 1]

    def __len__(self) -> int:
        return len(self.satisfaction)


def reasoning_prompt(history: Sequence[int], id_text: Sequence[str]) -> str:
    """The reasoning-mode prompt of a history (item ids, oldest first)."""
    inters = ", ".join(id_text[int(i)] for i in history) if len(history) else NO_HISTORY
    return REASON_PROMPT.format(inters=inters)


def _join(parts: list[str]) -> str:
    return ", ".join(parts) if parts else "none"


def reasoning_chain(history: Sequence[int], clicked: Sequence[bool], target: int, interest: np.ndarray,
                    boredom: np.ndarray, satisfaction: float, items: ItemFacts, id_text: Sequence[str],
                    boredom_weight: float = 0.4) -> str:
    """The response ``<think>five stages</think><answer>ID</answer>`` (module docstring) for one step: `history`
    the observed items oldest first, `clicked` whether each was clicked, `target` the item clicked at this step,
    `interest` / `boredom` [K] and `satisfaction` the user's latent state before it."""
    names = items.topic_names
    u, b = np.asarray(interest, dtype=np.float64), np.asarray(boredom, dtype=np.float64)  # [K], [K]
    topic = [names[int(items.topics[int(i)])] for i in history]
    ev_click = [f"{id_text[int(i)]} {t}" for i, t, c in zip(history, topic, clicked) if c]
    ev_skip = [f"{id_text[int(i)]} {t}" for i, t, c in zip(history, topic, clicked) if not c]
    evidence = f"Evidence: clicked {_join(ev_click)}; skipped {_join(ev_skip)}."

    order = np.argsort(-u, kind="stable")  # topics by decreasing interest; ties: the lower topic index first
    likes = [f"{names[k]} ({u[k]:.1f})" for k in order[:2] if u[k] > 0]
    low = int(order[-1])
    preference = ("Preference: likes " + (" and ".join(likes) if likes else "no topic") +
                  (f"; dislikes {names[low]} ({u[low]:.1f})." if u[low] < 0 else "."))

    want = int(np.argmax(u - boredom_weight * b))  # the topic of the highest utility now (ties: lower index)
    intent = (f"Intent: wants {names[want]} now (interest {u[want]:.1f}, boredom {b[want]:.1f}); "
              f"satisfaction {float(satisfaction):.1f}.")

    t = int(target)
    recommendation = (f"Recommendation: {id_text[t]}, a {names[int(items.topics[t])]} item of quality "
                      f"{float(items.quality[t]):.1f} and appeal {float(items.appeal[t]):.1f}.")
    # the clicks that reflect the latent preference: skipped items and clicks on disliked topics are noise
    kept = [id_text[int(i)] for i, c in zip(history, clicked) if c and u[int(items.topics[int(i)])] > 0]
    denoised = f"Denoised history: {_join(kept)}."
    think = "\n".join([evidence, preference, intent, recommendation, denoised])
    return f"<think>{think}</think><answer>{id_text[t]}</answer>"


def reasoning_records(histories: Sequence[Sequence[int]], clicks: Sequence[Sequence[bool]], targets: Sequence[int],
                      states: UserStates, items: ItemFacts, id_text: Sequence[str], boredom_weight: float = 0.4,
                      min_history: int = 0) -> list[dict[str, Any]]:
    """One reasoning chat record per step i (``histories[i]`` oldest first, ``clicks[i]`` aligned with it,
    ``targets[i]`` the clicked item, the state ``states`` row i); steps with fewer than ``min_history`` history
    items are skipped (the paper keeps histories of >= 4). Unknown item ids and misaligned inputs are refused."""
    n = len(targets)
    if not (len(histories) == len(clicks) == len(states) == n):
        raise PbrlError(f"reasoning records: {len(histories)} histories, {len(clicks)} click lists, {len(states)} "
                        f"user states and {n} targets (expected one of each per step)")
    if len(id_text) != items.num_items:
        raise PbrlError(f"semantic IDs cover {len(id_text)} items but the catalog has {items.num_items}")
    K = len(items.topic_names)
    for name, arr in (("interest", states.interest), ("boredom", states.boredom)):
        if np.ndim(arr) != 2 or np.shape(arr) != (n, K):
            raise PbrlError(f"user states: {name} has shape {np.shape(arr)}, expected ({n}, {K}) (steps, topics)")
    out = []
    for s in range(n):
        hist, clk, t = list(histories[s]), list(clicks[s]), int(targets[s])
        if len(clk) != len(hist):
            raise PbrlError(f"step {s}: {len(hist)} history items but {len(clk)} click flags")
        bad = [i for i in hist + [t] if not 0 <= int(i) < items.num_items]
        if bad:
            raise PbrlError(f"step {s}: item id {bad[0]} is not in the catalog (0..{items.num_items - 1})")
        if len(hist) < min_history:
            continue
        chain = reasoning_chain(hist, clk, t, states.interest[s], states.boredom[s], float(states.satisfaction[s]),
                                items, id_text, boredom_weight)
        out.append({"messages": [{"role": "user", "content": reasoning_prompt(hist, id_text)},
                                 {"role": "assistant", "content": chain}], "task": "reasoning", "item": t})
    return out


def add_reasoning_tokens(tokenizer: Any) -> int:
    """Add the four tags as single special tokens (so the format costs 4 tokens and the think block is easy to
    find); returns how many were new."""
    return int(tokenizer.add_tokens(list(REASON_TAGS), special_tokens=True))


__all__ = ["ItemFacts", "NO_HISTORY", "REASON_PROMPT", "REASON_TAGS", "STAGES", "UserStates", "add_reasoning_tokens",
           "reasoning_chain", "reasoning_prompt", "reasoning_records"]
