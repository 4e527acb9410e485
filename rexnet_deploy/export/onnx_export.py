"""Torch → ONNX: dynamic batch, one self-contained file, cleaned with onnxslim, checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from ..artifacts import atomic_path

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
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


def set_metadata(graph: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace/add ``metadata_props`` entries (values stored as strings)."""
    existing = {p.key: p for p in graph.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or graph.metadata_props.add()
        prop.key, prop.value = key, str(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def onnx_precision(path: str | Path) -> str:
    """What precision an ONNX file carries: ``int8`` (Q/DQ nodes), ``fp16`` (half weights) or ``fp32``.

    The precision lives in the file (strongly typed builds take it from there), so builders and
    runners read it from the graph rather than trusting a file name.
    """
    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return "int8"
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in graph.initializer) or any(
            a.name == "to" and a.i == half for n in graph.node if n.op_type == "Cast" for a in n.attribute):
        return "fp16"
    return "fp32"
