"""The recipe registry lives in the library (`pbrl.data.recipes`); this module names it for the task modules."""

from pbrl.data.recipes import RECIPES, Recipe, register_recipe

__all__ = ["RECIPES", "Recipe", "register_recipe"]
