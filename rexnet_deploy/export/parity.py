"""Parity: does an exported artifact compute what the torch model computes, on real images?

Every ONNX file is compared with the torch model, every engine with the ONNX it was built from.
The limits depend on the precision the file carries: FP32 must match to 1e-4 and pick the same
class; FP16 and INT8 must mostly pick the same class (their accuracy is measured separately).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backends import open_runner, read_artifact
from ..data import DataSplit, load_split, recorded_spec, resolve_spec
from ..errors import CheckFailed, UserError
from ..onnx_io import input_shape, onnx_precision


@dataclass(frozen=True)
class ParityLimit:
    max_abs: float | None  # largest allowed |reference − candidate| over all logits; None: not checked
    max_rel: float  # the same divided by the largest |reference logit|
    min_agreement: float  # fraction of decisive images whose top-1 must agree
    tie: float  # an image whose top-2 margin is within this fraction of the largest |logit| is a tie


# The relative limit keeps the check meaningful for random weights, whose logits are ~1e-6 (an absolute 1e-4
# would pass anything there). A tie is a margin within the precision's own rounding noise: either class is
# a right answer there, so it counts neither for nor against top-1 agreement. Measured on a Fashion-MNIST
# rexnet-0.5 (85 % top-1): FP16 1e-3 relative and 100 % agreement, INT8 (per-channel Q/DQ) 0.06 and 99.6 %;
# another (87 %, large logits) had one INT8 logit of 128 images off by 0.275 with 99.2 % agreement. For INT8
# the largest single difference is thus only a guard against gross errors (a wrong scale); agreement decides.
PARITY_LIMITS = {
    "fp32": ParityLimit(max_abs=1e-4, max_rel=1e-3, min_agreement=1.0, tie=1e-3),
    # an FP32 engine built with TF32 (`build --tf32`): conv/GEMM inputs rounded to a 10-bit mantissa like FP16,
    # but float32 storage and accumulation, so its error sits below FP16's (not measured on a GPU yet)
    "tf32": ParityLimit(max_abs=None, max_rel=1e-2, min_agreement=0.99, tie=5e-3),
    "fp16": ParityLimit(max_abs=None, max_rel=2e-2, min_agreement=0.99, tie=1e-2),
    "int8": ParityLimit(max_abs=None, max_rel=0.5, min_agreement=0.95, tie=0.1),
}


@dataclass
class ParityBatch:
    """The images parity is checked on, and where they came from (recorded in every manifest)."""

    images: np.ndarray  # normalised float32 NCHW
    source: str


def make_parity_batch(split: DataSplit | None, input_size: tuple[int, int, int], num_images: int,
                      why_random: str | None = None, seed: int = 0) -> ParityBatch:
    """The first ``num_images`` test images (normalised), or seeded random normal inputs when there is no split."""
    if split is None:
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(num_images, *input_size, generator=gen).numpy()
        return ParityBatch(images, f"random normal inputs ({num_images}, seed {seed}): {why_random}")
    n = min(num_images, len(split))
    images = split.inputs(range(n)).numpy()
    return ParityBatch(images, f"{split.name} {split.split} split, first {n} images")


def onnx_parity_batch(onnx_path: str | Path, num_images: int = 128, data_dir: str | Path | None = None) -> ParityBatch:
    """Parity inputs for a file exported by rexnet-deploy: the validation images of the dataset it records
    (an ImageFolder tree's ``val/`` too, preprocessed as recorded) when that data is there and fits, else
    random inputs (the reason is recorded)."""
    record = read_artifact(onnx_path, "onnx")
    meta = record.meta
    try:
        input_size = tuple(int(v) for v in meta["input_size"])
        preprocess = record.require_preprocess()
    except (KeyError, ValueError, TypeError, UserError):
        dims = input_shape(onnx_path)[1:]
        if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
            raise UserError(f"{onnx_path} records no input size and its input is {dims}: export it with "
                            f"rexnet-deploy export") from None
        return make_parity_batch(None, dims, num_images, f"{Path(onnx_path).name} records no preprocessing")
    if not meta.get("dataset") or recorded_spec(meta) is None:
        return make_parity_batch(None, input_size, num_images, f"{Path(onnx_path).name} names no dataset")
    try:
        spec = resolve_spec(meta, data_dir=data_dir, origin=str(onnx_path))
        split = load_split(spec, "val")
    except UserError as exc:
        return make_parity_batch(None, input_size, num_images, f"{meta['dataset']} is not available ({exc})")
    if (3, split.preprocess.size, split.preprocess.size) != input_size:
        return make_parity_batch(None, input_size, num_images, f"{meta['dataset']} images do not fit {input_size}")
    return make_parity_batch(dataclasses.replace(split, preprocess=preprocess), input_size, num_images)


def compare_logits(reference: np.ndarray, candidate: np.ndarray, precision: str) -> dict:
    """Max abs/relative difference and top-1 agreement of two logit arrays, judged by ``precision``'s limits.

    Top-1 agreement counts the decisive images only (reference top-2 margin above the precision's
    ``tie`` fraction of the logit scale); the plain agreement over all images is reported beside it.
    """
    limit = PARITY_LIMITS[precision]
    if reference.shape != candidate.shape:
        return {"precision": precision, "passed": False, "num_images": int(reference.shape[0]),
                "reason": f"output shape {candidate.shape} differs from {reference.shape}"}
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    diff = np.abs(reference - candidate)
    scale = max(float(np.abs(reference).max()), np.finfo(np.float32).tiny)
    max_abs, max_rel = float(diff.max()), float(diff.max()) / scale
    agree = reference.argmax(1) == candidate.argmax(1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) > limit.tie * scale
    decisive_agreement = float(agree[decisive].mean()) if decisive.any() else 1.0
    passed = (decisive_agreement >= limit.min_agreement
              and (limit.max_abs is None or max_abs <= limit.max_abs)
              and max_rel <= limit.max_rel)
    return {
        "precision": precision,
        "passed": bool(passed),
        "num_images": int(reference.shape[0]),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "mean_abs_diff": float(diff.mean()),
        "logit_scale": scale,
        "top1_agreement": float(agree.mean()),
        "decisive_images": int(decisive.sum()),
        "decisive_top1_agreement": decisive_agreement,
        "limits": dataclasses.asdict(limit),
    }


@torch.no_grad()
def torch_logits(model: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    model = model.eval().cpu()
    out = [model(torch.from_numpy(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def check_parity(model: nn.Module, onnx_path: str | Path, images: np.ndarray, precision: str | None = None,
                 reference: np.ndarray | None = None) -> dict:
    """ONNX Runtime (CPU) on ``onnx_path`` vs the torch ``model`` on ``images``.

    ``precision`` defaults to what the file carries; ``reference`` (the torch logits) can be passed
    to avoid recomputing them for every variant.
    """
    precision = precision or onnx_precision(onnx_path)
    if reference is None:
        reference = torch_logits(model, images)
    with open_runner(onnx_path, role="onnx") as runner:
        candidate = runner.infer(images)
    return {**compare_logits(reference, candidate, precision), "reference": "torch", "runtime": runner.backend}


def require_parity(result: dict, what: str | Path,
                   fix: str = "nothing was written; report it with the ONNX file") -> dict:
    """Raise :class:`CheckFailed` (exit 1) with one line when a parity result did not pass."""
    if result["passed"]:
        return result
    if "reason" in result:
        detail = result["reason"]
    else:
        limits = result["limits"]
        detail = (f"max abs diff {result['max_abs_diff']:.3g}"
                  + (f" (limit {limits['max_abs']:g})" if limits["max_abs"] is not None else "")
                  + f", relative {result['max_rel_diff']:.3g} (limit {limits['max_rel']:g})"
                  + f", top-1 agreement {100 * result['decisive_top1_agreement']:.1f} % "
                    f"(limit {100 * limits['min_agreement']:.0f} %)")
    raise CheckFailed(f"parity check failed for {what} vs {result.get('reference', 'reference')}: {detail}; "
                      f"{fix}")
