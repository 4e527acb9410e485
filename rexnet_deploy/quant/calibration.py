"""Calibration sets: preprocessed images drawn from a training split, stratified by class and seeded.

A set is a tensor file (``images`` float32 NCHW already normalised, ``labels``, ``indices``) with a
manifest beside it that records the dataset, the drawn indices and the preprocessing. Quantization
compares that preprocessing with the one the ONNX model records and refuses a mismatch: a model
calibrated on differently normalised images gets wrong activation ranges without any error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artifacts import atomic_path, manifest_path, read_manifest, sha256_file, write_manifest
from ..data import Preprocess, load_dataset
from ..errors import UserError

DEFAULT_NUM_IMAGES = 512
# Activation ranges from a handful of images depend on which images were drawn more than on the data
# (with 10 classes this still leaves 3 per class); quantization refuses a smaller set.
MIN_CALIBRATION_IMAGES = 32
CALIB_DIR = Path("calib")


def default_calibration_path(dataset_name: str, num_images: int, seed: int) -> Path:
    return CALIB_DIR / f"{dataset_name}-{num_images}-s{seed}.pt"


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


def build_calibration_set(dataset_name: str, num_images: int = DEFAULT_NUM_IMAGES, seed: int = 0,
                          out: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """Draw ``num_images`` training images, preprocess them as evaluation does, save tensor + manifest.

    Returns the tensor file's path (default ``calib/<dataset>-<N>-s<seed>.pt``).
    """
    train = load_dataset(dataset_name, "train", data_dir)
    if not MIN_CALIBRATION_IMAGES <= num_images <= len(train):
        raise UserError(f"--num-images {num_images} is out of range: choose {MIN_CALIBRATION_IMAGES}…{len(train)} "
                        f"(the {dataset_name} training split has {len(train)} images)")
    out = Path(out) if out is not None else default_calibration_path(dataset_name, num_images, seed)
    indices = stratified_indices(train.labels, num_images, seed)
    images = train.preprocess(train.images[indices]).contiguous()
    labels = train.labels[indices].clone()
    with atomic_path(out) as tmp:
        torch.save({"images": images, "labels": labels, "indices": indices}, tmp)
    class_counts = torch.bincount(labels, minlength=train.num_classes).tolist()
    write_manifest(out, {
        "kind": "calibration-set", "dataset": train.name, "split": train.split, "num_images": num_images,
        "seed": seed, "stratified_by": "class", "class_counts": class_counts,
        "shape": list(images.shape), "dtype": "float32", "preprocess": train.preprocess.to_dict(),
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
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise UserError(f"calibration set {path} is not readable ({reason}): "
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
                            f"`rexnet-deploy calib --num-images {DEFAULT_NUM_IMAGES}`")
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


def onnx_preprocess(onnx_path: str | Path) -> Preprocess:
    """The preprocessing an exported model expects: its manifest's ``preprocess``, else its metadata's.

    The export stage records it in ``<model>.onnx.json`` and as a JSON string in ``metadata_props``.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX file {onnx_path} does not exist: check the path or run `rexnet-deploy export`")
    found: Any = None
    mpath = manifest_path(onnx_path)
    if mpath.is_file():
        found = read_manifest(onnx_path).get("preprocess")
    if found is None:
        from ..export import read_metadata

        try:
            found = read_metadata(onnx_path).get("preprocess")
        except Exception as exc:  # onnx raises DecodeError and friends for foreign files
            raise UserError(f"{onnx_path} is not a readable ONNX model ({type(exc).__name__}): re-export it") from None
    if found is None:
        raise UserError(f"{onnx_path} records no preprocessing (no `preprocess` in {mpath.name} or its metadata): "
                        f"re-export it with `rexnet-deploy export`")
    try:
        return Preprocess.from_dict(json.loads(found) if isinstance(found, str) else found)
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{onnx_path} records an unreadable preprocess {str(found)[:80]!r}: re-export it") from None
