"""The recipe registry lives in the library (`pbrl.data.recipes`); this module names it, with this package's
recipes registered, for scripts that read it from here."""

from pbrl.data.recipes import RECIPES, Recipe, register_recipe
from pbrl_envs import register

register()

__all__ = ["RECIPES", "Recipe", "register_recipe"]
