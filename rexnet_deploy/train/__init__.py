"""Training: recipes, the resumable (optionally distributed) trainer, knowledge distillation."""

from .recipe import Recipe, list_recipes, load_recipe
from .trainer import TrainResult, train_model

__all__ = ["Recipe", "TrainResult", "list_recipes", "load_recipe", "train_model"]
