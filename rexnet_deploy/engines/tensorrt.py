"""TensorRT engines (10.x and 11.x) from FP32, FP16 or Q/DQ-INT8 ONNX files.

The precision lives in the ONNX file and the network is strongly typed: TensorRT 11 removed the
FP16/INT8 builder flags and implicit calibration, and a strongly typed build of a Q/DQ or half
ONNX works the same on 10 and 11. An engine is valid only for the TensorRT version and GPU compute
capability it was built with, so its manifest records both and :func:`engine_mismatch` refuses
anything else. ``tensorrt`` is imported lazily (the ``[trt]`` extra); the pure functions here
(profile shapes, manifest fields, mismatch, precision) run anywhere and are unit-tested on CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnx

from ..artifacts import atomic_path, sha256_file
from ..errors import UserError
from ..export.onnx_export import onnx_precision
from ..runtime.base import RuntimeUnavailable

DEFAULT_WORKSPACE_MIB = 1024
DEFAULT_BATCHES = (1, 64, 256)  # min, opt, max of the one optimization profile (opt clamped into min…max)


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT engines cannot be built or run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        return (f"TensorRT is not installed ({detail}): pip install 'rexnet-deploy[trt]' "
                f"(wheels from NVIDIA's index) on a machine with a CUDA GPU")
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False): build TensorRT engines on the GPU " \
               "that will run them"
    return None


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`RuntimeUnavailable` with the one-line reason."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    import tensorrt

    return tensorrt


def device_facts(device_index: int = 0) -> dict[str, str]:
    """The facts an engine is bound to: TensorRT version, GPU name, compute capability."""
    trt = require_tensorrt()
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    return {"tensorrt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}"}


def profile_shapes(input_shape: tuple[int, ...], min_batch: int | None = None, opt_batch: int | None = None,
                   max_batch: int | None = None) -> dict[str, list]:
    """min/opt/max input shapes of the one optimization profile; ``input_shape`` without the batch axis.

    Unset batches take :data:`DEFAULT_BATCHES`; an unset opt is clamped into the given min…max.
    """
    min_batch = DEFAULT_BATCHES[0] if min_batch is None else min_batch
    max_batch = DEFAULT_BATCHES[2] if max_batch is None else max_batch
    if opt_batch is None and isinstance(min_batch, int) and isinstance(max_batch, int):
        opt_batch = min(max(DEFAULT_BATCHES[1], min_batch), max_batch)
    for name, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} {value} must be a positive integer")
    if not min_batch <= opt_batch <= max_batch:
        raise UserError(f"batch profile {min_batch}/{opt_batch}/{max_batch} must satisfy min ≤ opt ≤ max: "
                        f"fix --min-batch/--opt-batch/--max-batch")
    if any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise UserError(f"the ONNX input has dynamic non-batch dimensions {tuple(input_shape)}: export it with a "
                        f"fixed image size (rexnet-deploy export does)")
    dims = list(input_shape)
    return {"min": [min_batch, *dims], "opt": [opt_batch, *dims], "max": [max_batch, *dims]}


def tensorrt_precision(onnx_path: str | Path) -> str:
    """The precision a strongly typed build of ``onnx_path`` runs in; refuses Q/DQ TensorRT cannot take.

    TensorRT's explicit quantization needs symmetric signed INT8 Q/DQ (zero point 0, int8). The
    ONNX Runtime CPU layout (uint8 activations with zero points) is refused with the fix.
    """
    precision = onnx_precision(onnx_path)
    if precision != "int8":
        return precision
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        raise UserError(f"{onnx_path} uses QOperator INT8 ops, which TensorRT cannot build: quantize it in Q/DQ "
                        f"format for TensorRT (rexnet-deploy quantize --target tensorrt)")
    from ..quant import qdq_layout

    layout = qdq_layout(onnx_path)
    for kind in ("activations", "weights"):
        found = layout.get(kind, {"types": ["int8"], "nonzero_zero_points": 0})
        if found["types"] != ["int8"] or found["nonzero_zero_points"]:
            raise UserError(f"{onnx_path} has {'/'.join(found['types'])} {kind} Q/DQ"
                            f"{' with nonzero zero points' if found['nonzero_zero_points'] else ''} (the ONNX "
                            f"Runtime CPU layout); TensorRT needs symmetric int8 Q/DQ: quantize with "
                            f"--target tensorrt")
    return precision


def engine_manifest_fields(onnx_path: str | Path, facts: dict[str, str], profile: dict[str, list], precision: str,
                           workspace_mib: int, timing_cache: str | Path | None) -> dict[str, Any]:
    """What an engine's manifest records beside the file hash (written by ``write_manifest``)."""
    onnx_path = Path(onnx_path)
    return {
        "kind": "engine",
        "backend": "tensorrt",
        "precision": precision,
        "strongly_typed": True,
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": sha256_file(onnx_path),
        "tensorrt_version": facts["tensorrt_version"],
        "gpu_name": facts["gpu_name"],
        "compute_capability": facts["compute_capability"],
        "profile": profile,
        "workspace_mib": workspace_mib,
        "timing_cache": str(timing_cache) if timing_cache else None,
    }


def engine_mismatch(manifest: dict[str, Any], facts: dict[str, str]) -> str | None:
    """One line saying why an engine built as ``manifest`` says cannot run on ``facts``; None if it can.

    TensorRT engines are bound to the exact TensorRT version and the GPU's compute capability; a
    different GPU name with the same capability runs (recorded, not refused).
    """
    missing = [k for k in ("tensorrt_version", "compute_capability") if not manifest.get(k)]
    name = manifest.get("artifact", "the engine")
    if missing:
        return f"{name}'s manifest lacks {', '.join(missing)}: rebuild on this GPU with rexnet-deploy build"
    built = f"{manifest.get('gpu_name', '?')} (compute {manifest['compute_capability']}) " \
            f"with TensorRT {manifest['tensorrt_version']}"
    here = f"{facts['gpu_name']} (compute {facts['compute_capability']}) with TensorRT {facts['tensorrt_version']}"
    if manifest["compute_capability"] != facts["compute_capability"] or \
            manifest["tensorrt_version"] != facts["tensorrt_version"]:
        return f"{name} was built on {built}, this is {here}: rebuild on this GPU with rexnet-deploy build"
    return None


def default_timing_cache(facts: dict[str, str]) -> Path:
    """One timing cache per TensorRT version and compute capability, shared by every build here."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rexnet-deploy"
    cc = facts["compute_capability"].replace(".", "")
    return root / f"tensorrt-{facts['tensorrt_version']}-sm{cc}.timing-cache"


def _strongly_typed_flags(trt: Any) -> int:
    # TensorRT 11 keeps STRONGLY_TYPED only as an ignored, deprecated member (strong typing is always on)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_tensorrt_engine(onnx_path: str | Path, out_path: str | Path, *, min_batch: int | None = None,
                          opt_batch: int | None = None, max_batch: int | None = None,
                          workspace_mib: int = DEFAULT_WORKSPACE_MIB,
                          timing_cache: str | Path | None = None) -> dict[str, Any]:
    """Build ``onnx_path`` into a serialized engine at ``out_path``; returns its manifest fields.

    The timing cache file (default: :func:`default_timing_cache`) is loaded before and saved after
    the build, so later builds of similar networks skip the kernel timing they share.
    """
    trt = require_tensorrt()
    facts = device_facts()
    onnx_path = Path(onnx_path)
    precision = tensorrt_precision(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].splitlines()[0][:160] if errors else "unknown error"
        raise UserError(f"TensorRT {trt.__version__} cannot parse {onnx_path} ({first}): re-export it "
                        f"with rexnet-deploy export")
    if network.num_inputs != 1:
        raise UserError(f"{onnx_path} has {network.num_inputs} inputs; a classifier ONNX has one image input")
    image = network.get_input(0)
    shapes = profile_shapes(tuple(image.shape)[1:], min_batch, opt_batch, max_batch)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(facts)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        # a cache from another TensorRT version or GPU: start a fresh one (it is overwritten below)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT {trt.__version__} could not build {onnx_path} as {precision} (see its log "
                        f"above): raise --workspace-mib or build the FP32 ONNX")
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return {**engine_manifest_fields(onnx_path, facts, shapes, precision, workspace_mib, cache_path),
            "input_name": image.name}
