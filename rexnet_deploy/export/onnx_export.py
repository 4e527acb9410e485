"""Torch → ONNX: dynamic batch, one self-contained file, cleaned with onnxslim, checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from ..artifacts import atomic_path
from ..onnx_io import INPUT_NAME, OUTPUT_NAME, set_metadata

DEFAULT_OPSET = 18


def export_onnx(model: nn.Module, path: str | Path, input_size: tuple[int, int, int], *,
                opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None, slim: bool = True) -> Path:
    """Export ``model`` (eval mode, CPU) to ``path`` with a dynamic batch axis.

    Uses the TorchScript exporter: with onnxslim it gives the same clean graph as the dynamo exporter
    (Conv/Pad/Add/..., no ScatterND) about ten times faster, and it honours the requested opset.
    ``metadata`` goes into ``metadata_props``.
    """
    path = Path(path)
    model = model.eval().cpu()
    dummy = torch.zeros(1, *input_size)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        graph = onnx.load(str(tmp))
        if slim:
            import onnxslim

            graph = onnxslim.slim(graph)
        set_metadata(graph, metadata or {})
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
    return path
