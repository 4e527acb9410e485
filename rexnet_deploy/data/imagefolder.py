"""ImageFolder trees (``train/`` and ``val/``, one folder per class), checked, then held or streamed.

A tree is scanned and checked first (both splits there, the same classes in each, no empty class
folder). A tree small at its input size (:func:`fits_in_memory`: ≤ 64 px and ≤ 200k images) is then
decoded once by the preprocessing contract's pixel stage (:meth:`~rexnet_deploy.preprocess.Preprocess.pixels`:
the shorter side to ``size / crop_pct``, center crop; timm's evaluation transform op for op) into a uint8
:class:`~.datasets.ImageDataset` like the built-in datasets: it trains at in-memory speed and evaluates bit for
bit as the streamed path would. A larger one (ImageNet) stays a :class:`FolderDataset` whose images DataLoader
workers decode per item: timm's training transforms (random resized crop, bicubic, RandAugment, random erasing),
the pipeline the ReXNet authors trained with, and the contract for evaluation. Grey, palette and RGBA images
are converted to RGB by the contract's colour rule; a file that does not decode is named in one line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.utils.data

from ..errors import UserError, first_line
from ..preprocess import IMAGE_EXTENSIONS, Preprocess
from .datasets import ImageDataset

if TYPE_CHECKING:
    from .spec import DatasetSpec

SPLITS = ("train", "val")
IN_MEMORY_MAX_SIZE = 64  # px: a tree decoded at this input size or less is held in memory ...
IN_MEMORY_MAX_IMAGES = 200_000  # ... when it has at most this many images (64 px: 2.4 GB of uint8)
SIZE_SAMPLE = 256  # a streamed tree: image headers read to tell whether every image is smaller than the input
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)


def _undecodable(path: str, exc: Exception) -> UserError:
    from PIL import UnidentifiedImageError

    why = "not an image file PIL can read" if isinstance(exc, UnidentifiedImageError) else first_line(exc, 80)
    return UserError(f"image {path} cannot be decoded ({why}): remove or replace it")


def _load_rgb(path: str):
    from PIL import UnidentifiedImageError

    try:
        return Preprocess.load_image(path)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise _undecodable(path, exc) from None


def worker_errors(loader):
    """Iterate ``loader``; a UserError from a worker (a broken image) comes out as its own one line.

    When the iteration ends, SIGCHLD gets back the handler it had before: torch's DataLoader installs a
    Python SIGCHLD handler for the rest of the process, and with one installed, OpenVINO/NNCF work later in
    the same process died of native heap corruption once any child process (a subprocess) had exited.
    """
    before = signal.getsignal(signal.SIGCHLD)
    try:
        yield from loader
    except UserError as exc:  # the DataLoader re-raises it with the worker's traceback in the message
        raise UserError(str(exc).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None
    finally:
        # torch sets its handler once per process and only from the main thread; without it, a dead worker is
        # still found by the DataLoader's own status check
        if loader.num_workers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGCHLD, signal.SIG_DFL if before is None else before)


class ContractTransform:
    """The evaluation transform of a streamed split: the preprocessing contract on one decoded image
    (pixels, then scaling and mean/std), as a float32 CHW tensor; picklable for DataLoader workers."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(self.preprocess.to_input(self.preprocess.pixels(image)[None])[0])


@dataclass
class FolderDataset:
    """One split of an ImageFolder tree, streamed; ``preprocess`` is the evaluation contract."""

    name: str
    split: str
    root: Path
    classes: tuple[str, ...]
    samples: list[tuple[str, int]]
    preprocess: Preprocess
    spec: DatasetSpec | None = None
    workers: int = DEFAULT_WORKERS
    in_memory: bool = field(default=False, init=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def describe(self) -> dict:
        return {"dataset": self.name, "split": self.split, "root": str(self.root), "num_images": len(self),
                "preprocess": self.preprocess.to_dict(), "in_memory": False, "classes": list(self.classes)}

    def select(self, indices) -> "FolderDataset":
        """These images (a sequence or tensor of indices), in that order."""
        keep = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
        return FolderDataset(self.name, self.split, self.root, self.classes, [self.samples[i] for i in keep],
                             self.preprocess, self.spec, self.workers)

    def subset(self, count: int, seed: int = 0) -> "FolderDataset":
        """``count`` images drawn at random (fixed by ``seed``), in their original order."""
        if count >= len(self):
            return self
        drawn = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return self.select(drawn.sort().values)

    def transform(self, training: bool, *, auto_augment: str | None = None, random_erasing: float = 0.0,
                  hflip: float = 0.5):
        """timm's train transform for this split's input size and normalisation; the contract for evaluation."""
        if not training:
            return ContractTransform(self.preprocess)
        from timm.data import create_transform

        return create_transform(self.preprocess.size, is_training=True, hflip=hflip, auto_augment=auto_augment,
                                interpolation=self.preprocess.interpolation, mean=self.preprocess.mean,
                                std=self.preprocess.std, re_prob=random_erasing, re_mode="pixel")

    def torch_dataset(self, transform) -> "FolderItems":
        """A map-style dataset yielding (transformed image, label)."""
        return FolderItems(self.samples, transform)

    def batches(self, batch_size: int, limit: int | None = None):
        """(normalised float32 images, labels) in order, decoded by DataLoader workers."""
        n = len(self) if limit is None else min(limit, len(self))
        items = torch.utils.data.Subset(self.torch_dataset(self.transform(False)), range(n))
        workers = self.workers if n > batch_size else 0  # a batch or two: not worth starting workers
        loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers)
        yield from worker_errors(loader)

    def inputs(self, indices) -> torch.Tensor:
        """These images preprocessed as evaluation does: float32 [N, 3, size, size]."""
        chosen = self.select(indices)
        return torch.cat([x for x, _ in chosen.batches(256)]) if len(chosen) else \
            torch.zeros(0, 3, self.preprocess.size, self.preprocess.size)


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


# ---------------------------------------------------------------- scanning and checking a tree
def check_root(data_dir: str | Path) -> Path:
    """The tree's root, refused in one line unless it holds both ``train/`` and ``val/``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"ImageFolder root {root} does not exist: --data-dir must be a folder holding train/ and "
                        f"val/, one sub-folder of images per class")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        hint = " (rename test/ to val/)" if missing == ["val"] and (root / "test").is_dir() else ""
        raise UserError(f"ImageFolder root {root} has no {' and no '.join(m + '/' for m in missing)} folder{hint}: "
                        f"it must hold train/ and val/, each with one sub-folder of images per class")
    return root


def _class_folders(split_root: Path) -> list[str]:
    try:
        return sorted(d.name for d in split_root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise UserError(f"{split_root} cannot be read ({exc.strerror}): check the folder's permissions") from None


def _images_in(folder: Path) -> list[str]:
    """Image files under ``folder`` (any depth), in torchvision ImageFolder's order."""
    found = []
    for where, _, names in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(where, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def scan_split(data_dir: str | Path, split: str) -> tuple[Path, tuple[str, ...], list[tuple[str, int]]]:
    """``(split folder, classes, [(path, label)])`` of one split, the classes interleaved (one image of each in
    turn); one-line errors for a malformed one."""
    if split not in SPLITS:
        raise UserError(f"an ImageFolder tree has splits train and val, not {split!r}")
    root = Path(data_dir) / split
    if not root.is_dir():
        raise UserError(f"ImageFolder split {root} does not exist: --data-dir must hold train/ and val/ folders "
                        f"with one sub-folder per class")
    classes = _class_folders(root)
    if not classes:
        raise UserError(f"{root} has no class folders: put each class's images in {root}/<class name>/")
    per_class = []
    for cls in classes:
        try:
            files = _images_in(root / cls)
        except OSError as exc:
            raise UserError(f"{root / cls} cannot be scanned ({exc}): check the folder") from None
        if not files:
            raise UserError(f"class folder {root / cls} holds no images ({', '.join(IMAGE_EXTENSIONS)}): "
                            f"add images or remove the folder")
        per_class.append(files)
    # the classes take turns (each class's files in name order): the first N images, which evaluation with a
    # limit and parity read, then hold every class alike instead of the first few classes only
    samples = [(files[k], label) for k in range(max(map(len, per_class)))
               for label, files in enumerate(per_class) if k < len(files)]
    return root, tuple(classes), samples


def check_same_classes(root: Path) -> tuple[str, ...]:
    """The classes of a tree whose train/ and val/ name the same class folders; else one line saying which differs."""
    found = {s: _class_folders(root / s) for s in SPLITS}
    train, val = set(found["train"]), set(found["val"])
    for here, there, a, b in (("train", "val", train, val), ("val", "train", val, train)):
        extra = sorted(a - b)
        if extra:
            raise UserError(f"class {extra[0]!r} is in {root / here}/ but not in {root / there}/: give both splits "
                            f"the same class folders (add {root / there / extra[0]}/ or remove "
                            f"{root / here / extra[0]}/)")
    return tuple(found["train"])


def fits_in_memory(size: int, count: int) -> bool:
    return size <= IN_MEMORY_MAX_SIZE and count <= IN_MEMORY_MAX_IMAGES


# ---------------------------------------------------------------- in memory: decoded once per process
_DECODED: OrderedDict[tuple, tuple[torch.Tensor, tuple[int, int]]] = OrderedDict()
_NOTED: set[tuple] = set()


def _stamp(samples: list[tuple[str, int]]) -> tuple:
    stats = []
    for path, _ in samples:
        st = os.stat(path)
        stats.append((path, st.st_mtime_ns, st.st_size))
    return tuple(stats)


def _decode_all(samples: list[tuple[str, int]], preprocess: Preprocess,
                workers: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 [N, 3, size, size] and the largest (width, height) met, decoded by DataLoader workers."""
    class Decode(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(samples)

        def __getitem__(self, index: int):
            image = _load_rgb(samples[index][0])
            return torch.from_numpy(preprocess.pixels(image)).permute(2, 0, 1), torch.tensor(image.size)

    images = torch.empty(len(samples), 3, preprocess.size, preprocess.size, dtype=torch.uint8)
    largest = torch.zeros(2, dtype=torch.int64)
    loader = torch.utils.data.DataLoader(Decode(), batch_size=256, num_workers=workers if len(samples) > 512 else 0)
    start = 0
    for batch, sizes in worker_errors(loader):
        images[start:start + len(batch)] = batch
        largest = torch.maximum(largest, sizes.max(0).values)
        start += len(batch)
    return images, (int(largest[0]), int(largest[1]))


def _decoded(samples, preprocess: Preprocess, workers: int):
    key = (_stamp(samples), preprocess)
    if key not in _DECODED:
        _DECODED[key] = _decode_all(samples, preprocess, workers)
        while len(_DECODED) > 4:
            _DECODED.popitem(last=False)
    _DECODED.move_to_end(key)
    return _DECODED[key]


def _largest_header(samples: list[tuple[str, int]]) -> tuple[int, int]:
    """The largest (width, height) among up to SIZE_SAMPLE images spread over the split (headers only)."""
    from PIL import Image, UnidentifiedImageError

    step = max(1, len(samples) // SIZE_SAMPLE)
    width = height = 0
    for path, _ in samples[::step][:SIZE_SAMPLE]:
        try:
            with Image.open(path) as image:
                w, h = image.size
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise _undecodable(path, exc) from None
        width, height = max(width, w), max(height, h)
    return width, height


def _note_small(split_root: Path, largest: tuple[int, int], size: int, every: bool) -> None:
    """One line (once per tree and size) when the images are smaller than the input size: they get upscaled."""
    tree = split_root.parent
    if max(largest) >= size or (tree, size) in _NOTED:
        return
    _NOTED.add((tree, size))
    which = "every image" if every else "every image sampled"
    near = max(largest)
    print(f"note: {which} in {split_root} is at most {largest[0]}×{largest[1]} px but the input size is {size}: "
          f"they are upscaled {size / near:.1f}× (slower, no detail gained); pass --input-size {near} to train at "
          f"their size", file=sys.stderr)


FORMAT = "imagefolder"  # its row in the dataset-format table


def load_image_folder(data_dir: str | Path, split: str, preprocess: Preprocess, *, in_memory: bool | None = None,
                      workers: int = DEFAULT_WORKERS, spec: DatasetSpec | None = None) -> ImageDataset | FolderDataset:
    """One split of ``<data_dir>/<split>/<class>/*.png`` under the contract ``preprocess``: in memory (uint8)
    when it fits, else streamed.

    ``in_memory`` None decides by :func:`fits_in_memory`. One-line errors for a missing or malformed tree
    or a file that does not decode (an in-memory tree is decoded here, so that happens before any work).
    """
    root, classes, samples = scan_split(data_dir, split)
    size = preprocess.size
    hold = fits_in_memory(size, len(samples)) if in_memory is None else in_memory
    if not hold:
        _note_small(root, _largest_header(samples), size, every=False)
        return FolderDataset(FORMAT, split, root, classes, samples, preprocess, spec, workers)
    images, largest = _decoded(samples, preprocess, workers)
    _note_small(root, largest, size, every=True)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageDataset(FORMAT, split, images, labels, classes, preprocess, spec=spec, root=root)


def load_image_folder_splits(data_dir: str | Path, preprocess: Preprocess,
                             **kwargs) -> tuple[ImageDataset | FolderDataset, ImageDataset | FolderDataset]:
    """train/ and val/ of one tree, checked to name the same classes."""
    check_same_classes(check_root(data_dir))
    return (load_image_folder(data_dir, "train", preprocess, **kwargs),
            load_image_folder(data_dir, "val", preprocess, **kwargs))


def load_format(name: str, spec: DatasetSpec, split: str, workers: int | None = None) -> ImageDataset | FolderDataset:
    """The dataset-format table's loader: one split of the tree ``spec`` names, checked first."""
    root = check_root(spec.folder)
    check_same_classes(root)
    return load_image_folder(root, split, spec.preprocess, in_memory=spec.in_memory,
                             workers=DEFAULT_WORKERS if workers is None else workers)
