"""Write Fashion-MNIST as an ImageFolder tree of PNG files: OUT/train/<class>/*.png and OUT/val/<class>/*.png.

Real images in the layout users bring their own data in, for tests and recorded pipeline runs. ``train/``
takes the first ``--per-class`` images of each class from the training split, ``val/`` the first
``--val-per-class`` of each class from the test split (``--classes``: only these class ids, e.g. 5,6,7,8,9);
the PNGs are the dataset's own 28×28 greyscale images (the data layer converts them to RGB). Class folders are
the class names with ``/`` replaced.
Usage: .venv/bin/python scripts/make_imagefolder.py --out runs/fmnist-folder [--per-class 600]
       [--val-per-class 200] [--classes 0,1,2,3,4] [--size 28] [--data-dir /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rexnet_deploy.data.datasets import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, _find_idx, _read_idx
from rexnet_deploy.errors import UserError


def folder_name(cls: str) -> str:
    return cls.replace("/", "_").replace(" ", "_")


def write_tree(out: Path, per_class: int, val_per_class: int, size: int = 28,
               data_dir: str | Path | None = None, classes: Sequence[int] | None = None) -> dict[str, int]:
    """Write the tree (``classes``: these class ids only, default all ten); returns how many images each split
    got. Refuses a non-empty ``out``."""
    from PIL import Image

    root = Path(data_dir or os.environ.get("REXNET_DEPLOY_FMNIST") or FASHION_MNIST_DIR)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new --out")
    counts = {}
    for split, prefix, n in (("train", "train", per_class), ("val", "t10k", val_per_class)):
        images = _read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
        counts[split] = 0
        for label in range(len(FASHION_MNIST_CLASSES)) if classes is None else classes:
            cls = FASHION_MNIST_CLASSES[label]
            folder = out / split / folder_name(cls)
            folder.mkdir(parents=True, exist_ok=True)
            members = np.flatnonzero(labels == label)[:n]
            if len(members) < n:
                raise UserError(f"Fashion-MNIST {prefix} has only {len(members)} images of {cls!r}: lower the count")
            for index in members:
                image = Image.fromarray(images[index], mode="L")
                if size != image.width:
                    image = image.resize((size, size), Image.BICUBIC)
                image.save(folder / f"{prefix}-{index:05d}.png")
            counts[split] += len(members)
    return counts


def _class_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"class ids must be integers like 5,6,7, not {text!r}") from None
    if not ids or not all(0 <= i < len(FASHION_MNIST_CLASSES) for i in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"class ids must be distinct, in 0..{len(FASHION_MNIST_CLASSES) - 1}, "
                                         f"not {text!r}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-class", type=int, default=600, help="train/ images per class (default 600)")
    parser.add_argument("--val-per-class", type=int, default=None,
                        help="val/ images per class (default: a third of --per-class, at least 10)")
    parser.add_argument("--size", type=int, default=28, help="PNG side in pixels (default 28, the dataset's own)")
    parser.add_argument("--data-dir", help="folder of the idx files (default: the Debian package's)")
    parser.add_argument("--classes", type=_class_ids, help="class ids to write, e.g. 5,6,7,8,9 (default all ten)")
    args = parser.parse_args()
    val = args.val_per_class if args.val_per_class is not None else max(10, args.per_class // 3)
    try:
        counts = write_tree(args.out, args.per_class, val, args.size, args.data_dir, args.classes)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['train']} train and {counts['val']} val images, "
          f"{len(args.classes or FASHION_MNIST_CLASSES)} classes, "
          f"{args.size}×{args.size} greyscale PNG")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
