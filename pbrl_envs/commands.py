"""CLI commands of the benchmark suite: `pbrl data build NAME` and `pbrl data list`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import tyro

from pbrl.errors import PbrlError


def _recipes():
    import pbrl_envs  # noqa: F401  (registers every task's recipes)
    from pbrl_envs.recipes import RECIPES

    return RECIPES


def build(name: str, size: int | None = None, seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Build recipe `name` into the Minari datasets folder; returns its card (also card.json/card.md there)."""
    from pbrl.data.minari_io import dataset_exists
    from pbrl.utils import atomic_write_json, atomic_write_text
    from pbrl_envs.suite import card_markdown, dataset_card

    recipes = _recipes()
    if name not in recipes:
        raise PbrlError(f"unknown suite dataset {name!r}; `pbrl data list` shows the suite ({len(recipes)} recipes)")
    recipe = recipes[name]
    if dataset_exists(recipe.dataset_id) and not overwrite:
        raise PbrlError(f"Minari dataset {recipe.dataset_id!r} already exists (pass --overwrite to rebuild it)")
    n = recipe.default_size if size is None else size
    if n < 1:
        raise PbrlError(f"--size must be a positive number of transitions, got {n}")
    t0 = time.perf_counter()
    ds = recipe.build(n, seed)
    folder = ds.to_minari(recipe.dataset_id, overwrite=overwrite, description=recipe.description)
    card = dataset_card(ds, name)
    card.update(dataset_id=recipe.dataset_id, seed=seed, size=n, build_s=round(time.perf_counter() - t0, 1),
                description=recipe.description)
    atomic_write_json(os.path.join(folder, "card.json"), card)
    atomic_write_text(os.path.join(folder, "card.md"), card_markdown(card))
    return card


def read_card(dataset_id: str) -> dict[str, Any] | None:
    """The card a suite build left in the dataset's folder, or None."""
    from pbrl.data.minari_io import datasets_root

    path = os.path.join(datasets_root(), dataset_id, "card.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


@dataclass
class DataBuild:
    """Build a benchmark-suite dataset (e.g. hopper-medium-replay) as a local Minari dataset, without the network."""

    name: tyro.conf.Positional[str]
    """Suite dataset name; `pbrl data list` shows them all."""
    size: int | None = None
    """Transitions to build (default: the recipe's size)."""
    seed: int = 0
    """Seed of the environments and of the policies' sampling noise; builds are deterministic given it."""
    overwrite: bool = False
    """Replace the dataset if it is already built."""

    def run(self) -> None:
        card = build(self.name, self.size, self.seed, self.overwrite)
        n = card["normalized_return"]
        score = f", normalized return {n['mean']:.1f} +- {n['std']:.1f}" if n else ""
        print(f"built {card['dataset_id']}: {card['transitions']} transitions, {card['episodes']} episodes"
              f"{score} ({card['build_s']} s)")


@dataclass
class DataList:
    """List the benchmark suite (which datasets are built) and the other local Minari datasets."""

    json_output: bool = False
    """Print JSON instead of a table."""

    def run(self) -> None:
        from pbrl.data.minari_io import datasets_root, local_dataset_ids

        recipes = _recipes()
        local = set(local_dataset_ids())
        rows = []
        for name, r in sorted(recipes.items()):
            card = read_card(r.dataset_id) if r.dataset_id in local else None
            rows.append({"name": name, "dataset_id": r.dataset_id, "built": r.dataset_id in local,
                         "default_size": r.default_size, "description": r.description,
                         "transitions": card["transitions"] if card else None})
        others = sorted(local - {r.dataset_id for r in recipes.values()})
        if self.json_output:
            print(json.dumps({"root": datasets_root(), "suite": rows, "other_local": others}, indent=1))
            return
        width = max(len(r["name"]) for r in rows)
        print(f"Minari datasets folder: {datasets_root()}\n\nsuite ({len(rows)} recipes):")
        for r in rows:
            state = f"built ({r['transitions']} transitions)" if r["built"] and r["transitions"] else (
                "built" if r["built"] else "-")
            print(f"  {r['name']:<{width}}  {r['dataset_id']:<36} {state:<28} {r['description']}")
        print(f"\nother local Minari datasets ({len(others)}):")
        for i in others:
            print(f"  {i}")
