"""pbrl_envs: tasks (gymnasium environments), their dataset recipes and task commands for pbrl.

The library finds this package through its entry points (declared in pyproject.toml) and never imports it by name:
`pbrl.commands` -> `register_commands()` adds the task commands (`pbrl rec catalog`, `pbrl rec reason-data`,
`pbrl llm chat-data`); `pbrl.tasks` -> `register()`
imports the task modules, which register on import:
- `recsim`: the `pbrl/RecSim-v0` gymnasium environment;
- `recsim_data`: the recsim-random|popular|mixed recipes;
- `suite`: the control suite (pendulum and D4RL-style locomotion): recipes and reference scores;
Importing the package itself is cheap (no torch), so `pbrl --help` lists the task commands quickly;
`pbrl_envs.RECIPES` registers the tasks first.
"""

from __future__ import annotations

from typing import Any

_COMMANDS = (
    (("rec", "catalog"), "pbrl_envs.commands:RecCatalog", "write the RecSim-v0 item catalog as JSON lines"),
    (("rec", "reason-data"), "pbrl_envs.commands:RecReasonData",
     "GREAM reasoning-curriculum SFT records from a RecSim log (five stages from the simulator's latent state)"),
    (("llm", "chat-data"), "pbrl_envs.commands:ChatData",
     "the verifiable chat task's corpus, SFT conversations, held-out prompts and preference pairs"),
)


def register_commands() -> None:
    """Add the task commands to the `pbrl` command (cheap: the targets are imported when a command runs)."""
    from pbrl.plugins import register_command

    for words, target, help_ in _COMMANDS:
        register_command(words, target, help_)


def register() -> None:
    """The `pbrl.tasks` entry point: environments, recipes, reference scores (and the commands). Idempotent."""
    register_commands()
    from pbrl_envs import (  # noqa: F401  importing a module registers what it defines (once per process)
        recsim,
        recsim_data,
        suite,
    )


def __getattr__(name: str) -> Any:
    # the recipe registry belongs to the library (pbrl.data.recipes); these names are kept for scripts that read it
    # from here, with this package's recipes registered first
    if name in ("RECIPES", "Recipe", "register_recipe"):
        import pbrl.data.recipes as recipes

        register()
        return getattr(recipes, name)
    raise AttributeError(f"module 'pbrl_envs' has no attribute {name!r}")


__all__ = ["register", "register_commands"]
