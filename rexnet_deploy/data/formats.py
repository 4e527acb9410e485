"""The dataset formats: one table every stage reads, as the runtimes have ``BACKENDS``.

``DATASET_FORMATS`` names every format a :class:`~rexnet_deploy.data.DatasetSpec` can be: the built-in datasets
(fixed size, preprocessing and classes) and a tree of the user's own images (``user_tree``: the folder is
required, the input size and normalisation come from the model). Spec checking, loading, the ``--dataset``
help texts and every stage read it. A format's module (imported on first use) defines:

- ``load_format(name, spec, split, workers) -> DataSplit``: one split (``train`` or ``val``) of ``spec``;
- ``format_preprocess(name) -> Preprocess`` and ``format_classes(name) -> tuple[str, ...] | None`` where the
  format fixes them (not a ``user_tree`` one);
- ``download_format(name, folder)`` where ``downloads`` (``--download``).

Adding a dataset format is one module and one row here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    from ..preprocess import Preprocess


@dataclass(frozen=True)
class DatasetFormat:
    """One row of the dataset-format table."""

    name: str  # what --dataset, recipes and checkpoints call it
    module: str  # the module that loads it, imported on first use
    user_tree: bool = False  # the user's folder (--data-dir required); input size and normalisation from the model
    downloads: bool = False  # --download fetches it (checked) into --data-dir
    description: str = ""

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)

    def load(self, spec: Any, split: str, workers: int | None) -> Any:
        """One split of ``spec`` (``train`` or ``val``) as a :class:`~rexnet_deploy.data.DataSplit`."""
        return self.impl().load_format(self.name, spec, split, workers)

    def fixed_preprocess(self) -> Preprocess:
        return self.impl().format_preprocess(self.name)

    def fixed_classes(self) -> tuple[str, ...] | None:
        return self.impl().format_classes(self.name)

    def download(self, folder: Any) -> None:
        if not self.downloads:
            raise UserError(f"--download fetches {', '.join(f.name for f in DATASET_FORMATS.values() if f.downloads)}"
                            f" only; {self.name} is installed otherwise ({self.description})")
        self.impl().download_format(self.name, folder)


DATASET_FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    DatasetFormat("fashion_mnist", "rexnet_deploy.data.datasets",
                  description="the Debian package dataset-fashion-mnist, 28×28 grey padded to 32"),
    DatasetFormat("cifar10", "rexnet_deploy.data.cifar", downloads=True, description="CIFAR-10, 32×32"),
    DatasetFormat("cifar100", "rexnet_deploy.data.cifar", downloads=True, description="CIFAR-100, 32×32"),
    DatasetFormat("imagefolder", "rexnet_deploy.data.imagefolder", user_tree=True,
                  description="your own images: DIR/train/<class>/*, DIR/val/<class>/*"),
)}


def get_format(name: str) -> DatasetFormat:
    """The row called ``name``, or one line listing the known ones."""
    if name not in DATASET_FORMATS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASET_FORMATS)}")
    return DATASET_FORMATS[name]


def format_names(last: str = "or") -> str:
    """``fashion_mnist, cifar10, cifar100 or imagefolder``: the choices, for help texts."""
    names = list(DATASET_FORMATS)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"
