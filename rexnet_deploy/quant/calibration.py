"""Calibration sets: preprocessed images drawn from a training split, stratified by class and seeded.

A set is a tensor file (``images`` float32 NCHW already normalised, ``labels``, ``indices``) with a
manifest beside it that records the dataset, the drawn indices and the preprocessing. Quantization
compares that preprocessing with the one the ONNX model records and refuses a mismatch: a model
calibrated on differently normalised images gets wrong activation ranges without any error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_path, manifest_path, read_manifest, sha256_file, write_manifest
from ..data import DatasetSpec, Preprocess, calibration_draw, dataset_spec, get_format
from ..data import stratified_indices as stratified_indices  # re-exported: its home before the data layer
from ..errors import UserError, first_line, require_file

DEFAULT_NUM_IMAGES = 512
# Activation ranges from a handful of images depend on which images were drawn more than on the data
# (with 10 classes this still leaves 3 per class); quantization refuses a smaller set.
MIN_CALIBRATION_IMAGES = 32
CALIB_DIR = Path("calib")


def default_calibration_path(dataset: str | DatasetSpec, num_images: int, seed: int) -> Path:
    """``calib/<dataset>-<N>-s<seed>.pt``; an ImageFolder's name also carries its folder, input size and a hash
    of its spec, so sets drawn from different trees or at different sizes never share a file."""
    if isinstance(dataset, DatasetSpec):
        if not dataset.is_folder:
            dataset = dataset.name
        else:
            import hashlib
            import json

            spec = {k: v for k, v in dataset.to_dict().items() if k != "classes"}
            digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
            folder = Path(dataset.folder or "tree").name or "tree"
            dataset = f"{dataset.name}-{folder}-{dataset.input_size}px-{digest}"
    return CALIB_DIR / f"{dataset}-{num_images}-s{seed}.pt"


def calibration_spec(dataset: str | DatasetSpec, data_dir: str | Path | None = None) -> DatasetSpec:
    """A spec as given, or a built-in dataset's by name (an ImageFolder needs a spec: it has no fixed size)."""
    if isinstance(dataset, DatasetSpec):
        return dataset
    if get_format(dataset).user_tree:
        raise UserError(f"a calibration set of {dataset} needs its input size: pass --checkpoint (its model's) or "
                        f"--input-size")
    return dataset_spec(dataset, data_dir)


def build_calibration_set(dataset: str | DatasetSpec, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0,
                          out: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """Draw ``num_images`` training images, preprocess them as evaluation does, save tensor + manifest.

    ``dataset``: a :class:`~rexnet_deploy.data.DatasetSpec` (any dataset, e.g. a checkpoint's), or a built-in
    dataset's name with ``data_dir``. The draw is stratified by class and seeded (``load_split(spec, "calib")``).
    Returns the tensor file's path (default :func:`default_calibration_path`). Nothing is written when the
    data is missing or holds fewer images than asked for.
    """
    spec = calibration_spec(dataset, data_dir)
    if num_images < MIN_CALIBRATION_IMAGES:
        raise UserError(f"--calibration-images {num_images} is too few: quantization needs at least "
                        f"{MIN_CALIBRATION_IMAGES} calibration images")
    train, indices = calibration_draw(spec, num_images, seed)  # what load_split(spec, "calib") draws
    drawn = train.select(indices)
    out = Path(out) if out is not None else default_calibration_path(spec, num_images, seed)
    images = drawn.inputs(range(len(drawn))).contiguous()
    labels = drawn.labels.clone()
    with atomic_path(out) as tmp:
        torch.save({"images": images, "labels": labels, "indices": indices}, tmp)
    class_counts = torch.bincount(labels, minlength=drawn.num_classes).tolist()
    write_manifest(out, {
        "kind": "calibration-set", "dataset": drawn.name, "split": drawn.split, "num_images": num_images,
        "seed": seed, "stratified_by": "class", "class_counts": class_counts,
        "shape": list(images.shape), "dtype": "float32", "preprocess": drawn.preprocess.to_dict(),
        "dataset_spec": train.spec.to_dict(), "classes": list(drawn.classes),
        "indices": indices.tolist(),
    })
    return out


@dataclass
class CalibrationSet:
    """A loaded calibration set, checked against its manifest."""

    path: Path
    images: torch.Tensor  # float32 [N, 3, H, W], normalised
    labels: torch.Tensor
    dataset: str
    preprocess: Preprocess
    manifest: dict[str, Any]
    manifest_sha256: str

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def load(cls, path: str | Path) -> "CalibrationSet":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"calibration set {path} does not exist: build one with "
                            f"`rexnet-deploy calib --dataset fashion_mnist`")
        manifest = read_manifest(path)
        if manifest.get("sha256") != sha256_file(path):
            raise UserError(f"calibration set {path} does not match its manifest (sha256 differs): "
                            f"rebuild it with `rexnet-deploy calib`")
        if "preprocess" not in manifest or "dataset" not in manifest:
            raise UserError(f"manifest {manifest_path(path)} records no dataset/preprocess: "
                            f"rebuild the set with `rexnet-deploy calib`")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            images, labels = data["images"], data["labels"]
        except Exception as exc:  # torch raises many types for foreign/truncated files
            raise UserError(f"calibration set {path} is not readable ({first_line(exc, 120)}): "
                            f"rebuild it with `rexnet-deploy calib`") from None
        if not isinstance(images, torch.Tensor) or images.dtype != torch.float32 or \
                images.dim() != 4 or images.shape[1:2] != (3,):
            raise UserError(f"calibration set {path} holds no float32 [N, 3, H, W] images: "
                            f"rebuild it with `rexnet-deploy calib`")
        return cls(path, images, labels, manifest["dataset"], Preprocess.from_dict(manifest["preprocess"]),
                   manifest, sha256_file(manifest_path(path)))

    def check_usable_for(self, model_preprocess: Preprocess, model_path: str | Path) -> None:
        """Refuse an empty/too-small set, or one preprocessed differently from the model's inputs."""
        if len(self) < MIN_CALIBRATION_IMAGES:
            raise UserError(f"calibration set {self.path} holds {len(self)} images, fewer than the "
                            f"{MIN_CALIBRATION_IMAGES} quantization needs: rebuild it with "
                            f"`rexnet-deploy calib --calibration-images {DEFAULT_NUM_IMAGES}`")
        if not self.preprocess.matches(model_preprocess) or self.images.shape[-1] != model_preprocess.size:
            raise UserError(f"calibration set {self.path} was preprocessed as {_describe(self.preprocess)} but "
                            f"{model_path} expects {_describe(model_preprocess)}: build a set from the model's "
                            f"dataset with `rexnet-deploy calib`")

    def batches(self, batch_size: int, limit: int | None = None) -> list[np.ndarray]:
        """The images as float32 numpy batches (what ONNX Runtime takes)."""
        images = self.images[:limit].numpy()
        return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]


def _describe(p: Preprocess) -> str:
    return f"{p.size}px mean {[round(v, 4) for v in p.mean]} std {[round(v, 4) for v in p.std]}"


def onnx_preprocess(onnx_path: str | Path, required: bool = True) -> Preprocess | None:
    """The preprocessing contract an exported model records (:func:`~rexnet_deploy.backends.read_artifact`).

    A file that records none is refused, or None when ``required`` is False; an unreadable record is refused.
    """
    from ..backends import read_artifact

    onnx_path = require_file(onnx_path, "ONNX file", "check the path or run `rexnet-deploy export`")
    record = read_artifact(onnx_path)
    return record.require_preprocess() if required else record.preprocess
