"""The runtimes: one module each, and the one table every stage reads.

``BACKENDS`` is the single list of runtimes: ``open_runner`` finds a file's runner through it, the
``build`` and ``export`` commands take their choices and file names from it, bench suites resolve a
row's runtime and devices through it, and the pipeline names its rows by it. Adding a runtime is one
module (see :mod:`rexnet_deploy.backends.base` for what it defines) plus one row here.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RuntimeUnavailable, UserError
from .base import ROLES, Backend, BuildOption, Runner, TargetLayout, build_result
from .evaluate import evaluate, topk_correct
from .record import ArtifactRecord, read_artifact

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "rexnet_deploy.backends.torch", "checkpoint", (".pt", ".pth"), ("cpu", "cuda"),
            ("fp32",), needs_gpu=False, extra=None, packages=("torch", "torchvision"), row_tag="torch"),
    Backend("onnxruntime", "rexnet_deploy.backends.onnxruntime", "onnx", (".onnx",), ("cpu", "cuda", "tensorrt"),
            ("fp32", "fp16", "int8"), needs_gpu=False, extra=None,
            packages=("onnx", "onnxruntime", "onnxruntime-gpu", "onnxslim"), row_tag="ort", int8_layout="ort-cpu",
            kit_package="onnxruntime"),
    Backend("openvino", "rexnet_deploy.backends.openvino", "engine", (".xml",), ("cpu",),
            ("fp32", "fp16", "int8"), needs_gpu=False, extra="openvino", packages=("openvino", "nncf"),
            row_tag="openvino", file_tag=".openvino", int8_layout="ort-cpu", own_int8="nncf", kit_package="openvino"),
    Backend("tensorrt", "rexnet_deploy.backends.tensorrt", "engine", (".engine", ".plan"), ("cuda",),
            ("fp32", "fp16", "int8"), needs_gpu=True, extra="trt", packages=("tensorrt",), row_tag="trt",
            int8_layout="tensorrt"),
    Backend("executorch", "rexnet_deploy.backends.executorch", "engine", (".pte",), ("cpu",), ("fp32", "int8"),
            needs_gpu=False, extra="executorch", packages=("executorch", "torchao"), row_tag="executorch",
            builds_from="checkpoint", kit_package="executorch"),
)}


def get_backend(name: str) -> Backend:
    """The table row called ``name``, or one line listing the known ones."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def builders() -> list[Backend]:
    """The backends that build an engine from an ONNX file, in table order."""
    return [b for b in BACKENDS.values() if b.builds_from_onnx]


def engine_backends() -> list[Backend]:
    """The backends a bundle builds engines with, in table order: from its ONNX files or from the torch model."""
    return [b for b in BACKENDS.values() if b.builds_from_onnx or b.builds_from_checkpoint]


def backend_for(path: str | Path, role: str | None = None) -> Backend:
    """The backend that runs ``path``, by its suffix; ``role`` (how a suite row names it) breaks a tie."""
    suffix = Path(path).suffix.lower()
    matches = [b for b in BACKENDS.values() if suffix in b.suffixes]
    if not matches:
        known = ", ".join(s for b in BACKENDS.values() for s in b.suffixes)
        raise UserError(f"{path} is not a model file rexnet-deploy runs (expected {known}): pass an exported artifact")
    return next((b for b in matches if b.role == role), matches[0])


def int8_layouts() -> dict[str, TargetLayout]:
    """Every Q/DQ layout a backend declares, by name (the ``--target`` choices of ``quantize``)."""
    layouts: dict[str, TargetLayout] = {}
    for backend in BACKENDS.values():
        if backend.int8_layout and backend.int8_layout not in layouts:
            layout = backend.impl().INT8_LAYOUT
            layouts[layout.name] = layout
    return layouts


def open_runner(path: str | Path, device: str | None = None, threads: int | None = None, *,
                role: str | None = None, **options) -> Runner:
    """The runner for an artifact file, found through the table by its suffix.

    ``device``: one of the backend's devices (its default when None; a GPU request maps to ``cuda``).
    ``options`` go to the backend's runner (``channels_last``/``compile`` for torch). The precision is
    read from the file (manifest or graph); the runner's ``meta`` holds what the artifact records.
    """
    backend = backend_for(path, role)
    device = backend.device_for(device) if device else backend.devices[0]
    reason = backend.unavailable_reason(device)
    if reason:
        raise RuntimeUnavailable(reason)
    return backend.impl().open_runner(Path(path), device=device, threads=threads, **options)


def side_files(path: str | Path) -> list[Path]:
    """The files that belong to an artifact besides itself (empty for a single-file format)."""
    return backend_for(path).impl().side_files(Path(path))


def artifact_size_bytes(path: str | Path) -> int | None:
    """Bytes on disk of an artifact and its side files (OpenVINO's .bin); a folder counts all its files."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if not path.is_file():
        return None
    try:
        extra = side_files(path)
    except UserError:
        extra = []
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


__all__ = ["BACKENDS", "ROLES", "ArtifactRecord", "Backend", "BuildOption", "Runner", "RuntimeUnavailable",
           "TargetLayout", "artifact_size_bytes", "backend_for", "builders", "engine_backends", "evaluate",
           "get_backend", "int8_layouts", "open_runner", "read_artifact", "side_files", "build_result", "topk_correct"]
