"""OpenVINO CPU runner for IR files written by ``rexnet-deploy build --backend openvino`` (or ONNX files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Runner, RuntimeUnavailable


def _ir_precision(model) -> str:
    """INT8 when the graph holds FakeQuantize (how OpenVINO reads Q/DQ), FP16 for half constants, else FP32."""
    ops = model.get_ordered_ops()
    if any(op.get_type_name() == "FakeQuantize" for op in ops):
        return "int8"
    if any(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "f16" for op in ops):
        return "fp16"
    return "fp32"


class OpenVinoRunner(Runner):
    """Compiles the model for the CPU in FP32 arithmetic (the precision lives in the file).

    OpenVINO's CPU default on BF16-capable Xeons is bf16 inference; that would change the numbers
    an FP32 file promises, so the hint is pinned to f32 (Q/DQ models still run their INT8 kernels).
    ``threads`` sets INFERENCE_NUM_THREADS. IR files use the compile cache folder beside them.
    """

    backend = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, cache_dir: str | Path | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable(f"OpenVINO is not installed ({exc}): pip install "
                                     f"'rexnet-deploy[openvino]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"OpenVINO model {self.path} does not exist: build it with "
                            f"`rexnet-deploy build --backend openvino`")
        if self.path.suffix not in (".xml", ".onnx"):
            raise UserError(f"{self.path} is not an OpenVINO IR (.xml) or ONNX file")
        if cache_dir is None and self.path.suffix == ".xml":
            from ..engines.openvino import openvino_cache_dir

            cache_dir = openvino_cache_dir(self.path)
        self.cache_dir = Path(cache_dir) if cache_dir and self._writable(Path(cache_dir)) else None
        self.core = ov.Core()
        try:
            # compiling from the Model object keys the cache on the model's content, not its path, so a
            # cache warmed before the bundle was renamed into place still hits
            model = self.core.read_model(str(self.path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise UserError(f"{self.path} cannot be read by OpenVINO ({first}): rebuild it") from None
        super().__init__(self._manifest_precision() or _ir_precision(model))
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.cache_dir:
            config["CACHE_DIR"] = str(self.cache_dir)
        self.compiled = self.core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    @staticmethod
    def _writable(folder: Path) -> bool:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(folder, os.W_OK)

    def _manifest_precision(self) -> str | None:
        manifest = self.path.with_name(self.path.name + ".json")
        try:
            return json.loads(manifest.read_text()).get("precision")
        except (OSError, json.JSONDecodeError):
            return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self.request = None
        self.compiled = None

    def describe(self) -> dict:
        import openvino as ov

        return {**super().describe(), "path": str(self.path), "device": "CPU", "threads": self.threads,
                "inference_precision": "f32", "cache_dir": str(self.cache_dir) if self.cache_dir else None,
                "openvino_version": ov.get_version()}
