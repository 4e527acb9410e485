"""Training: recipes, the resumable (optionally distributed) trainer, knowledge distillation.

``fit(TrainRequest(recipe, out_dir, ...))`` is the one entry point: the train command, the pipeline,
fine-tuning after pruning and the experiments all call it.
"""

from .fit import build_model, fit, fit_stage
from .recipe import Recipe, list_recipes, load_recipe
from .trainer import Distillation, TrainRequest, TrainResult

__all__ = ["Distillation", "Recipe", "TrainRequest", "TrainResult", "build_model", "fit", "fit_stage",
           "list_recipes", "load_recipe"]
