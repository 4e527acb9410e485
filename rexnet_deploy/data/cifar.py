"""CIFAR-10/100 in the standard python-pickle layout, and its checked, atomic download.

The archives are the official ones (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``); the
pickles are read with an unpickler that only builds numpy arrays and plain values, so a tampered
file cannot run code.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..artifacts import ensure_writable_dir
from ..errors import UserError
from ..models.registry import CIFAR_MEAN, CIFAR_STD
from .datasets import ImageDataset, Preprocess

if TYPE_CHECKING:
    from .spec import DatasetSpec

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
OFFICIAL_MIRROR = "https://www.cs.toronto.edu/~kriz/"
DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class CifarSpec:
    title: str
    archive: str
    md5: str  # of the official archive (torchvision's figure)
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def preprocess(self) -> Preprocess:
        """32×32 RGB as they are (an image of another size is resized to 32×32)."""
        return Preprocess(32, self.mean, self.std, resize="exact", crop_pct=1.0, interpolation="bicubic")


CIFAR = {
    "cifar10": CifarSpec("CIFAR-10", "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                         "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                         "batches.meta", b"labels", b"label_names", CIFAR_MEAN, CIFAR_STD),
    "cifar100": CifarSpec("CIFAR-100", "cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                          "cifar-100-python", ("train",), ("test",), "meta", b"fine_labels", b"fine_label_names",
                          CIFAR100_MEAN, CIFAR100_STD),
}

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _spec(name: str) -> CifarSpec:
    try:
        return CIFAR[name]
    except KeyError:
        raise UserError(f"unknown CIFAR variant {name!r}: choose cifar10 or cifar100") from None


def data_root(data_dir: str | Path | None) -> Path:
    """``data_dir``, else ``$REXNET_DEPLOY_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get("REXNET_DEPLOY_DATA") or DEFAULT_DATA_DIR)


def find_cifar_folder(name: str, data_dir: str | Path | None = None) -> Path:
    """The extracted folder: ``<data_dir>/<cifar-…>`` or ``data_dir`` itself when it is that folder."""
    spec = _spec(name)
    root = data_root(data_dir)
    for folder in (root / spec.folder, root):
        if (folder / spec.meta_file).is_file():
            return folder
    raise UserError(f"{spec.title} not found in {root} (no {spec.folder}/{spec.meta_file}): pass --download "
                    f"to fetch it, or --data-dir to the folder that holds {spec.folder}/")


def _read_pickle(path: Path, title: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        if not isinstance(obj, dict):
            raise pickle.UnpicklingError(f"holds a {type(obj).__name__}, not a dict")
        return obj
    except FileNotFoundError:
        raise UserError(f"{title} file {path} is missing: re-download with --download "
                        f"(delete {path.parent} first)") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a readable {title} pickle ({exc}): delete {path.parent} and "
                        f"re-download with --download") from None


def load_cifar(name: str, split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """CIFAR-10/100 ``train`` (50000) or ``test`` (10000) as uint8 [N, 3, 32, 32]."""
    spec = _spec(name)
    if split not in ("train", "test", "val"):
        raise UserError(f"{spec.title} has splits train and test, not {split!r}")
    folder = find_cifar_folder(name, data_dir)
    meta = _read_pickle(folder / spec.meta_file, spec.title)
    images, labels = [], []
    for file in spec.train_files if split == "train" else spec.test_files:
        path = folder / file
        batch = _read_pickle(path, spec.title)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(batch[spec.label_key], dtype=np.int64)
        except (KeyError, ValueError) as exc:
            raise UserError(f"{path} lacks CIFAR image data or labels ({exc}): delete {folder} and "
                            f"re-download with --download") from None
        if len(data) != len(batch_labels):
            raise UserError(f"{path} has {len(data)} images but {len(batch_labels)} labels: re-download it")
        images.append(data)
        labels.append(batch_labels)
    try:
        classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[spec.names_key])
    except KeyError:
        raise UserError(f"{folder / spec.meta_file} has no class names: re-download with --download") from None
    y = torch.from_numpy(np.concatenate(labels))
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
        raise UserError(f"{folder} has labels outside 0..{len(classes) - 1}: re-download it")
    return ImageDataset(name, "test" if split != "train" else "train",
                        torch.from_numpy(np.concatenate(images)).contiguous(), y, classes,
                        spec.preprocess)


def download_cifar(name: str, data_dir: str | Path | None = None, *, url: str | None = None,
                   md5: str | None = None, progress: bool = True) -> Path:
    """Fetch the official archive, check its MD5, extract it and move the folder into place.

    Everything happens in a temporary folder inside ``data_dir``; a failed download, a wrong MD5
    or a broken archive leaves nothing behind. ``url`` defaults to ``$REXNET_DEPLOY_CIFAR_MIRROR``
    (a base URL) or the official site; ``md5`` to the official archive's.
    """
    from torchvision.datasets.utils import calculate_md5, download_url

    spec = _spec(name)
    root = data_root(data_dir)
    target = root / spec.folder
    if (target / spec.meta_file).is_file():
        return target
    if target.exists():
        raise UserError(f"{target} exists but is incomplete (no {spec.meta_file}): delete it and run again")
    ensure_writable_dir(root)
    url = url or os.environ.get("REXNET_DEPLOY_CIFAR_MIRROR", OFFICIAL_MIRROR).rstrip("/") + "/" + spec.archive
    md5 = md5 or spec.md5
    with tempfile.TemporaryDirectory(prefix=f".{spec.folder}.download-", dir=root) as tmp:
        archive = Path(tmp) / spec.archive
        if progress:
            print(f"downloading {url}")
        try:
            download_url(url, tmp, filename=spec.archive)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise UserError(f"could not download {url} ({exc}): check the network or set "
                            f"REXNET_DEPLOY_CIFAR_MIRROR to a mirror") from None
        got = calculate_md5(archive)
        if got != md5:
            raise UserError(f"{url} has MD5 {got}, expected {md5}: the download is corrupted or not the "
                            f"{spec.title} archive; nothing was kept, try again or use another mirror")
        extracted = Path(tmp) / "extracted"
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(extracted, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UserError(f"{url} is not a readable tar.gz ({exc}): nothing was kept, download it again") from None
        if not (extracted / spec.folder / spec.meta_file).is_file():
            raise UserError(f"{url} does not hold {spec.folder}/{spec.meta_file}: it is not the {spec.title} "
                            f"archive; nothing was kept")
        os.replace(extracted / spec.folder, target)
    return target


def load_format(name: str, spec: DatasetSpec, split: str, workers: int | None = None) -> ImageDataset:
    """The dataset-format table's loader for CIFAR-10/100 (``val`` is the test split)."""
    return load_cifar(name, split, spec.folder)


def format_preprocess(name: str) -> Preprocess:
    return _spec(name).preprocess


def format_classes(name: str) -> None:
    return None  # read from the dataset's own meta file


def download_format(name: str, folder: str | Path | None) -> None:
    download_cifar(name, folder)
