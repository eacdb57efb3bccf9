"""pbrl_envs: tasks (gymnasium environments) and benchmark-suite recipes for pbrl.

Importing this package registers its gymnasium environments and its dataset recipes.
"""

from pbrl_envs import recsim, recsim_data  # noqa: F401  registers pbrl/RecSim-v0 and the recsim-* recipes
from pbrl_envs.recipes import RECIPES, Recipe, register_recipe

__all__ = ["RECIPES", "Recipe", "register_recipe"]
