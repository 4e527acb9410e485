"""In-memory image datasets as uint8 NCHW tensors, and the evaluation preprocessing.

Small datasets (Fashion-MNIST, CIFAR) are held whole as uint8 tensors: training augments them per
batch on the training device, and evaluation, calibration and benchmarks all apply the same
:class:`Preprocess` (scale to [0, 1], normalise by mean/std).
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError
from ..preprocess import Preprocess

if TYPE_CHECKING:
    from .spec import DatasetSpec

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
# Statistics of the Fashion-MNIST training split after padding 28×28 → 32×32 with zeros (all 3 channels
# equal), computed once from the Debian package's idx files.
FASHION_MNIST_MEAN = (0.2190, 0.2190, 0.2190)
FASHION_MNIST_STD = (0.3318, 0.3318, 0.3318)
# the images are 28×28 grey: repeated to RGB and zero-padded to 32 (an image of another size is first resized
# to 28×28, so a user's own picture meets the model as the training images did)
FASHION_MNIST_PREPROCESS = Preprocess(32, FASHION_MNIST_MEAN, FASHION_MNIST_STD, resize="pad", crop_pct=1.0,
                                      interpolation="bilinear", source_size=28)


@dataclass
class ImageDataset:
    """A split held in memory: ``images`` uint8 [N, 3, H, W], ``labels`` int64 [N].

    ``spec`` is the dataset it came from (:class:`~.spec.DatasetSpec`, what checkpoints record); ``root``
    the folder of an ImageFolder split decoded into memory.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    preprocess: Preprocess
    spec: DatasetSpec | None = None
    root: Path | None = None
    in_memory: bool = field(default=True, init=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        found = {"dataset": self.name, "split": self.split, "num_images": len(self),
                 "preprocess": self.preprocess.to_dict(), "classes": list(self.classes)}
        if self.root is not None:
            found["root"] = str(self.root)
        if self.spec is not None and self.spec.is_folder:
            found.update(in_memory=True)
        return found

    def select(self, indices) -> "ImageDataset":
        """These images (a sequence or tensor of indices), in that order."""
        keep = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(self.name, self.split, self.images[keep], self.labels[keep], self.classes,
                            self.preprocess, self.spec, self.root)

    def subset(self, count: int, seed: int = 0) -> "ImageDataset":
        """``count`` images drawn at random (fixed by ``seed``), in their original order."""
        if count >= len(self):
            return self
        drawn = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return self.select(drawn.sort().values)

    def batches(self, batch_size: int, limit: int | None = None):
        """(normalised float32 images, labels) in order, for evaluation and calibration."""
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self.preprocess(self.images[start:stop]), self.labels[start:stop]

    def inputs(self, indices) -> torch.Tensor:
        """These images preprocessed as evaluation does: float32 [N, 3, size, size]."""
        return self.preprocess(self.images[torch.as_tensor(indices, dtype=torch.int64)])


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not a uint8 IDX file")
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise UserError(f"{path} is not a readable IDX file ({exc}): reinstall the dataset "
                        f"(apt-get install --reinstall dataset-fashion-mnist)") from None


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise UserError(f"Fashion-MNIST file {stem}(.gz) not found in {root}: install it with "
                    f"`apt-get install dataset-fashion-mnist` or pass --data-dir to a folder holding the idx files")


def load_fashion_mnist(split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST as 32×32 RGB by its contract (:data:`FASHION_MNIST_PREPROCESS`): repeated over 3 channels,
    zero-padded by 2 pixels.

    ``split``: ``train`` (60000) or ``test`` (10000). Looks in ``data_dir``, then
    ``$REXNET_DEPLOY_FMNIST``, then the Debian package's folder.
    """
    root = Path(data_dir or os.environ.get("REXNET_DEPLOY_FMNIST") or FASHION_MNIST_DIR)
    prefix = {"train": "train", "test": "t10k", "val": "t10k"}.get(split)
    if prefix is None:
        raise UserError(f"Fashion-MNIST has splits train and test, not {split!r}")
    images = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"Fashion-MNIST files in {root} disagree (images {images.shape}, labels {labels.shape}): "
                        f"reinstall the dataset")
    x = torch.from_numpy(FASHION_MNIST_PREPROCESS.pixels_batch(images)).permute(0, 3, 1, 2).contiguous()
    return ImageDataset("fashion_mnist", "test" if prefix == "t10k" else "train", x,
                        torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES, FASHION_MNIST_PREPROCESS)


def load_format(name: str, spec: DatasetSpec, split: str, workers: int | None = None) -> ImageDataset:
    """The dataset-format table's loader for Fashion-MNIST (``val`` is the test split)."""
    return load_fashion_mnist(split, spec.folder)


def format_preprocess(name: str) -> Preprocess:
    return FASHION_MNIST_PREPROCESS


def format_classes(name: str) -> tuple[str, ...]:
    return FASHION_MNIST_CLASSES


def load_dataset(name: str, split: str, data_dir: str | Path | None = None) -> ImageDataset:
    """A built-in dataset's split by name (``train``, ``test``/``val``), through the dataset-format table."""
    from .formats import get_format
    from .spec import dataset_spec

    fmt = get_format(name)
    if fmt.user_tree:
        raise UserError(f"{name} is a tree of your own images: load it with load_split(dataset_spec({name!r}, DIR))")
    return fmt.load(dataset_spec(name, data_dir), "train" if split == "train" else "val", None)


__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_PREPROCESS", "ImageDataset", "Preprocess", "load_dataset",
           "load_fashion_mnist"]
