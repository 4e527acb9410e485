"""``export --embed-preprocess``: an ONNX file that takes uint8 NHWC pixels and normalises inside its graph.

The nodes added in front of the float model are the host contract's own operations in its order (Cast to
float32, Transpose to NCHW, Div 255, Sub mean, Div std), so its logits match the float file fed by
:meth:`~rexnet_deploy.preprocess.Preprocess.to_input` to FP32 parity. The resize, crop or pad stays on the
host (:meth:`~rexnet_deploy.preprocess.Preprocess.pixels`): it depends on each image's size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..artifacts import atomic_path
from ..onnx_io import set_metadata
from ..preprocess import Preprocess


def embed_preprocess(onnx_path: str | Path, out_path: str | Path, preprocess: Preprocess) -> Path:
    """A copy of the float32 NCHW ``onnx_path`` whose input is uint8 ``[batch, size, size, 3]`` pixels."""
    model = onnx.load(str(onnx_path))
    graph = model.graph
    outer = graph.input[0].name
    inner = f"{outer}_normalized"
    for node in graph.node:
        node.input[:] = [inner if name == outer else name for name in node.input]
    size = preprocess.size
    graph.initializer.extend([
        numpy_helper.from_array(np.array(255.0, np.float32), "preprocess_scale"),
        numpy_helper.from_array(np.asarray(preprocess.mean, np.float32).reshape(1, 3, 1, 1), "preprocess_mean"),
        numpy_helper.from_array(np.asarray(preprocess.std, np.float32).reshape(1, 3, 1, 1), "preprocess_std")])
    steps = [helper.make_node("Cast", [outer], ["preprocess_float"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["preprocess_float"], ["preprocess_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Div", ["preprocess_nchw", "preprocess_scale"], ["preprocess_scaled"]),
             helper.make_node("Sub", ["preprocess_scaled", "preprocess_mean"], ["preprocess_centered"]),
             helper.make_node("Div", ["preprocess_centered", "preprocess_std"], [inner])]
    for position, node in enumerate(steps):
        graph.node.insert(position, node)
    graph.input[0].CopyFrom(helper.make_tensor_value_info(outer, TensorProto.UINT8, ["batch", size, size, 3]))
    set_metadata(model, {"preprocess": json.dumps(preprocess.with_embedded().to_dict())})
    onnx.checker.check_model(model, full_check=True)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


def pixels_of(images: np.ndarray, preprocess: Preprocess) -> np.ndarray | None:
    """The uint8 NHWC pixels normalised float32 NCHW ``images`` came from, or None when they did not come from
    pixels by this contract (random inputs): parity of an embedded file runs on the same images as the rest."""
    mean = np.asarray(preprocess.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocess.std, np.float32).reshape(1, 3, 1, 1)
    values = np.rint((images * std + mean) * 255.0)
    if values.min() < 0 or values.max() > 255:
        return None
    pixels = values.astype(np.uint8).transpose(0, 2, 3, 1)
    return pixels if np.array_equal(preprocess.to_input(pixels), images) else None
