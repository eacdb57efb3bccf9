"""The registry of dataset recipes, their builds, and dataset cards.

A recipe builds one named dataset (e.g. `hopper-medium-replay`) of a given size from a seed, without the network.
Tasks packages fill the registry through their `pbrl.tasks` entry point (see `pbrl.plugins`); `pbrl data build NAME`,
`pbrl data list` and `pbrl quickstart` read it through `recipes()` / `get_recipe(name)`, which load the tasks first.
A build writes the dataset as a local Minari dataset plus its card (`card.json`, `card.md`) in the same folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pbrl.errors import PbrlError

if TYPE_CHECKING:
    from pbrl.data.dataset import EpisodeDataset


@dataclass(frozen=True)
class Recipe:
    """How to build one suite dataset."""

    name: str
    """Suite name, e.g. `hopper-medium-replay`."""
    dataset_id: str
    """Minari id it is written to, e.g. `pbrl/hopper/medium-replay-v0`."""
    build: Callable[[int, int], EpisodeDataset]
    """(size in transitions, seed) -> dataset, deterministic given both."""
    default_size: int
    """Transitions built when no size is asked for."""
    description: str
    """One line for `pbrl data list` and the dataset card."""


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> None:
    """Add a recipe; a second recipe of the same name is an error (two tasks claim one dataset)."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    RECIPES[recipe.name] = recipe


def recipes() -> dict[str, Recipe]:
    """Every registered recipe, after the installed tasks packages have registered theirs."""
    from pbrl.plugins import load_tasks

    load_tasks()
    return RECIPES


def get_recipe(name: str) -> Recipe:
    """The recipe `name`; an unknown name is a PbrlError listing how to see the known ones."""
    known = recipes()
    if name not in known:
        raise PbrlError(f"unknown suite dataset {name!r}; `pbrl data list` shows the suite ({len(known)} recipes)")
    return known[name]


def build_recipe(name: str, size: int | None = None, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Build recipe `name` into the Minari datasets folder; returns its card (also card.json/card.md there).

    Re-running a build is safe: when the dataset exists and its card records the same recipe, size and seed (a
    build is deterministic given them), nothing is rewritten and the existing card is returned with
    `already_built: True`. A dataset built otherwise (another size or seed, or no card) is an error naming what
    differs, unless `overwrite`. Collected transitions show a progress bar (on a terminal).
    """
    from pbrl.data.collect import step_progress
    from pbrl.utils import dumps_json

    recipe = get_recipe(name)
    n = recipe.default_size if size is None else size
    if n < 1:
        raise PbrlError(f"--size must be a positive number of transitions, got {n}")
    if not overwrite and (card := existing_build(name, n, seed)) is not None:
        return card
    t0 = time.perf_counter()
    with step_progress(n, desc=f"building {name}"):
        ds = recipe.build(n, seed)
    card = dataset_card(ds, name)
    card.update(dataset_id=recipe.dataset_id, seed=seed, size=n, build_s=round(time.perf_counter() - t0, 1),
                description=recipe.description)
    # the card is published with the dataset in one rename: never an old card beside new data, or none
    files = {"card.json": dumps_json(card, indent=2) + "\n", "card.md": card_markdown(card)}
    ds.to_minari(recipe.dataset_id, overwrite=overwrite, description=recipe.description, extra_files=files)
    return card


def existing_build(name: str, size: int | None = None, seed: int = 0) -> dict[str, Any] | None:
    """The card of recipe `name`'s dataset built at (`size`, `seed`) with `already_built: True`; None when the
    dataset is not built. A dataset built at another size or seed, or without a card, is a PbrlError naming what
    differs (the same rebuild would replace it)."""
    from pbrl.data.minari_io import dataset_exists

    recipe = get_recipe(name)
    if not dataset_exists(recipe.dataset_id):
        return None
    card = read_card(recipe.dataset_id)
    _check_same_build(recipe, card, recipe.default_size if size is None else size, seed)
    return {**card, "already_built": True}


def _check_same_build(recipe: Recipe, card: dict[str, Any] | None, size: int, seed: int) -> None:
    """PbrlError unless `card` records a build of `recipe` at (`size`, `seed`)."""
    where = f"Minari dataset {recipe.dataset_id!r} already exists"
    if card is None:
        raise PbrlError(f"{where} without a dataset card (not built by this recipe); "
                        "pass --overwrite to rebuild it")
    asked = {"recipe": recipe.name, "size": size, "seed": seed}
    have = {"recipe": card.get("name"), "size": card.get("size"), "seed": card.get("seed")}
    diff = [f"{k} {have[k]} (asked {v})" for k, v in asked.items() if have[k] != v]
    if diff:
        raise PbrlError(f"{where} with another {', '.join(diff)}; pass --overwrite to rebuild it")


def read_card(dataset_id: str) -> dict[str, Any] | None:
    """The card a recipe build left in the dataset's folder, or None."""
    from pbrl.data.minari_io import datasets_root

    path = os.path.join(datasets_root(), dataset_id, "card.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def dataset_card(ds: EpisodeDataset, name: str | None = None) -> dict[str, Any]:
    """Size, return distribution (raw and normalized, whole episodes only) and behaviour-policy scores.

    Works for any recipe's dataset: reference scores come from the metadata (or pbrl's table), when known.
    """
    from pbrl.data.scores import reference_scores

    meta = ds.metadata
    returns = ds.episode_returns()  # [E]
    # episodes cut because the size budget ran out would drag the statistics down: report completed ones
    ends = ds.episode_starts[1:] - 1
    complete = ds.terminals[ends].astype(bool)
    limit = _max_episode_steps(ds.env_id)
    if limit is not None:
        complete |= ds.timeouts[ends].astype(bool) & (ds.episode_lengths == limit)
    else:
        complete |= ds.timeouts[ends].astype(bool)
    ret = returns[complete] if complete.any() else returns
    try:
        lo, hi = reference_scores(ds)
    except PbrlError:
        lo = hi = None
    return {
        "name": name or meta.get("name"), "env_id": ds.env_id, "transitions": int(ds.num_transitions),
        "episodes": int(ds.num_episodes), "complete_episodes": int(complete.sum()),
        "return": _stats(ret),
        "normalized_return": _stats(100.0 * (ret - lo) / (hi - lo)) if lo is not None else None,
        "ref_min_score": lo, "ref_max_score": hi, "ref_source": meta.get("ref_source"),
        "behavior_policies": meta.get("behavior_policies", []),
        "notes": meta.get("notes"),
        "provenance": meta.get("provenance", []),
    }


def _max_episode_steps(env_id: str | None) -> int | None:
    import gymnasium as gym

    from pbrl.plugins import load_tasks

    load_tasks()  # a task's environment ids are known to gymnasium once its package registered them
    try:
        return gym.spec(env_id).max_episode_steps if env_id else None
    except gym.error.Error:
        return None


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": round(float(x.mean()), 2), "std": round(float(x.std()), 2),
            "min": round(float(x.min()), 2), "max": round(float(x.max()), 2)}


def card_markdown(card: dict[str, Any]) -> str:
    """The card as a short markdown page (card.md)."""
    r, n = card["return"], card["normalized_return"]
    lines = [
        f"# {card['name']}" + (f" ({card['dataset_id']})" if card.get("dataset_id") else ""),
        "",
        f"- environment: {card['env_id']}",
        f"- transitions: {card['transitions']}, episodes: {card['episodes']} "
        f"({card['complete_episodes']} complete; the statistics use complete episodes)",
        f"- return: mean {r['mean']}, std {r['std']}, min {r['min']}, max {r['max']}",
    ]
    if n is not None:
        lines += [
            f"- normalized return: mean {n['mean']}, std {n['std']}, min {n['min']}, max {n['max']}",
            f"- reference scores: random {card['ref_min_score']}, expert {card['ref_max_score']}"
            + (f" ({card['ref_source']})" if card.get("ref_source") else ""),
        ]
    if "seed" in card:
        lines.append(f"- seed: {card['seed']}, build time: {card.get('build_s')} s")
    if card.get("notes"):
        lines += ["", card["notes"]]
    if card["behavior_policies"]:
        lines += ["", "Behaviour policies:", ""]
        for p in card["behavior_policies"]:
            extra = "".join(f", {k} {p[k]}" for k in ("return_stoch_mean", "normalized_stoch") if k in p)
            lines.append(f"- {p['policy']}{extra}")
    return "\n".join(lines) + "\n"
