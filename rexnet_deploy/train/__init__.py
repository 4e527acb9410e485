"""Training: recipes, the resumable (optionally distributed) trainer, knowledge distillation.

``fit(TrainRequest(recipe, out_dir, ...))`` is the one entry point: the train command, the pipeline,
fine-tuning after pruning and the experiments all call it.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "build_model": ".fitting",
    "fit": ".fitting",
    "fit_stage": ".fitting",
    "Recipe": ".recipe",
    "list_recipes": ".recipe",
    "load_recipe": ".recipe",
    "Distillation": ".trainer",
    "TrainRequest": ".trainer",
    "TrainResult": ".trainer",
})

__all__ = ["Distillation", "Recipe", "TrainRequest", "TrainResult", "build_model", "fit", "fit_stage", "list_recipes",
           "load_recipe"]
