"""INT8 post-training quantization: FP32 ONNX → Q/DQ ONNX with ONNX Runtime's quantization tools.

The Q/DQ layout depends on where the model will run (shared/reference/DEPLOY.md, measured here):
ONNX Runtime's x86 kernels are fast with uint8 activations and 2.9× slower than FP32 with int8 ones;
TensorRT's explicit quantization takes only symmetric int8 Q/DQ. Calibration ranges are computed
once per call and reused for every fallback attempt. When the top-1 drop on the evaluation split
exceeds the budget, the units (ReXNet modules) whose quantization alone hurts the logits most are
left in float, one at a time, until the budget holds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm.auto import tqdm

from ..artifacts import atomic_path, sha256_file, write_manifest
from ..backends import TargetLayout, evaluate, open_runner
from ..data import DataSplit
from ..errors import UserError, first_line
from ..onnx_io import qdq_layout, read_metadata, set_metadata
from .calibration import CalibrationSet, onnx_preprocess
from .layouts import METHODS, targets

CALIBRATION_BATCH = 64
# ORT's calibrators keep every intermediate output of the images they are given; tiny-cifar-0.5 at 32×32
# has 72 MB of them per image (37 GB for 512), so images go in chunks of about this many bytes.
CALIBRATION_CHUNK_BYTES = 1 << 30
# Units are ranked on this many calibration images (no labels needed: the FP32 logits are the reference).
SENSITIVITY_IMAGES = 128


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def _quantizable_op_types() -> list[str]:
    """The op types quantize_static quantizes by default (both of ORT's registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


# ReXNet node names follow the module path (timm layout): /stem/conv/Conv, /features/features.3/se/fc1/Conv,
# /features/features.2/Pad (the partial residual), /head/fc/Gemm. A unit is the module a node belongs to.
_UNIT = re.compile(r"^/(?:features/)?(stem|head|features\.\d+(?:/(?:conv_exp|conv_dw|se|act_dw|conv_pwl))?)/")


def unit_of(node_name: str) -> str:
    """The ReXNet module a node belongs to (its own name for graphs with other naming)."""
    match = _UNIT.match(node_name)
    return match.group(1) if match else node_name


def quantizable_units(model: onnx.ModelProto) -> dict[str, list[str]]:
    """``{unit: [node names]}`` over the nodes quantize_static would quantize, in graph order."""
    op_types = set(_quantizable_op_types())
    units: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type in op_types:
            units.setdefault(unit_of(node.name), []).append(node.name)
    return units


def prepare_for_quantization(onnx_path: Path, out_path: Path) -> Path:
    """ORT's quantization pre-processing: graph optimization (BN folding etc.) and shape inference.

    Symbolic shape inference is skipped: these CNNs have static shapes but the batch, ONNX's own shape
    inference covers them, and the symbolic pass took 17 s on this CPU without changing the graph.
    """
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(onnx_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # ORT raises its own types for graphs it cannot optimize
        raise UserError(f"{onnx_path} cannot be prepared for quantization ({type(exc).__name__}: {first_line(exc)}): "
                        f"re-export it; if rexnet-deploy export wrote it, report it with the file") from None
    return out_path


class _CalibrationReader:
    """ORT CalibrationDataReader over a calibration set's batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = batches
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def calibrate(model_path: Path, calib: CalibrationSet, method: str, layout: TargetLayout, cache_path: Path,
              progress: bool = True) -> Path:
    """Activation ranges for every quantizable tensor, saved where quantize_static reads its cache.

    Images go in chunks of about ``CALIBRATION_CHUNK_BYTES`` of intermediate outputs; the calibrators
    merge the ranges/histograms of successive chunks.
    """
    from onnxruntime.quantization import create_calibrator
    from onnxruntime.quantization.calibrate import save_tensors_data

    # Percentile defaults to symmetric ranges; uint8 activations need the asymmetric (real) range.
    options = {"symmetric": layout.symmetric_activations} if method != "minmax" else {}
    model = onnx.load(str(model_path), load_external_data=False)
    per_chunk = max(1, CALIBRATION_CHUNK_BYTES // _activation_bytes_per_image(model))
    batches = calib.batches(min(CALIBRATION_BATCH, per_chunk))
    chunk = max(1, per_chunk // len(batches[0]))
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="calibrate-") as work:
        calibrator = create_calibrator(model_path, _quantizable_op_types(), str(Path(work) / "augmented.onnx"),
                                       _calibration_method(method), extra_options=options)
        # the histogram calibrators print their progress to stdout; ours is the tqdm bar
        with contextlib.redirect_stdout(io.StringIO()):
            for start in tqdm(range(0, len(batches), chunk), desc=f"calibrate {method}", unit="chunk",
                              disable=not progress, leave=False):
                calibrator.collect_data(_CalibrationReader(input_name, batches[start:start + chunk]))
            save_tensors_data(calibrator.compute_data(), cache_path)
    return cache_path


def _activation_bytes_per_image(model: onnx.ModelProto) -> int:
    """Bytes of all intermediate tensors for one image (shapes from ONNX shape inference, batch axis 1)."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    total = 0
    for value in inferred.value_info:
        dims = [d.dim_value or 1 for d in value.type.tensor_type.shape.dim]
        total += int(np.prod(dims)) * 4
    return max(total, 1)


def build_qdq(prepared: Path, ranges: Path, out_path: Path, layout: TargetLayout, method: str, *,
              nodes_to_exclude: Sequence[str] = (), nodes_to_quantize: Sequence[str] = ()) -> Path:
    """One quantize_static call on cached ranges (no calibration inference)."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    # quantize_static logs a "consider pre-processing" warning on every call; ours is pre-processed.
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        quantize_static(str(prepared), str(out_path), None, quant_format=QuantFormat.QDQ,
                        nodes_to_exclude=list(nodes_to_exclude), nodes_to_quantize=list(nodes_to_quantize),
                        calibrate_method=_calibration_method(method), calibration_cache_path=str(ranges),
                        **layout.quantize_options())
    finally:
        logger.setLevel(level)
    return out_path


def _logits(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    with open_runner(path, role="onnx") as runner:
        return np.concatenate([runner.infer(b) for b in batches])


def relative_logit_error(reference: np.ndarray, other: np.ndarray) -> float:
    """‖other − reference‖² / ‖reference‖²: how far quantization moves the logits."""
    return float(((other - reference) ** 2).sum() / max(float((reference ** 2).sum()), 1e-12))


def rank_sensitivity(prepared: Path, ranges: Path, layout: TargetLayout, method: str, calib: CalibrationSet,
                     work: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Quantize one unit at a time; rank units by how far that alone moves the logits from FP32."""
    units = quantizable_units(onnx.load(str(prepared)))
    batches = calib.batches(CALIBRATION_BATCH, SENSITIVITY_IMAGES)
    reference = _logits(prepared, batches)
    ranked = []
    for unit, nodes in tqdm(units.items(), desc="sensitivity", unit="unit", disable=not progress, leave=False):
        path = build_qdq(prepared, ranges, work / "one-unit.onnx", layout, method, nodes_to_quantize=nodes)
        ranked.append({"unit": unit, "nodes": nodes,
                       "logit_error": relative_logit_error(reference, _logits(path, batches))})
    return sorted(ranked, key=lambda r: -r["logit_error"])


@dataclass(frozen=True)
class AccuracyBudget:
    """How an INT8 file is held to FP32's top-1: both measured on the first ``eval_images`` images of ``eval_set``
    (all by default); when INT8 loses more than ``max_drop`` points, the most sensitive units are kept in float,
    one more at a time (at most ``max_float_units``), until the budget holds."""

    eval_set: DataSplit
    eval_images: int | None = None
    max_drop: float = 0.5
    max_float_units: int = 16

    def check(self) -> None:
        if self.max_drop < 0 or self.max_float_units < 0 or (self.eval_images is not None and self.eval_images < 1):
            raise UserError(f"max_drop ({self.max_drop}) and max_float_units ({self.max_float_units}) must be ≥ 0 "
                            f"and eval_images ({self.eval_images}) ≥ 1: fix the option")

    def accuracy(self, path: Path, progress: bool) -> dict[str, float]:
        with open_runner(path, role="onnx") as runner:
            return evaluate(runner, self.eval_set, limit=self.eval_images, progress=progress)


@dataclass(frozen=True)
class _Quantization:
    """One quantization in progress: the prepared FP32 graph, its ranges, the layout, and where to work."""

    source: Path
    prepared: Path
    ranges: Path
    layout: TargetLayout
    method: str
    calib: CalibrationSet
    work: Path
    progress: bool

    def build(self, float_units: list[dict[str, Any]], path: Path | None = None) -> Path:
        """The Q/DQ model with ``float_units`` left in float."""
        path = path or self.work / f"int8-float{len(float_units)}.onnx"
        return build_qdq(self.prepared, self.ranges, path, self.layout, self.method,
                         nodes_to_exclude=[n for u in float_units for n in u["nodes"]])


def quantize_onnx(onnx_path: str | Path, calibration: str | Path, out_path: str | Path, *, method: str = "minmax",
                  target: str = "ort-cpu", budget: AccuracyBudget | None = None, progress: bool = True) -> Path:
    """Quantize an FP32 ONNX model to INT8 Q/DQ for ``target``; write it and its manifest.

    With ``budget``, FP32 and INT8 top-1/top-5 are measured and the most sensitive units fall back to float until
    INT8 is within its ``max_drop`` (:class:`AccuracyBudget`). The manifest says which stayed float and whether
    the budget held. Returns ``out_path``.
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if method not in METHODS:
        raise UserError(f"unknown calibration method {method!r}: choose {', '.join(METHODS)}")
    layouts = targets()
    if target not in layouts:
        raise UserError(f"unknown quantization target {target!r}: choose {', '.join(layouts)}")
    if budget is not None:
        budget.check()
    layout = layouts[target]
    preprocess = onnx_preprocess(onnx_path)
    calib = CalibrationSet.load(calibration)
    calib.check_usable_for(preprocess, onnx_path)
    if budget is not None and not budget.eval_set.preprocess.matches(preprocess):
        raise UserError(f"evaluation split {budget.eval_set.name}/{budget.eval_set.split} is preprocessed "
                        f"differently from {onnx_path}: evaluate on the model's dataset")

    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        work = Path(tmp)
        prepared = prepare_for_quantization(onnx_path, work / "prepared.onnx")
        job = _Quantization(onnx_path, prepared, calibrate(prepared, calib, method, layout, work / "ranges.json",
                                                           progress), layout, method, calib, work, progress)
        accuracy: dict[str, Any] | None = None
        float_units: list[dict[str, Any]] = []
        ranked: list[dict[str, Any]] = []
        if budget is None:
            candidate = job.build([], work / "int8.onnx")
        else:
            candidate, accuracy, float_units, ranked = _quantize_within_budget(job, budget)
        _copy_metadata(onnx_path, candidate, {"precision": "int8", "quant_target": target, "quant_method": method})
        with atomic_path(out_path) as staged:
            shutil.copyfile(candidate, staged)

    write_manifest(out_path, {
        "kind": "onnx-int8", "precision": "int8", "source_onnx": str(onnx_path),
        "source_sha256": sha256_file(onnx_path),
        "calibration": {"path": str(calib.path), "manifest_sha256": calib.manifest_sha256, "dataset": calib.dataset,
                        "num_images": len(calib)},
        "method": method, "target": target, "layout": {**layout.to_dict(), "found": qdq_layout(out_path)},
        "preprocess": preprocess.to_dict(), "pre_processing": "onnxruntime quant_pre_process (skip_symbolic_shape)",
        "float_units": [{"unit": u["unit"], "logit_error": u["logit_error"]} for u in float_units],
        "nodes_in_float": [n for u in float_units for n in u["nodes"]],
        "accuracy": accuracy,
        # relative logit error of quantizing each unit alone (computed only when the fallback ran)
        "sensitivity": [{"unit": r["unit"], "logit_error": r["logit_error"]} for r in ranked],
    })
    return out_path


def _quantize_within_budget(job: _Quantization, budget: AccuracyBudget,
                            ) -> tuple[Path, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Quantize everything; if top-1 drops more than the budget allows, rank the units and fall back.

    Returns (model, accuracy record, units kept in float, the sensitivity ranking or [] when not needed).
    """
    def build(units: list[dict[str, Any]]) -> tuple[Path, dict[str, float]]:
        path = job.build(units)
        return path, budget.accuracy(path, job.progress)

    fp32 = budget.accuracy(job.source, job.progress)
    candidate, int8 = build([])
    steps = [{"float_units": [], "top1": int8["top1"], "top5": int8["top5"]}]
    float_units: list[dict[str, Any]] = []
    ranked: list[dict[str, Any]] = []
    if fp32["top1"] - int8["top1"] > budget.max_drop and budget.max_float_units > 0:
        ranked = rank_sensitivity(job.prepared, job.ranges, job.layout, job.method, job.calib, job.work, job.progress)
        candidate, int8, float_units = _fall_back(ranked[:budget.max_float_units], fp32["top1"] - budget.max_drop,
                                                  (candidate, int8), steps, build)
    drop = fp32["top1"] - int8["top1"]
    split = budget.eval_set
    accuracy = {"split": f"{split.name}/{split.split}", "num_images": fp32["num_images"],
                "fp32": {"top1": fp32["top1"], "top5": fp32["top5"]},
                "int8": {"top1": int8["top1"], "top5": int8["top5"]}, "top1_drop": drop, "max_drop": budget.max_drop,
                "within_budget": drop <= budget.max_drop, "fallback_steps": steps}
    return candidate, accuracy, float_units, ranked


def _fall_back(ranked: list[dict[str, Any]], top1_floor: float, start: tuple[Path, dict[str, float]],
               steps: list[dict[str, Any]], build: Callable[[list[dict[str, Any]]], tuple[Path, dict[str, float]]],
               ) -> tuple[Path, dict[str, float], list[dict[str, Any]]]:
    """Keep the first k ranked units in float for k = 1, 2, …; stop once top-1 reaches the floor.

    Returns (model, its accuracy, the units it keeps in float): the first that reached the floor, else the
    most accurate one tried, ``start`` (nothing in float) included. ``steps`` records every attempt.
    """
    best = (*start, [])
    for k in range(1, len(ranked) + 1):
        path, acc = build(ranked[:k])
        steps.append({"float_units": [r["unit"] for r in ranked[:k]], "top1": acc["top1"], "top5": acc["top5"]})
        if acc["top1"] > best[1]["top1"]:
            best = (path, acc, ranked[:k])
        if acc["top1"] >= top1_floor:
            return path, acc, ranked[:k]
    return best


def _copy_metadata(source: Path, target: Path, extra: dict[str, str]) -> None:
    """Carry the FP32 model's metadata (preprocess, classes, …) into the quantized file, plus ``extra``.

    ORT's pre-processing drops ``metadata_props``; later stages read the preprocessing from them.
    """
    model = onnx.load(str(target))
    del model.metadata_props[:]
    set_metadata(model, {**read_metadata(source), **extra})
    onnx.save(model, str(target))
