"""ONNX Runtime runner (CPU, CUDA or TensorRT execution provider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Runner, RuntimeUnavailable

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32") -> None:
        super().__init__(precision)
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"ONNX file {self.path} does not exist: check the path or run `rexnet-deploy export`")
        if device not in PROVIDERS:
            raise UserError(f"unknown device {device!r} for ONNX Runtime: choose cpu, cuda or tensorrt")
        wanted = PROVIDERS[device][0]
        if wanted not in ort.get_available_providers():
            raise RuntimeUnavailable(f"ONNX Runtime has no {wanted} in this install: install onnxruntime-gpu "
                                     f"on a machine with a CUDA GPU")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=PROVIDERS[device])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise UserError(f"{self.path} cannot be loaded by ONNX Runtime ({first}): re-export it") from None
        if device != "cpu" and self.session.get_providers()[0] != wanted:
            # onnxruntime-gpu silently falls back to the CPU when no GPU is present
            raise RuntimeUnavailable(f"{wanted} could not start here (no CUDA GPU?)")
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type

    def infer(self, batch: np.ndarray) -> np.ndarray:
        dtype = np.float16 if self.input_type == "tensor(float16)" else np.float32
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=dtype)})[0]
        return out.astype(np.float32, copy=False)

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "providers": self.session.get_providers(),
                "threads": self.threads}
