"""PyTorch: a checkpoint run eagerly (optionally channels-last or ``torch.compile``d), on the CPU or a GPU.

The reference every other runtime is compared with; it builds nothing (the checkpoint is the artifact).
``mode="bf16"`` runs it under bf16 autocast where the hardware has native BF16 (a CPU with AVX-512 BF16,
AMX or ARM BF16; a GPU torch says supports it); elsewhere the runner is unavailable with the reason, since
emulated BF16 is slower than FP32 and would only mislead a speed table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import RuntimeUnavailable, UserError
from ..hardware import has_native_bf16
from .base import Runner

#: what a bench row may ask for with ``mode:``, and the precision each mode computes in
RUNNER_MODES: dict[str, str | None] = {"bf16": "bf16"}
NO_BF16 = "no native BF16 on this CPU"


def unavailable_reason(device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return "torch sees no CUDA GPU here: run this row on a machine with one"
    return None


def side_files(path: Path) -> list[Path]:
    return []


def bf16_unavailable_reason(device: str) -> str | None:
    """Why bf16 autocast would not run on native BF16 hardware on ``device``, None when it would."""
    if device.startswith("cuda"):
        return None if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no native BF16 on this GPU"
    return None if has_native_bf16() else NO_BF16


def open_runner(path: Path, device: str = "cpu", threads: int | None = None, *, channels_last: bool = False,
                compile: bool = False, mode: str | None = None) -> "TorchRunner":
    """The checkpoint's model (any layout ``load_model`` reads) in a :class:`TorchRunner`; ``meta`` is its metadata.

    ``mode="bf16"``: bf16 autocast (see the module docstring); :class:`RuntimeUnavailable` where not native.
    """
    from ..models import load_model

    _check_mode(mode, device)  # before loading: a skipped row should not cost a model load
    model, meta = load_model(path)
    runner = TorchRunner(model, device=device, channels_last=channels_last, compile=compile, threads=threads,
                         mode=mode)
    runner.meta = meta
    return runner


def _check_mode(mode: str | None, device: str) -> None:
    if mode is not None and mode not in RUNNER_MODES:
        raise UserError(f"unknown torch mode {mode!r}: choose {', '.join(RUNNER_MODES)} (or none)")
    if mode == "bf16":
        reason = bf16_unavailable_reason(device)
        if reason:
            raise RuntimeUnavailable(reason)


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", channels_last: bool = False,
                 compile: bool = False, threads: int | None = None, mode: str | None = None) -> None:
        _check_mode(mode, device)
        super().__init__(RUNNER_MODES[mode] if mode else "fp32")
        self.mode = mode
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self._fn = torch.compile(self.model) if compile else self.model

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @torch.inference_mode()
    def infer_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a tensor already on the runner's device (what GPU timing needs)."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.mode == "bf16":
            # autocast runs convolutions and matmuls in bf16 and keeps what its op policy lists in float32;
            # the logits come back as float32 so accuracy is measured exactly as for every other row
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self._fn(batch).float()
        return self._fn(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.infer_tensor(x).float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "channels_last": self.channels_last,
                "compile": self.compiled, "threads": torch.get_num_threads(), "mode": self.mode or "eager",
                "autocast": "bfloat16" if self.mode == "bf16" else None}


def recorded_metadata(path: Path) -> dict:
    """What a checkpoint records besides its weights (model, classes, preprocessing, metrics, provenance)."""
    from ..models.checkpoint import read_metadata

    return read_metadata(path)
