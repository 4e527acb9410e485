"""Facts an ONNX file carries: its metadata, its precision, its Q/DQ layout, its input shape.

A leaf module (onnx, numpy and the standard library only), so that every layer — quantization, the
backends, bench — can read a file's facts without importing the layers above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                     "MatMulInteger"})


def set_metadata(graph: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace/add ``metadata_props`` entries (values stored as strings)."""
    existing = {p.key: p for p in graph.metadata_props}
    for key, value in metadata.items():
        prop = existing.get(key) or graph.metadata_props.add()
        prop.key, prop.value = key, str(value)


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict of strings."""
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in graph.metadata_props}


def onnx_precision(path: str | Path) -> str:
    """What precision an ONNX file carries: ``int8`` (Q/DQ nodes), ``fp16`` (half weights) or ``fp32``.

    The precision lives in the file (strongly typed builds take it from there), so builders and
    runners read it from the graph rather than trusting a file name.
    """
    graph = onnx.load(str(path), load_external_data=False).graph
    if {n.op_type for n in graph.node} & QDQ_OPS:
        return "int8"
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in graph.initializer) or any(
            a.name == "to" and a.i == half for n in graph.node if n.op_type == "Cast" for a in n.attribute):
        return "fp16"
    return "fp32"


def qdq_layout(path: str | Path) -> dict[str, Any]:
    """What Q/DQ a model holds: element types and zero points of activations, weights and biases.

    Weights/biases are the DequantizeLinear nodes fed by an initializer; activations are the
    QuantizeLinear outputs. ``float_ops`` counts, per op type, the compute nodes outside Q/DQ: no
    dequantized input, or an output that is not re-quantized. Used to record the layout and to check
    that a file suits the runtime it is built for.
    """
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    found: dict[str, dict[str, Any]] = {}

    def note(kind: str, data_type: str, zero: np.ndarray | None) -> None:
        entry = found.setdefault(kind, {"types": set(), "count": 0, "nonzero_zero_points": 0})
        entry["types"].add(data_type)
        entry["count"] += 1
        entry["nonzero_zero_points"] += int(zero is not None and np.any(zero != 0))

    dequantized = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    float_ops: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            requantized = all(consumers.get(o) and set(consumers[o]) == {"QuantizeLinear"} for o in node.output)
            if not (requantized and any(i in dequantized for i in node.input)):
                float_ops[node.op_type] = float_ops.get(node.op_type, 0) + 1
            continue
        zero = inits.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            value = inits[node.input[0]]
            note("bias" if value.dtype == np.int32 else "weights", str(value.dtype), zero)
        elif node.op_type == "QuantizeLinear":
            note("activations", str(zero.dtype) if zero is not None else "uint8", zero)
    return {**{kind: {**v, "types": sorted(v["types"])} for kind, v in found.items()},
            "float_ops": dict(sorted(float_ops.items()))}


def input_shape(path: str | Path) -> tuple[int | str, ...]:
    """The image input's shape, a symbolic dimension (the dynamic batch) as its name."""
    graph_input = onnx.load(str(path), load_external_data=False).graph.input[0]
    return tuple(d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim)
