"""ImageFolder trees (``train/`` and ``val/``, one folder per class) with ImageNet preprocessing.

Images are decoded per item by a DataLoader; the transforms are timm's (random resized crop, bicubic,
RandAugment, random erasing for training; resize to ``size / crop_pct`` and center crop for
evaluation), the pipeline the ReXNet authors trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.utils.data

from ..errors import UserError
from ..models.registry import IMAGENET_MEAN, IMAGENET_STD
from .datasets import Preprocess

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _load_rgb(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"image {path} cannot be decoded ({exc}): remove or replace it") from None


@dataclass
class FolderDataset:
    """One split of an ImageFolder tree; ``preprocess`` is the evaluation input (size, mean, std)."""

    name: str
    split: str
    root: Path
    classes: tuple[str, ...]
    samples: list[tuple[str, int]]
    preprocess: Preprocess
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"dataset": self.name, "split": self.split, "root": str(self.root), "num_images": len(self),
                "preprocess": self.preprocess.to_dict(), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "classes": list(self.classes)}

    def subset(self, count: int, seed: int = 0) -> "FolderDataset":
        """``count`` images drawn at random (fixed by ``seed``), in their original order."""
        if count >= len(self):
            return self
        keep = sorted(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count].tolist())
        return FolderDataset(self.name, self.split, self.root, self.classes, [self.samples[i] for i in keep],
                             self.preprocess, self.crop_pct, self.interpolation)

    def transform(self, training: bool, *, auto_augment: str | None = None, random_erasing: float = 0.0,
                  hflip: float = 0.5):
        """timm's train or eval transform for this split's input size and normalisation."""
        from timm.data import create_transform

        if training:
            return create_transform(self.preprocess.size, is_training=True, hflip=hflip, auto_augment=auto_augment,
                                    interpolation=self.interpolation, mean=self.preprocess.mean,
                                    std=self.preprocess.std, re_prob=random_erasing, re_mode="pixel")
        return create_transform(self.preprocess.size, is_training=False, interpolation=self.interpolation,
                                crop_pct=self.crop_pct, mean=self.preprocess.mean, std=self.preprocess.std)

    def torch_dataset(self, transform) -> "FolderItems":
        """A map-style dataset yielding (transformed image, label)."""
        return FolderItems(self.samples, transform)


class FolderItems(torch.utils.data.Dataset):
    """Decodes one image per item (in DataLoader workers) and applies the transform."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return self.transform(_load_rgb(path)), label


def load_image_folder(data_dir: str | Path, split: str, *, input_size: int = 224, crop_pct: float = 0.875,
                      interpolation: str = "bicubic", mean: tuple[float, float, float] = IMAGENET_MEAN,
                      std: tuple[float, float, float] = IMAGENET_STD) -> FolderDataset:
    """Scan ``<data_dir>/<split>/<class>/*.jpg``; one-line errors for a missing or malformed tree."""
    from torchvision.datasets.folder import make_dataset

    root = Path(data_dir) / split
    if not root.is_dir():
        raise UserError(f"ImageFolder split {root} does not exist: --data-dir must hold train/ and val/ folders "
                        f"with one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{root} has no class folders: put each class's images in {root}/<class name>/")
    try:
        samples = make_dataset(str(root), {c: i for i, c in enumerate(classes)}, IMAGE_EXTENSIONS,
                               allow_empty=True)
    except (FileNotFoundError, OSError) as exc:
        raise UserError(f"{root} cannot be scanned ({exc}): check the folder") from None
    empty = sorted(set(classes) - {classes[i] for _, i in samples})
    if empty:
        raise UserError(f"class folder {root / empty[0]} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                        f"add images or remove the folder")
    return FolderDataset("imagefolder", split, root, tuple(classes), samples, Preprocess(input_size, mean, std),
                         crop_pct, interpolation)


def load_image_folder_splits(data_dir: str | Path, **kwargs) -> tuple[FolderDataset, FolderDataset]:
    """train/ and val/ of one tree, checked to name the same classes."""
    train, val = load_image_folder(data_dir, "train", **kwargs), load_image_folder(data_dir, "val", **kwargs)
    if train.classes != val.classes:
        diff = sorted(set(train.classes) ^ set(val.classes))
        raise UserError(f"{train.root} and {val.root} have different class folders (e.g. {diff[0]!r}): "
                        f"give both the same classes")
    return train, val
