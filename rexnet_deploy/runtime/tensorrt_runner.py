"""TensorRT runner for engines written by ``rexnet-deploy build --backend tensorrt``.

Buffers are torch CUDA tensors (torch here is a CUDA build), so no pycuda/cuda-python is needed.
Before deserializing, the engine's manifest is checked against the running GPU and TensorRT
version: an engine from another GPU generation or TensorRT release is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..artifacts import read_manifest
from ..errors import UserError
from .base import Runner


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT8: torch.int8,
             trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise UserError(f"engine I/O type {dtype} is not supported by this runner: rebuild from rexnet-deploy's ONNX")
    return table[dtype]


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, device_index: int = 0) -> None:
        from ..engines.tensorrt import device_facts, engine_mismatch, require_tensorrt

        self.path = Path(engine_path)
        if not self.path.is_file():
            raise UserError(f"engine {self.path} does not exist: build it with `rexnet-deploy build`")
        self.manifest = read_manifest(self.path)
        trt = require_tensorrt()
        import torch

        facts = device_facts(device_index)
        mismatch = engine_mismatch(self.manifest, facts)
        if mismatch:
            raise UserError(mismatch)
        super().__init__(self.manifest.get("precision", "fp32"))
        self.facts = facts
        self.device = torch.device("cuda", device_index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not deserialize {self.path} (truncated or foreign file): rebuild it "
                            f"with rexnet-deploy build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a classifier engine "
                            f"has one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        profile = self.manifest.get("profile") or {}
        self.min_batch = profile.get("min", [1])[0]
        self.max_batch = profile.get("max", [None])[0]
        # a stream of our own: enqueueV3 on the legacy default stream adds synchronisations
        self.stream = torch.cuda.Stream(device=self.device)

    def infer_tensor(self, batch):
        """Logits for a CUDA tensor; asynchronous on the caller's stream (what GPU timing needs)."""
        import torch

        n = batch.shape[0]
        if n < self.min_batch or (self.max_batch is not None and n > self.max_batch):
            raise UserError(f"batch {n} is outside the engine's profile {self.min_batch}–{self.max_batch}: "
                            f"rebuild with --min-batch/--max-batch covering it")
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            x = batch.to(self.device, self.input_dtype).contiguous()
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                              device=self.device)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise UserError(f"TensorRT failed to run {self.path} on a batch of {n}: see its log above")
        caller.wait_stream(self.stream)
        out.record_stream(caller)  # allocated on our stream, consumed on the caller's
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        out = self.infer_tensor(x).float().cpu()  # .cpu() waits for the copy on the caller's stream
        return out.numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), **self.facts,
                "profile": self.manifest.get("profile")}
