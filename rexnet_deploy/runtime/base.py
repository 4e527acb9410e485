"""One interface for every runtime, so bench, parity checks and evaluation share them.

A runner takes normalised float32 NCHW numpy batches and returns float32 logits. Optional runtimes
(OpenVINO, TensorRT) are imported lazily inside their runner; a runner that cannot work here raises
:class:`RuntimeUnavailable` with the reason, which bench turns into a "skipped: reason" row.
"""

from __future__ import annotations

import abc

import numpy as np

from ..errors import UserError


class RuntimeUnavailable(UserError):
    """The runtime is not installed or has no device here (TensorRT without a GPU, say)."""


class Runner(abc.ABC):
    """Runs one artifact. Use as a context manager or call :meth:`close`."""

    #: short runtime name for tables: "torch", "onnxruntime", "openvino", "tensorrt"
    backend: str = ""

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch (float32 NCHW in, float32 [N, classes] out)."""

    def close(self) -> None:
        """Free the runtime's resources."""

    def describe(self) -> dict:
        """Facts recorded beside results (provider, threads, device)."""
        return {"backend": self.backend, "precision": self.precision}

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
