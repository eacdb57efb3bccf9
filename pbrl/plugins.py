"""Tasks register themselves with the library; the library never imports them by name.

A tasks package (environments, dataset recipes, task-specific commands) declares entry points in its distribution's
metadata, functions called with no arguments:

    [project.entry-points."pbrl.tasks"]       # environments, recipes, reference scores (may import torch)
    pbrl_envs = "pbrl_envs:register"
    [project.entry-points."pbrl.commands"]    # `pbrl` subcommands only: cheap, so `pbrl --help` stays fast
    pbrl_envs = "pbrl_envs:register_commands"

`load_tasks()` calls every `pbrl.tasks` function once per process, lazily, wherever a task may be named:
`pbrl.data.make_env` and the recipe lookups of `pbrl.data.recipes` (`pbrl data build|list`, `pbrl quickstart`).
Inside it a package registers gymnasium ids (`gymnasium.register`), dataset recipes
(`pbrl.data.recipes.register_recipe`) and reference scores (`pbrl.data.register_reference_scores`).
`load_commands()` calls every `pbrl.commands` function once; they call `register_command`.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass

from pbrl.errors import PbrlError

TASKS_GROUP = "pbrl.tasks"
COMMANDS_GROUP = "pbrl.commands"


@dataclass(frozen=True)
class Command:
    """A `pbrl` subcommand: its words, a "module:Class" target (a tyro dataclass with `run()`), one line of help."""

    words: tuple[str, ...]
    target: str
    help: str


# words -> command contributed by a tasks package (the library's own commands are listed in pbrl.cli)
TASK_COMMANDS: dict[tuple[str, ...], Command] = {}

_loaded: dict[str, list[str]] = {}  # group -> entry points called


def register_command(words: tuple[str, ...] | str, target: str, help: str) -> None:
    """Add a `pbrl` subcommand, e.g. `register_command(("rec", "catalog"), "pkg.commands:RecCatalog", "...")`.

    The target is imported only when the command runs, so `pbrl --help` stays cheap. Registering the same words
    again with the same target is a no-op; with another target it is an error (two packages claim one command).
    """
    key = tuple(words.split()) if isinstance(words, str) else tuple(words)
    if not key or ":" not in target:
        raise ValueError(f"register_command needs words and a 'module:Class' target, got {words!r}, {target!r}")
    old = TASK_COMMANDS.get(key)
    if old is not None and old.target != target:
        raise ValueError(f"command {' '.join(key)!r} registered twice ({old.target} and {target})")
    TASK_COMMANDS[key] = Command(key, target, help)


def _call_entry_points(group: str) -> list[str]:
    names: list[str] = []
    for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            ep.load()()
        except ImportError as e:  # an optional dependency of the task package is missing
            raise PbrlError(f"task package {ep.name!r} ({ep.value}) cannot be loaded: {e}") from None
        names.append(ep.name)
    return names


def load_tasks() -> list[str]:
    """Call every `pbrl.tasks` entry point once per process; returns their names."""
    if TASKS_GROUP not in _loaded:
        _loaded[TASKS_GROUP] = _call_entry_points(TASKS_GROUP)
    return _loaded[TASKS_GROUP]


def load_commands() -> dict[tuple[str, ...], Command]:
    """Call every `pbrl.commands` entry point once per process; returns the task commands."""
    if COMMANDS_GROUP not in _loaded:
        _loaded[COMMANDS_GROUP] = _call_entry_points(COMMANDS_GROUP)
    return TASK_COMMANDS
