"""PyTorch eager (optionally ``torch.compile``d) runner."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Runner


class TorchRunner(Runner):
    backend = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", channels_last: bool = False,
                 compile: bool = False, threads: int | None = None) -> None:
        super().__init__("fp32")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.model = model.eval().to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.compiled = compile
        self._fn = torch.compile(self.model) if compile else self.model

    @torch.inference_mode()
    def infer_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a tensor already on the runner's device (what GPU timing needs)."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self._fn(batch)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return self.infer_tensor(x).float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "channels_last": self.channels_last,
                "compile": self.compiled, "threads": torch.get_num_threads()}
