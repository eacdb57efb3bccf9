"""pbrl_envs: tasks (gymnasium environments) and benchmark-suite recipes for pbrl.

Importing this package registers its gymnasium environments and its dataset recipes.
"""

from pbrl_envs import (  # noqa: F401  registers pbrl/RecSim-v0 and the recsim-* recipes
    recsim,
    recsim_data,
    suite,  # noqa: F401  registers the control suite (pendulum and D4RL-style locomotion)
)
from pbrl_envs.recipes import RECIPES, Recipe, register_recipe

__all__ = ["RECIPES", "Recipe", "register_recipe"]
