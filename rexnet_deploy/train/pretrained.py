"""Start a run from pretrained weights: this project's checkpoints, timm's and the official clovaai layout.

:func:`pretrained_recipe` makes the run's recipe name the file's architecture (and take its input size);
:func:`start_from` builds the run's model: every weight of the file, and a fresh classifier (drawn with the
recipe's seed) when the run's classes are not the file's. What it did is recorded in every checkpoint of the
run under ``pretrained``: the file, its SHA-256 and layout, the head replaced or kept, the classes before and
after.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..artifacts import sha256_file
from ..data import recorded_spec
from ..models import create_model, load_model, read_checkpoint
from ..models.checkpoint import checkpoint_layout
from ..models.rexnet import CLASSIFIER, ReXNet
from .recipe import Recipe


def pretrained_recipe(recipe: Recipe, path: str | Path, model_name: str | None = None,
                      width: float | None = None) -> Recipe:
    """``recipe`` for a run that starts from ``path``: its model and width are the file's (checked against
    ``model_name``/``width`` when given; a timm or official file, which names none, is read as those, else as the
    recipe's model), and its input size, unless the recipe gives one, is the one the file was trained at. A file
    that is not that architecture: one line naming what it holds."""
    path = Path(path)
    if not read_checkpoint(path).get("model_name") and model_name is None:
        model_name, width = recipe.model, width if width is not None else recipe.width
    source, meta = load_model(path, model_name, width)  # every weight checked: another family or width fails here
    spec = recorded_spec(meta, f"pretrained checkpoint {path}")
    size = recipe.input_size
    if size is None and spec is not None and spec.preprocess is not None:
        size = spec.input_size
    return dataclasses.replace(recipe, model=source.model_name, width=source.width, input_size=size)


def start_from(path: str | Path, recipe: Recipe, classes: tuple[str, ...]) -> tuple[ReXNet, dict[str, Any]]:
    """The run's model: ``path``'s weights under a classifier for ``classes`` (the file's own when its classes are
    these, compared by name where it records names, else by count; a fresh one drawn with ``recipe.seed``
    otherwise), and the ``pretrained`` record for its checkpoints. ``recipe`` names the file's architecture
    (:func:`pretrained_recipe`)."""
    path = Path(path)
    layout = checkpoint_layout(read_checkpoint(path))
    source, meta = load_model(path, recipe.model, recipe.width)
    names = meta.get("classes")
    source_classes = tuple(str(c) for c in names) if isinstance(names, (list, tuple)) and names else None
    keep = source.num_classes == len(classes) and source_classes in (None, tuple(classes))
    torch.manual_seed(recipe.seed)  # the new classifier is drawn as build_model draws a fresh model's
    model = create_model(source.model_name, width=source.width, num_classes=len(classes), plan=source.plan,
                         dropout=recipe.dropout)
    weights = {k: v for k, v in source.state_dict().items() if keep or not k.startswith(CLASSIFIER + ".")}
    model.load_state_dict({**model.state_dict(), **weights})
    record = {"checkpoint": str(path), "sha256": sha256_file(path), "layout": layout,
              "model_name": source.model_name, "width": source.width, "head": "kept" if keep else "replaced",
              "source_num_classes": source.num_classes,
              "source_classes": list(source_classes) if source_classes else None,
              "num_classes": len(classes)}
    return model, {"pretrained": record}
