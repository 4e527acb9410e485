"""The one way to train: ``fit(TrainRequest)`` seeds, loads the data, builds the model and trains it.

The ``train`` command, the pipeline's training stage, fine-tuning after pruning and the experiments
all come through here, so a recipe and its seed give the same first weights whichever of them trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..data import load_datasets
from ..models import create_model
from ..stages import Stage
from .pretrained import start_from
from .recipe import Recipe
from .trainer import BEST, LAST, Trainer, TrainRequest, TrainResult, distributed_env


def build_model(recipe: Recipe, num_classes: int) -> nn.Module:
    """A fresh ``recipe.model`` at ``recipe.width``, its weights drawn right after seeding with ``recipe.seed``."""
    torch.manual_seed(recipe.seed)  # the same initial weights on every process and every run
    return create_model(recipe.model, width=recipe.width, num_classes=num_classes, dropout=recipe.dropout)


def fit(request: TrainRequest) -> TrainResult:
    """Train as ``request`` says; checkpoints, metrics and curves go to ``request.out_dir``."""
    if request.data is not None:
        train_set, val_set = request.data
    else:
        train_set, val_set = load_datasets(request.recipe, request.data_dir, download=request.download,
                                           env=distributed_env(request.device))
    model = request.model
    if model is None and request.pretrained is not None:
        model, record = start_from(request.pretrained, request.recipe, tuple(train_set.classes))
        request = dataclasses.replace(request, provenance={**(request.provenance or {}), **record})
    elif model is None:
        model = build_model(request.recipe, train_set.num_classes)
    return Trainer(request, model, train_set, val_set).run()


def fit_stage(request: TrainRequest, name: str = "train",
              log: Callable[[str], None] = print) -> tuple[Path, bool]:
    """``fit`` as a stage in ``request.out_dir``, keyed by the recipe: its best checkpoint and whether it was reused.

    A finished run of the same recipe is reused, a killed one resumes from its last epoch, and a folder
    holding anything else is started over. The key covers the recipe and the content of the ``pretrained``
    file, so the request builds its model from those (``model`` None) and reads the recipe's dataset.
    """
    inputs = [Path(request.pretrained)] if request.pretrained is not None else []
    stage = Stage(name, Path(request.out_dir), {"recipe": request.recipe.to_dict()}, inputs, outputs=[BEST])
    reused = stage.done()

    def build(folder: Path, resume: bool) -> None:
        # the interrupted run may have died before its first epoch was saved: then it starts afresh
        fit(dataclasses.replace(request, out_dir=folder, resume=resume and (folder / LAST).is_file()))

    stage.run_resumable(build, log)
    return stage.folder / BEST, reused
