"""Any split of any dataset, preprocessed for the model, for every stage: :func:`load_split`.

Training and validation, calibration draws (stratified by class, seeded), pruning's fine-tuning and
evaluation, export's parity images, INT8 calibration and accuracy, bench accuracy and the pipeline all
read their images here, from a :class:`~.spec.DatasetSpec`. What comes back is a :class:`DataSplit`:
an in-memory :class:`~.datasets.ImageDataset` (Fashion-MNIST, CIFAR, a small ImageFolder tree decoded
once) or a streamed :class:`~.imagefolder.FolderDataset` (a large tree), with the same interface.
In-memory datasets validate on their test split; an ImageFolder tree on its ``val/`` folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from ..errors import UserError
from ..preprocess import Preprocess
from .datasets import ImageDataset
from .formats import get_format
from .spec import DatasetSpec, dataset_spec, tree_preprocess

if TYPE_CHECKING:
    from .imagefolder import FolderDataset

SPLIT_NAMES = ("train", "val", "test", "calib")


@runtime_checkable
class DataSplit(Protocol):
    """One split of a dataset, whatever holds it: what every stage reads images through.

    ``in_memory``: True for uint8 images held in ``images`` (the trainer's on-device fast path), False for a
    split decoded per item by DataLoader workers (``transform``/``torch_dataset``).
    """

    name: str
    split: str
    classes: tuple[str, ...]
    preprocess: Preprocess
    spec: DatasetSpec | None
    in_memory: bool

    def __len__(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def labels(self) -> torch.Tensor: ...  # int64 [N]

    def describe(self) -> dict: ...

    def select(self, indices) -> DataSplit: ...

    def subset(self, count: int, seed: int = 0) -> DataSplit: ...

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalised float32 NCHW images, labels) in order."""
        ...

    def inputs(self, indices) -> torch.Tensor:
        """These images, normalised float32 NCHW."""
        ...


def stratified_indices(labels: torch.Tensor, num_images: int, seed: int) -> torch.Tensor:
    """``num_images`` indices with each class in proportion to its share of ``labels`` (largest remainder)."""
    classes, counts = torch.unique(labels, return_counts=True)
    quota = counts.double() * num_images / len(labels)
    take = quota.floor().long()
    # hand the leftover images to the classes with the largest fractional quota (ties: lower class id)
    leftover = num_images - int(take.sum())
    take[torch.argsort(-(quota - take), stable=True)[:leftover]] += 1
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.sort(torch.cat(picked)).values


def _where(split: DataSplit) -> str:
    root = getattr(split, "root", None)
    return str(root) if root is not None else f"the {split.name} {split.split} split"


def check_classes(split: DataSplit, spec: DatasetSpec) -> None:
    """The data must hold the classes the spec (a checkpoint's) records: the same number, the same names."""
    if not spec.classes:
        return
    where, origin = _where(split), spec.origin or "the model"
    if len(spec.classes) != split.num_classes:
        raise UserError(f"{origin} has {len(spec.classes)} classes but {where} has {split.num_classes}: point "
                        f"--data-dir at the data it was trained on, or train a model on this one")
    if tuple(spec.classes) != tuple(split.classes) and spec.is_folder:
        diff = next(f"{a!r} vs {b!r}" for a, b in zip(spec.classes, split.classes) if a != b)
        raise UserError(f"{origin} was trained on other classes than {where} holds ({diff}): point --data-dir at "
                        f"the tree it was trained on")


def check_num_classes(split: DataSplit, num_classes: int, origin: str) -> None:
    """A model's class count must be the data's (for a checkpoint that records no class names)."""
    if num_classes != split.num_classes:
        raise UserError(f"{origin} has {num_classes} classes but {_where(split)} has {split.num_classes}: point "
                        f"--data-dir at the data it was trained on, or train a model on this one")


def split_spec(split: DataSplit) -> DatasetSpec:
    """The spec ``split`` was loaded from; for a split made without one (an ImageFolder loaded directly),
    the spec its own facts describe."""
    if split.spec is not None:
        return split.spec
    root = getattr(split, "root", None)
    if root is None:
        return dataset_spec(split.name).replace(classes=tuple(split.classes))
    return DatasetSpec(split.name, str(Path(root).parent.resolve()), split.preprocess, tuple(split.classes))


def data_record(split: DataSplit) -> dict[str, Any]:
    """What a checkpoint or manifest records about the data it was made from: ``dataset_spec`` (how later
    stages find the data), the whole preprocessing contract and the class names."""
    spec = split_spec(split)
    return {"dataset": split.name, "dataset_spec": spec.to_dict(), "preprocess": split.preprocess.to_dict(),
            "classes": list(split.classes)}


def _load(spec: DatasetSpec, split: str, download: bool, workers: int | None) -> DataSplit:
    fmt = get_format(spec.name)
    if download:
        fmt.download(spec.folder)
    data = fmt.load(spec, "train" if split == "train" else "val", workers)
    check_classes(data, spec)
    full = spec.replace(classes=tuple(data.classes), origin=None)
    data.spec = full
    return data


def load_split(spec: DatasetSpec, split: str = "val", *, count: int | None = None, seed: int = 0,
               download: bool = False, workers: int | None = None) -> DataSplit:
    """One split of ``spec``'s dataset, preprocessed as ``spec`` says (the model's preprocessing).

    ``split``: ``train``; ``val`` (an ImageFolder's ``val/``, a built-in dataset's test split; ``test`` is the
    same); or ``calib``: ``count`` training images drawn stratified by class with ``seed`` (a calibration
    set). ``count`` with ``train``/``val``: that many images drawn at random (seeded). The split's ``spec``
    is ``spec`` completed with the data's class names; recorded class names must match the data's.
    ``download`` fetches CIFAR first; ``workers``: DataLoader workers of an ImageFolder tree.
    """
    if split not in SPLIT_NAMES:
        raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_NAMES)}")
    if split == "calib":
        train, indices = calibration_draw(spec, count, seed, workers=workers)
        return train.select(indices)
    data = _load(spec, "train" if split == "train" else "val", download, workers)
    return data.subset(count, seed) if count is not None else data


def calibration_draw(spec: DatasetSpec, count: int | None, seed: int = 0, *,
                     workers: int | None = None) -> tuple[DataSplit, torch.Tensor]:
    """The training split and the ``count`` indices a calibration set draws from it (stratified, seeded);
    ``load_split(spec, "calib", ...)`` is ``train.select(indices)``. One line when there are too few images."""
    if count is None:
        raise UserError("a calibration draw needs a number of images (--calibration-images)")
    train = _load(spec, "train", False, workers)
    if count > len(train):
        raise UserError(f"{_where(train)} has {len(train)} training images, fewer than the {count} calibration "
                        f"images asked for: ask for {len(train)} or fewer")
    return train, stratified_indices(train.labels, count, seed)


class DataSpecLike(Protocol):
    """What a training :class:`~rexnet_deploy.train.Recipe` says about its data."""

    dataset: str
    input_size: int | None
    crop_pct: float
    interpolation: str


class Processes(Protocol):
    """Where this process sits among torchrun's (``DistEnv``): only the main one downloads."""

    @property
    def main(self) -> bool: ...

    def barrier(self) -> None: ...


def recipe_spec(recipe: DataSpecLike, data_dir: str | Path | None = None) -> DatasetSpec:
    """The spec a recipe and ``--data-dir`` describe; an ImageFolder's input size defaults to the model's own."""
    name = recipe.dataset
    if not get_format(name).user_tree:
        return dataset_spec(name, data_dir)
    return dataset_spec(name, data_dir, input_size=getattr(recipe, "input_size", None),
                        model=getattr(recipe, "model", None),
                        like=tree_preprocess(recipe.crop_pct, recipe.interpolation))


def load_datasets(recipe: DataSpecLike, data_dir: str | Path | None = None, *, download: bool = False,
                  env: Processes | None = None) -> tuple[ImageDataset | FolderDataset, ImageDataset | FolderDataset]:
    """(train, val) splits of a recipe's dataset; with ``download``, CIFAR is fetched into ``data_dir`` first.

    Under torchrun pass ``env``: the main process downloads while the others wait at its barrier.
    """
    spec = recipe_spec(recipe, data_dir)
    if download:
        if env is None or env.main:
            load_split(spec, "val", download=True)
        if env is not None:
            env.barrier()
    workers = getattr(recipe, "workers", None)
    return load_split(spec, "train", workers=workers), load_split(spec, "val", workers=workers)


__all__ = ["DataSplit", "calibration_draw", "check_classes", "check_num_classes", "data_record", "load_datasets",
           "load_split", "recipe_spec", "split_spec", "stratified_indices"]
