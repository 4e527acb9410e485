"""Open the right runner for an artifact file, by its type."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Runner

ONNX_SUFFIXES = (".onnx",)
OPENVINO_SUFFIXES = (".xml",)
TENSORRT_SUFFIXES = (".engine", ".plan")


def open_runner(path: str | Path, device: str = "cpu", threads: int | None = None) -> Runner:
    """``.onnx`` → ONNX Runtime on ``device`` (cpu, cuda, tensorrt); OpenVINO IR ``.xml`` → OpenVINO on the CPU;
    ``.engine``/``.plan`` → TensorRT on the GPU. The precision is read from the file's manifest or graph."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in ONNX_SUFFIXES:
        from ..export.onnx_export import onnx_precision
        from .onnxruntime_runner import OnnxRuntimeRunner

        if not path.is_file():
            raise UserError(f"ONNX file {path} does not exist: check the path or run `rexnet-deploy export`")
        return OnnxRuntimeRunner(path, device=device, threads=threads, precision=onnx_precision(path))
    if suffix in OPENVINO_SUFFIXES:
        from .openvino_runner import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads)
    if suffix in TENSORRT_SUFFIXES:
        from .tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path)
    known = ", ".join(ONNX_SUFFIXES + OPENVINO_SUFFIXES + TENSORRT_SUFFIXES)
    raise UserError(f"{path} is not a model file rexnet-deploy runs (expected {known}): pass an exported artifact")
