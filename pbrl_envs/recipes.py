"""The registry of benchmark-suite dataset recipes.

A recipe builds one named dataset (e.g. `hopper-medium-replay`) of a given size from a seed, without the network.
Task modules register their recipes on import; `pbrl data build NAME` and `pbrl data list` read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pbrl.data import EpisodeDataset


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
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    RECIPES[recipe.name] = recipe
