"""OpenVINO on the CPU: the ONNX converted to IR (``.xml`` + ``.bin``) plus a warmed compile cache, and its runner.

The IR is what ships to edge CPUs (any OpenVINO ≥ the one that wrote it reads it); the cache folder
beside it (``<name>.ovcache/``) holds compiled blobs for this OpenVINO and CPU, so a later
``bench --engine X.xml`` starts in a fraction of the compile time. An FP32/FP16 build keeps the ONNX's
precision (no silent FP16 compression); it runs the ``ort-cpu`` Q/DQ file as it is (OpenVINO reads Q/DQ
as FakeQuantize). ``build(..., precision="int8", calibration=images)`` is OpenVINO's native INT8 instead:
NNCF post-training quantization of the FP32 model (preset MIXED) in one of two scopes (``int8_scope``,
:data:`INT8_SCOPES`): every convolution (the SE gates kept in float), or the 1×1 convolutions only (depthwise,
the SE pooling and gate and the activations left to the float arithmetic the CPU runs fastest), with NNCF's
accuracy-controlled quantization as the fallback when a validation set and budget are given.

The runner runs a file as OpenVINO's own ``benchmark_app`` does: a static shape per batch size (cached), the
latency hint at batch 1 and the throughput hint from batch 2, the compiled model's optimal number of requests
fed through an asynchronous queue, each request the whole batch. Its ``mode`` picks the arithmetic: the tool's
default is f32 for every file (what FP32 promises), ``bf16`` is OpenVINO's bf16 inference precision where the
CPU has native BF16 (for an NNCF IR: its INT8 kernels with the float parts in BF16), and ``defaults`` is what a
user gets without this tool, the peer (the file compiled with OpenVINO's defaults and the hint for the batch).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import read_manifest_if_any, sha256_file
from ..errors import RuntimeUnavailable, UserError, first_line, require_file
from ..hardware import has_native_bf16
from .base import BuildOption, Runner
from .common import ORT_CPU_LAYOUT

#: the Q/DQ files it runs as they are (OpenVINO reads the pairs as FakeQuantize): ONNX Runtime's CPU layout
INT8_LAYOUT = ORT_CPU_LAYOUT
#: what a bench row may ask for with ``mode:``, and the precision each mode computes in (None: the file's)
RUNNER_MODES: dict[str, str | None] = {"bf16": "bf16", "defaults": None}
#: the modes that also apply to its own INT8 (NNCF) files: the INT8 kernels stay INT8 and what NNCF left in
#: float (SE gates, SiLU, pooling) computes in that precision. Measured on an AVX-512 BF16 EPYC, batch 64, against
#: the old synchronous single-request peer: 1.32x it where f32 float parts gave 1.18x and BF16 alone 1.13x, at the
#: same top-1
OWN_INT8_MODES: dict[str, str] = {"bf16": "bf16"}
#: the scopes of its own INT8 (``build(precision="int8", int8_scope=...)``), the first the default: what NNCF
#: quantizes. At 224×224 on an AVX-512 BF16 EPYC (benchmark_app, batch 16) INT8 of every convolution ran at
#: 0.82–0.86× OpenVINO's BF16 defaults (the memory-bound depthwise convolutions, SE and SiLU around the INT8
#: kernels), INT8 of the 1×1 convolutions only at 1.04–1.15×: `--precision auto` tries both
INT8_SCOPES: dict[str, str] = {
    "all": "every convolution and the classifier (preset MIXED); the squeeze-and-excitation gates kept in float",
    "pointwise": "the 1×1 convolutions (the SE's two included) and the classifier only; depthwise convolutions, "
                 "the SE pooling and gate, activations left in float",
}
#: what build takes beyond the paths: two flags of `rexnet-deploy build`, then options only code passes
BUILD_OPTIONS = (
    BuildOption("precision", "OpenVINO: quantize the FP32 ONNX itself (NNCF, preset MIXED, SE gates kept in float) "
                             "instead of converting the file as it is; needs --calibration",
                "the ONNX file's own precision", str, choices=("int8",)),
    BuildOption("int8_scope", "OpenVINO --precision int8: what NNCF quantizes: all (every convolution) or pointwise "
                              "(the 1×1 convolutions only; depthwise, SE pooling/gates and activations left in float); "
                              "recorded in the manifest", next(iter(INT8_SCOPES)), str, choices=tuple(INT8_SCOPES)),
    # what only code has: the calibration set's images (the build command loads them from --calibration), NNCF's knobs
    BuildOption("calibration", "float32 NCHW calibration images for precision int8", cli=False),
    BuildOption("calibration_source", "the calibration set file, named in the manifest", cli=False),
    BuildOption("subset_size", "calibration images NNCF uses", 300, cli=False),
    BuildOption("fast_bias_correction", "NNCF's fast bias correction instead of the full one", False, cli=False),
    BuildOption("validation", "(images, labels): quantize with NNCF's accuracy control when plain INT8 loses more "
                              "than max_drop", cli=False),
    BuildOption("max_drop", "top-1 points plain INT8 may lose before accuracy control", 0.5, cli=False),
    BuildOption("deploy_batch", "the batch the compile cache is warmed for", 1, cli=False),
)
#: what the ``pointwise`` scope leaves out, by OpenVINO op type (SiLU is Swish after ov.convert_model)
POINTWISE_IGNORED_TYPES = ("GroupConvolution", "Multiply", "Sigmoid", "Swish", "ReduceMean")
#: batches from this size on get the throughput hint (streams, several requests in flight); batch 1 the latency
#: hint (see hint_for_batch)
THROUGHPUT_MIN_BATCH = 2
NO_BF16 = "no native BF16 on this CPU"
_INSTALL = "pip install 'rexnet-deploy[openvino]'"
_MAX_COMPILED = 8  # compiled batch sizes kept alive at once (evaluation + a sweep need about six)


def unavailable_reason(device: str = "cpu") -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"OpenVINO is not installed ({first_line(exc, 100)}): {_INSTALL}"
    return None


def nncf_unavailable_reason() -> str | None:
    """Why NNCF (OpenVINO's INT8 quantizer) cannot run here, None when it can."""
    try:
        import nncf  # noqa: F401
    except ImportError as exc:
        return f"NNCF is not installed ({first_line(exc, 100)}): {_INSTALL}"
    return None


def _openvino() -> Any:
    reason = unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    import openvino

    return openvino


def cache_dir_for(xml_path: str | Path) -> Path:
    xml_path = Path(xml_path)
    return xml_path.with_name(xml_path.stem + ".ovcache")


def side_files(path: Path) -> list[Path]:
    return [path.with_suffix(".bin")] if path.suffix.lower() == ".xml" else []


# ------------------------------------------------------------------------------------------------ build

def se_gate_scope(model: Any) -> dict[str, list[str]]:
    """The nodes of every squeeze-and-excitation gate in an OpenVINO model: ``{gate Multiply: [its branch]}``.

    A gate is a Multiply fed by a Sigmoid whose input path reaches back to a ReduceMean (the SE pool):
    pool → fc1 → act → fc2 → Sigmoid → Multiply. Found by structure rather than by name, so pruned models
    and other ReXNet layouts are covered. SiLU (``x * sigmoid(x)``) has no pool on that path and is not a gate.
    """
    gates: dict[str, list[str]] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Multiply":
            continue
        for source in (i.get_source_output().get_node() for i in op.inputs()):
            if source.get_type_name() != "Sigmoid":
                continue
            branch, todo, pooled = [source], [source], False
            while todo and len(branch) < 32:  # an SE branch is a handful of ops; stop on anything larger
                node = todo.pop()
                for parent in (i.get_source_output().get_node() for i in node.inputs()):
                    kind = parent.get_type_name()
                    if kind in ("Constant", "Parameter") or parent in branch:
                        continue
                    branch.append(parent)
                    if kind == "ReduceMean":
                        pooled = True
                    else:
                        todo.append(parent)
            if pooled:
                gates[op.get_friendly_name()] = [n.get_friendly_name() for n in branch]
    return gates


def _check_calibration(images: Any, model: Any) -> np.ndarray:
    """The calibration images as float32 NCHW matching the model's input, or one line saying what is wrong."""
    if not isinstance(images, np.ndarray) or images.ndim != 4 or len(images) == 0:
        got = f"shape {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise UserError(f"OpenVINO INT8 needs calibration images as a float32 [N, C, H, W] array, got {got}: "
                        f"load them from the calibration set (rexnet_deploy.quant.CalibrationSet)")
    want = [d.get_length() if d.is_static else None for d in model.inputs[0].get_partial_shape()][1:]
    if any(w is not None and w != g for w, g in zip(want, images.shape[1:])):
        raise UserError(f"calibration images are {list(images.shape[1:])} but the model takes {want}: "
                        f"use a calibration set drawn for this model's input size")
    return np.ascontiguousarray(images, dtype=np.float32)


def _top1(ov: Any, model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 (percent) of an OpenVINO model in f32 arithmetic, the precision the runner measures FP32 rows in."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    hits = 0
    for start in range(0, len(images), 256):
        logits = compiled(images[start:start + 256])[0]
        hits += int((np.argmax(logits, 1) == labels[start:start + 256]).sum())
    return 100.0 * hits / len(images)


def _nncf_int8(ov: Any, onnx_path: Path, calibration: Any, *, subset_size: int, fast_bias_correction: bool,
               validation: tuple[np.ndarray, np.ndarray] | None, max_drop: float,
               scope: str) -> tuple[Any, dict[str, Any]]:
    """NNCF post-training INT8 of the FP32 ONNX in ``scope`` (:data:`INT8_SCOPES`); returns (quantized model, what
    was done for the manifest)."""
    reason = nncf_unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # its per-node INFO lines would bury the command's own output
    # convert_model (not read_model) fuses x*sigmoid(x) into Swish, so NNCF treats SiLU as one activation
    # and quantizes its output only, instead of putting int8 on both inputs of an elementwise multiply
    model = ov.convert_model(str(onnx_path))
    images = _check_calibration(calibration, model)
    subset = min(int(subset_size), len(images))
    if subset < 1:
        raise UserError(f"--subset-size {subset_size} must be at least 1")
    gates = se_gate_scope(model)
    if scope == "pointwise":
        # validate=False: a model without one of these types (no SE, ReLU instead of SiLU) is still quantized
        ignored = nncf.IgnoredScope(types=list(POINTWISE_IGNORED_TYPES), validate=False)
        rule = {"rule": INT8_SCOPES[scope], "types": list(POINTWISE_IGNORED_TYPES)}
    else:
        # the SE gates stay in float: a sigmoid gate in [0, 1] multiplied into every channel loses most of its
        # resolution in int8, and small SE/SiLU nets are where default PTQ collapses (anchors.md §0.4–0.5)
        ignored = nncf.IgnoredScope(names=sorted({n for g, branch in gates.items() for n in (g, *branch)}),
                                    validate=False)
        rule = {"rule": "squeeze-and-excitation gates (pool → fc → Sigmoid → Multiply) kept in float",
                "gates": len(gates), "names": ignored.names}
    settings = {"preset": nncf.QuantizationPreset.MIXED, "subset_size": subset,
                "fast_bias_correction": bool(fast_bias_correction), "ignored_scope": ignored}
    calib = nncf.Dataset([images[i:i + 1] for i in range(len(images))])  # one image per item: NNCF's statistics
    quantized = nncf.quantize(model, calib, **settings)
    record: dict[str, Any] = {
        "tool": "nncf", "nncf_version": nncf.__version__, "api": "nncf.quantize", "preset": "mixed",
        "scope": scope, "scope_rule": INT8_SCOPES[scope],
        "scheme": "int8: weights symmetric per-channel, activations asymmetric per-tensor (preset MIXED)",
        "subset_size": subset, "calibration_images": len(images),
        "fast_bias_correction": bool(fast_bias_correction),
        "ignored_scope": rule,
        "silu": "fused to Swish by ov.convert_model before quantization: its output is quantized, not its inputs",
        "accuracy_control": None,
    }
    if validation is not None:
        record["accuracy_control"], quantized = _accuracy_budget(ov, nncf, model, quantized, calib, validation,
                                                                 max_drop, settings)
        record["api"] = record["accuracy_control"]["api"]
    record["fake_quantize_ops"] = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    return quantized, record


def _accuracy_budget(ov: Any, nncf: Any, model: Any, quantized: Any, calib: Any,
                     validation: tuple[np.ndarray, np.ndarray], max_drop: float,
                     settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Keep the plain INT8 model if it loses ≤ ``max_drop`` top-1 points on ``validation``; else
    ``nncf.quantize_with_accuracy_control``, which reverts the most harmful layers to float until it fits."""
    images, labels = validation
    images = _check_calibration(images, model)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise UserError(f"validation has {len(images)} images but {len(labels)} labels: pass matching arrays")
    if max_drop < 0:
        raise UserError(f"--max-drop {max_drop} must be ≥ 0 top-1 points")
    fp32, first = _top1(ov, model, images, labels), _top1(ov, quantized, images, labels)
    info: dict[str, Any] = {"api": "nncf.quantize", "max_drop_points": max_drop, "validation_images": len(images),
                            "fp32_top1": fp32, "int8_top1": first, "final_top1": first, "restored": False}
    if fp32 - first <= max_drop:
        return info, quantized

    def validate(compiled: Any, items: Any) -> tuple[float, list[float]]:
        # per-image correctness, so NNCF can rank layers on its subsets of the validation set
        hits = [float(np.argmax(compiled(image)[0], 1)[0] == label) for image, label in items]
        return float(np.mean(hits)) if hits else 0.0, hits

    val = nncf.Dataset([(images[i:i + 1], labels[i]) for i in range(len(images))], lambda item: item[0])
    restored = nncf.quantize_with_accuracy_control(
        model, calib, val, validate, max_drop=max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE,
        preset=settings["preset"], subset_size=settings["subset_size"],
        fast_bias_correction=settings["fast_bias_correction"], ignored_scope=settings["ignored_scope"])
    info.update(api="nncf.quantize_with_accuracy_control", restored=True,
                final_top1=_top1(ov, restored, images, labels))
    return info, restored


def build(onnx_path: str | Path, out_path: str | Path, *, precision: str | None = None,
          calibration: np.ndarray | None = None, calibration_source: str | None = None, subset_size: int = 300,
          fast_bias_correction: bool = False, validation: tuple[np.ndarray, np.ndarray] | None = None,
          max_drop: float = 0.5, deploy_batch: int | None = None, int8_scope: str | None = None) -> dict[str, Any]:
    """Convert ``onnx_path`` to IR at ``out_path`` (.xml, .bin beside) and warm its compile cache.

    ``precision``: None or the ONNX's own precision converts the file as it is; ``"int8"`` from an FP32
    ONNX quantizes it with NNCF on ``calibration`` (float32 NCHW images, preprocessed: the same calibration
    set file every runtime's INT8 uses; ``calibration_source`` names it in the manifest). ``subset_size``:
    calibration images NNCF uses (its default 300); ``fast_bias_correction`` False is NNCF's full bias
    correction, what small SE/SiLU nets need (anchors.md §0.4). ``validation`` (images, labels) with
    ``max_drop`` (top-1 points): when plain INT8 loses more, quantize with NNCF's accuracy control instead.
    ``int8_scope``: what NNCF quantizes (:data:`INT8_SCOPES`; default ``all``), recorded in the manifest.
    ``deploy_batch``: the batch the cache is warmed for (default 1). Returns the manifest fields; the caller
    writes the manifest and checks parity.
    """
    from ..onnx_io import onnx_precision  # here: `build --help` reads BUILD_OPTIONS without loading onnx

    ov = _openvino()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if deploy_batch is not None and int(deploy_batch) < 1:
        raise UserError(f"--batch {deploy_batch} must be at least 1")
    if int8_scope is not None and int8_scope not in INT8_SCOPES:
        raise UserError(f"unknown INT8 scope {int8_scope!r}: choose {' or '.join(INT8_SCOPES)}")
    source_precision = onnx_precision(onnx_path)
    precision = precision or source_precision
    if int8_scope is not None and (precision, source_precision) != ("int8", "fp32"):
        raise UserError(f"--int8-scope applies to NNCF's int8 build from an FP32 ONNX, not a {precision} build of "
                        f"{onnx_path.name} ({source_precision}): drop it, or ask for precision int8 of the FP32 ONNX")
    fields: dict[str, Any] = {}
    if precision == "int8" and source_precision == "fp32":
        if calibration is None:
            raise UserError("OpenVINO INT8 (NNCF) needs calibration images: pass the calibration set "
                            "(`--calibration calib/<set>.pt`)")
        model, fields["quantization"] = _nncf_int8(ov, onnx_path, calibration, subset_size=subset_size,
                                                   fast_bias_correction=fast_bias_correction,
                                                   validation=validation, max_drop=max_drop,
                                                   scope=int8_scope or next(iter(INT8_SCOPES)))
        fields["quantization"]["calibration_source"] = calibration_source
    elif precision != source_precision:
        raise UserError(f"OpenVINO builds {onnx_path.name} ({source_precision}) as it is, or int8 (NNCF) from an "
                        f"FP32 ONNX; {precision} from {source_precision} is not a build: pass the {precision} ONNX")
    elif calibration is not None or validation is not None:
        raise UserError(f"calibration/validation apply to an int8 build from an FP32 ONNX, not a {precision} "
                        f"build of {onnx_path.name}: drop them or ask for precision int8")
    else:
        model = ov.Core().read_model(str(onnx_path))
        if source_precision == "int8":
            fields["quantization"] = {"tool": "onnxruntime Q/DQ", "layout": INT8_LAYOUT.name,
                                      "note": "OpenVINO reads the Q/DQ pairs as FakeQuantize"}
    ov.save_model(model, str(out_path), compress_to_fp16=False)
    weights = out_path.with_suffix(".bin")
    dims = list(model.inputs[0].get_partial_shape())
    with OpenVinoRunner(out_path) as runner:  # compiling once fills the cache folder for the deploy batch
        if all(d.is_static for d in dims[1:]):  # an image size left dynamic has nothing to warm
            runner.infer(np.zeros([int(deploy_batch or 1), *[d.get_length() for d in dims[1:]]], np.float32))
    return {
        "kind": "engine",
        "backend": "openvino",
        "precision": precision,
        "source_precision": source_precision,
        "device": "CPU",
        "inference_precision": "f32",
        "deploy_batch": deploy_batch,
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": sha256_file(onnx_path),
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "size_bytes": weights.stat().st_size},
        "cache_dir": cache_dir_for(out_path).name,
        "openvino_version": ov.get_version(),
        "input_shape": [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()],
        **fields,
    }


# ------------------------------------------------------------------------------------------------ runner

def open_runner(path: Path, device: str = "cpu", threads: int | None = None, *,
                mode: str | None = None) -> "OpenVinoRunner":
    return OpenVinoRunner(path, threads=threads, mode=mode)


#: CPU plugin layer types (after fusing) → profile layer kind; a Convolution is 1×1 or the stem by its weights
KIND_OF_LAYER = {
    "GroupConvolution": "depthwise conv", "FullyConnected": "classifier", "MatMul": "classifier",
    "ReduceMean": "pooling (SE, head)", "Reduce": "pooling (SE, head)", "Pooling": "pooling (SE, head)",
    "Pad": "pad + add (partial residual)", "Concat": "pad + add (partial residual)",
    "FakeQuantize": "quantize / dequantize", "Convert": "quantize / dequantize",
    "Reorder": "layout changes", "Transpose": "layout changes", "Reshape": "layout changes",
    "Subgraph": "activations (SiLU, sigmoid, ReLU6)", "Eltwise": "activations (SiLU, sigmoid, ReLU6)",
}
#: what a CPU plugin kernel name ends with (``brgconv_avx512_dw_bf16``) → the precision it computes in
KERNEL_PRECISION = {"i8": "int8", "u8": "int8", "bf16": "bf16", "f16": "fp16", "fp16": "fp16", "f32": "fp32",
                    "fp32": "fp32"}


def _layer_kind(layer: dict[str, Any]) -> str:
    if layer["layer_type"] == "Convolution":
        kernel = layer.get("weight_shape", [0, 0, 1, 1])[2:]
        return "1×1 conv" if all(k == 1 for k in kernel) else "k×k conv (stem)"
    if layer["layer_type"] == "Eltwise" and layer["name"].endswith("Add"):
        return "pad + add (partial residual)"
    return KIND_OF_LAYER.get(layer["layer_type"], "other")


def _weight_layers(model: Any) -> dict[str, dict[str, Any]]:
    """Weight shape and MACs per image of each Convolution, GroupConvolution and MatMul of a read model."""
    layers: dict[str, dict[str, Any]] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        weight, out = op.get_input_partial_shape(1), op.get_output_partial_shape(0)
        if not weight.is_static or not all(d.is_static for d in list(out)[1:]):
            continue
        weight = [int(d.get_length()) for d in weight]
        if kind == "MatMul":  # the classifier: one multiply-add per weight
            macs = math.prod(weight)
        else:  # each output element: one multiply-add per weight of its filter (a group's, for GroupConvolution)
            per_output = math.prod(weight[2:] if kind == "GroupConvolution" else weight[1:])
            macs = math.prod(int(d.get_length()) for d in list(out)[1:]) * per_output
        layers[op.get_friendly_name()] = {"weight_shape": weight, "macs_per_image": macs}
    return layers


def _ir_precision(model) -> str:
    """INT8 when the graph holds FakeQuantize (how OpenVINO reads Q/DQ), FP16 for half constants, else FP32."""
    ops = model.get_ordered_ops()
    if any(op.get_type_name() == "FakeQuantize" for op in ops):
        return "int8"
    if any(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "f16" for op in ops):
        return "fp16"
    return "fp32"


def hint_for_batch(batch: int) -> str:
    """The performance hint a batch size is compiled with: LATENCY for one image, THROUGHPUT from 2 images.

    Batch 2–7 takes THROUGHPUT too: any batch above one asks for img/s, which streams with a request each give
    (the latency hint leaves all but one core's stream idle on a multi-stream CPU), and THROUGHPUT is
    ``benchmark_app``'s own default hint; the latency hint answers the one-image-at-a-time caller.
    """
    return "THROUGHPUT" if batch >= THROUGHPUT_MIN_BATCH else "LATENCY"


class _Compiled:
    """One batch size's compiled model and what was chosen for it.

    ``queue``: an ``openvino.AsyncInferQueue`` of the compiled model's optimal number of requests, each taking
    the whole batch (what :meth:`OpenVinoRunner.submit` feeds; None for one request, which runs synchronously as
    ``benchmark_app -hint latency`` does); ``request``: one request of its own for ``infer``, whose logits are read.
    """

    def __init__(self, ov: Any, compiled: Any, facts: dict[str, Any]) -> None:
        self.compiled = compiled
        self.facts = facts
        self.request = compiled.create_infer_request()
        self.queue = ov.AsyncInferQueue(compiled, facts["requests"]) if facts["requests"] > 1 else None
        # the batch each busy queue request reads: shared with OpenVINO, not copied, so kept alive until it is done
        self.held: dict[int, np.ndarray] = {}


def _type_name(value: Any) -> str:
    """``f32``/``bf16`` for an OpenVINO element type property, its text for anything else."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class OpenVinoRunner(Runner):
    """Runs a model on the CPU as OpenVINO's own ``benchmark_app`` runs it, in the arithmetic ``mode`` asks for.

    Each batch size gets its own compile at a static input shape of that batch (a dynamic shape cost ~16 % here),
    with the performance hint for it (:func:`hint_for_batch`: LATENCY at batch 1, THROUGHPUT from 2) and the
    requests the compiled model reports optimal (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``, one per stream), each
    taking the whole batch. :meth:`submit` feeds them through ``openvino.AsyncInferQueue``, so every stream stays
    busy (the bench's throughput timing, as ``benchmark_app -hint throughput``); :meth:`infer` runs one batch on
    a request of its own and returns its logits (evaluation, parity, ``predict``).

    ``mode``: None (the tool's) computes every file in f32 (OpenVINO's CPU default on a BF16-capable CPU is bf16,
    which would change the numbers an FP32 file promises; Q/DQ and NNCF models still run their INT8 kernels);
    ``bf16`` is bf16 inference precision, only where the CPU has native BF16 (an FP32 file, or an NNCF IR whose
    INT8 kernels stay INT8); ``defaults`` is what a user gets without this tool, the peer: the file compiled with
    OpenVINO's defaults and the hint for the batch, nothing else (no precision, no thread count, since
    ``benchmark_app`` takes no ``-nthreads`` beside a hint; no compile cache). ``threads`` sets
    INFERENCE_NUM_THREADS in the other modes. IR files use the compile cache folder beside them.
    """

    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, cache_dir: str | Path | None = None, *,
                 mode: str | None = None) -> None:
        ov = _openvino()
        self.path = require_file(path, "OpenVINO model", "build it with `rexnet-deploy build --backend openvino`")
        if self.path.suffix not in (".xml", ".onnx"):
            raise UserError(f"{self.path} is not an OpenVINO IR (.xml) or ONNX file")
        if mode is not None and mode not in RUNNER_MODES:
            raise UserError(f"unknown OpenVINO mode {mode!r}: choose {', '.join(RUNNER_MODES)} (or none)")
        if mode == "bf16" and not has_native_bf16():
            raise RuntimeUnavailable(NO_BF16)
        self.mode = mode
        if cache_dir is None and self.path.suffix == ".xml" and mode != "defaults":
            cache_dir = cache_dir_for(self.path)
        self.cache_dir = Path(cache_dir) if cache_dir and self._writable(Path(cache_dir)) else None
        self.core = ov.Core()
        try:
            # compiling from the Model object keys the cache on the model's content, not its path, so a
            # cache warmed before the bundle was renamed into place still hits
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises a bare RuntimeError for a foreign or truncated file
            raise UserError(f"{self.path} cannot be read by OpenVINO ({first_line(exc)}): rebuild it") from None
        manifest = read_manifest_if_any(self.path)
        file_precision = manifest.get("precision") or _ir_precision(self.model)
        # An ONNX Runtime Q/DQ file keeps its dynamic batch: compiled for a static batch, OpenVINO 2026.4 ran one
        # at 40.4 % top-1 where ONNX Runtime and OpenVINO's dynamic compile gave 87.9 % (AVX2 CPU, no VNNI;
        # likely u8×s8 saturation, which NNCF's models are built to avoid). NNCF IRs compile static, always:
        # OpenVINO 2026.4 segfaults running one with a dynamic batch on an AMX CPU (Xeon, amx_int8). The IR's
        # own rt_info says NNCF made it, since build compiles it before its manifest is written.
        self.nncf = bool(self.model.has_rt_info(["nncf"]))
        if mode == "bf16" and file_precision != "fp32" and not (self.nncf and mode in OWN_INT8_MODES):
            raise UserError(f"mode bf16 runs an FP32 file, or an NNCF INT8 IR's float parts, in BF16 arithmetic; "
                            f"{self.path.name} is {file_precision}: pass the FP32 file or the NNCF IR")
        # an NNCF IR in bf16 mode is still an INT8 file: its rows compare with INT8 rows
        super().__init__("bf16" if mode == "bf16" and file_precision == "fp32" else file_precision)
        self.meta = manifest
        self.static = file_precision != "int8" or self.nncf
        self.requested_threads = int(threads) if threads else None
        self.set_threads = None if mode == "defaults" else self.requested_threads
        self.inference_precision = {"bf16": "bf16", "defaults": None}.get(mode or "", "f32")
        self._compiled: OrderedDict[tuple[int, ...], _Compiled] = OrderedDict()
        self._busy: _Compiled | None = None  # the compiled model whose queue submit() last fed
        self.compiled_for: dict[str, dict[str, Any]] = {}  # batch → what it was compiled as (kept for describe)
        self.threads = self.set_threads or int(self.core.get_property("CPU", "INFERENCE_NUM_THREADS")) or None

    @staticmethod
    def _writable(folder: Path) -> bool:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(folder, os.W_OK)

    def _config(self, hint: str, cache: bool = True) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": hint}
        if self.inference_precision:
            config["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.set_threads:
            config["INFERENCE_NUM_THREADS"] = self.set_threads
        if cache and self.cache_dir:
            config["CACHE_DIR"] = str(self.cache_dir)
        return config

    def _compile(self, shape: Sequence[int], config: dict[str, Any]) -> Any:
        model = self.model
        if self.static:
            import openvino as ov

            model = self.model.clone()  # the read model stays dynamic for the next batch size
            model.reshape({0: ov.PartialShape([int(d) for d in shape])})
        return self.core.compile_model(model, "CPU", config)

    def _facts(self, batch: int, compiled: Any, shape: list[int], config: dict[str, Any]) -> dict[str, Any]:
        return {"batch": batch,
                "input_shape": shape if self.static else str(self.model.inputs[0].get_partial_shape()),
                "static": self.static, "request_batch": batch,
                "requests": max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))),
                "hint": str(compiled.get_property("PERFORMANCE_HINT")),
                "streams": int(compiled.get_property("NUM_STREAMS")),
                "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
                "inference_precision": _type_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
                "config": {k: v for k, v in config.items() if k != "CACHE_DIR"}}

    def _for_batch(self, shape: tuple[int, ...]) -> _Compiled:
        """The compiled model for this input shape: compiled on first use, then reused."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        self.wait_all()  # nothing in flight while compiled models are added and evicted
        ov = _openvino()
        batch = shape[0]
        config = self._config(hint_for_batch(batch))
        compiled = self._compile(list(shape), config)
        entry = _Compiled(ov, compiled, self._facts(batch, compiled, list(shape), config))
        if self.mode == "bf16" and entry.facts["inference_precision"] != "bf16":
            # OpenVINO quietly compiles f32 where it has no bf16 kernels: the row would be FP32 called BF16
            raise RuntimeUnavailable(f"OpenVINO compiled {entry.facts['inference_precision']}, not bf16, on this "
                                     f"CPU: it has no native BF16 kernels for it")
        self._compiled[shape] = entry
        self.compiled_for[str(batch)] = entry.facts
        while len(self._compiled) > _MAX_COMPILED:
            self._compiled.popitem(last=False)
        return entry

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        entry = self._for_batch(tuple(x.shape))
        entry.request.infer({0: x}, share_inputs=True)
        return np.array(entry.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def submit(self, batch: np.ndarray) -> None:
        """Start one whole batch on the next free request of its compiled model's queue (blocking until one is
        free), its logits unread: as ``benchmark_app`` feeds its requests. One request runs it synchronously."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        entry = self._for_batch(tuple(x.shape))
        if entry.queue is None:
            entry.request.infer({0: x}, share_inputs=True)
            return
        if self._busy is not entry:
            self.wait_all()
            self._busy = entry
        slot = entry.queue.get_idle_request_id()  # the request start_async takes next: blocks until one is free
        entry.held[slot] = x
        entry.queue.start_async({0: x}, share_inputs=True)

    def wait_all(self) -> None:
        if self._busy is not None:
            self._busy.queue.wait_all()
            self._busy.held.clear()
            self._busy = None

    def requests_in_flight(self, batch_size: int) -> int:
        facts = self.compiled_for.get(str(batch_size))
        return facts["requests"] if facts else 1

    def profile_layers(self, batch: int, runs: int, warmup: int = 5) -> list[dict[str, Any]]:
        """OpenVINO's per-layer counters (PERF_COUNT) for a static ``batch`` in this runner's arithmetic.

        One request, the latency hint, every thread: the layers are those the CPU plugin runs after fusing,
        each with its kernel (``brgconv_avx512_dw_bf16``: the kernel names the precision it computes in).
        Convolutions and MatMuls also carry their weight shape and MACs per image, from the read model; each
        layer its kind (``KIND_OF_LAYER``) and the precision its kernel's name says.
        """
        ov = _openvino()
        dims = self.model.inputs[0].get_partial_shape()
        if not all(d.is_static for d in list(dims)[1:]):
            raise UserError(f"{self.path} has a dynamic image size ({dims}): export it with a fixed input size")
        shape = [int(batch), *(int(d.get_length()) for d in list(dims)[1:])]
        compiled = self._compile(shape, {**self._config("LATENCY", cache=False), "PERF_COUNT": True})
        request = compiled.create_infer_request()
        inputs = np.random.default_rng(0).standard_normal(shape).astype(np.float32)  # timing does not read values
        records: dict[str, dict[str, Any]] = {}
        for step in range(warmup + runs):
            request.infer({0: inputs})
            if step < warmup:
                continue
            for layer in request.profiling_info:
                if layer.status != ov.ProfilingInfo.Status.EXECUTED:
                    continue  # fused into a neighbour: its time is that layer's
                record = records.setdefault(layer.node_name, {"name": layer.node_name, "layer_type": layer.node_type,
                                                              "kernel": layer.exec_type, "ms": 0.0})
                record["ms"] += layer.real_time.total_seconds() * 1e3 / runs
        weights = _weight_layers(self.model)
        layers = [{**r, **weights.get(r["name"], {})} for r in records.values()]
        return [{**layer, "kind": _layer_kind(layer),
                 "precision": KERNEL_PRECISION.get(layer["kernel"].rsplit("_", 1)[-1].lower(), "other")}
                for layer in layers]

    def release(self) -> None:
        self.wait_all()
        self._compiled.clear()  # ~0.2 GB per batch size for rexnet_100 at 224; `compiled_for` keeps the facts

    def close(self) -> None:
        self.release()

    def describe(self) -> dict:
        import openvino as ov

        return {**super().describe(), "path": str(self.path), "device": "CPU", "mode": self.mode or "tool",
                "threads": self.threads, "threads_requested": self.requested_threads,
                **({"threads_note": "the peer sets no thread count (benchmark_app takes none beside a hint)"}
                   if self.mode == "defaults" else {}),
                "inference_precision": self.inference_precision or "openvino default",
                "api": "submit: openvino.AsyncInferQueue of OPTIMAL_NUMBER_OF_INFER_REQUESTS requests, each the whole "
                       "batch (one request: synchronous); infer: one request of its own",
                "hints": {"1": "LATENCY", f"{THROUGHPUT_MIN_BATCH}+": "THROUGHPUT"},
                "static_shapes": self.static,
                **({} if self.static else {"why_dynamic": "an ONNX Runtime Q/DQ file: static-shape compiles of "
                                           "these lost most of their accuracy (OpenVINO 2026.4, AVX2)"}),
                "compiled": dict(self.compiled_for), "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                "openvino_version": ov.get_version()}
