"""FP16 ONNX: weights and activations in half precision, for strongly typed TensorRT builds.

Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (shipped with onnxruntime, so no
onnxconverter-common dependency). ONNX Runtime's CPU provider runs the result by casting the ops it
has no half kernels for back to float, which is enough to measure its accuracy here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from ..artifacts import atomic_path, sha256_file, write_manifest
from ..data import ImageDataset
from ..errors import UserError, first_line
from ..onnx_io import read_metadata, set_metadata
from .calibration import onnx_preprocess


def convert_fp16(onnx_path: str | Path, out_path: str | Path, keep_io_types: bool = True, *,
                 eval_set: ImageDataset | None = None, eval_images: int | None = None,
                 progress: bool = True) -> Path:
    """Convert an FP32 ONNX model to FP16 and write it with its manifest.

    ``keep_io_types`` keeps the input and logits float32 (casts inside the graph), so callers feed
    the same arrays as to the FP32 model. With ``eval_set``, FP32 and FP16 top-1/top-5 are measured
    on its first ``eval_images`` images and recorded.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel


    onnx_path, out_path = Path(onnx_path), Path(out_path)
    preprocess = onnx_preprocess(onnx_path)  # also checks that the file exists
    try:
        model = onnx.load(str(onnx_path))
        half = convert_float_to_float16(model, keep_io_types=keep_io_types)
        # the converter appends the input casts at the end of the node list; TensorRT's parser and
        # onnx.checker want topological order
        OnnxModel.graph_topological_sort(half.graph)
    except Exception as exc:  # onnx/ORT raise many types for graphs they cannot read or convert
        raise UserError(f"{onnx_path} cannot be converted to FP16 ({type(exc).__name__}: {first_line(exc)}): "
                        f"re-export it; if rexnet-deploy export wrote it, report it with the file") from None
    set_metadata(half, {**read_metadata(onnx_path), "precision": "fp16"})
    onnx.checker.check_model(half)
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))

    accuracy: dict[str, Any] | None = None
    if eval_set is not None:
        from ..backends import evaluate, open_runner

        with open_runner(onnx_path, role="onnx") as fp32_runner:
            fp32 = evaluate(fp32_runner, eval_set, limit=eval_images, progress=progress)
        with open_runner(out_path, role="onnx") as fp16_runner:
            fp16 = evaluate(fp16_runner, eval_set, limit=eval_images, progress=progress)
        accuracy = {"split": f"{eval_set.name}/{eval_set.split}", "num_images": fp32["num_images"],
                    "fp32": {"top1": fp32["top1"], "top5": fp32["top5"]},
                    "fp16": {"top1": fp16["top1"], "top5": fp16["top5"]}, "top1_drop": fp32["top1"] - fp16["top1"]}
    write_manifest(out_path, {
        "kind": "onnx-fp16", "precision": "fp16", "source_onnx": str(onnx_path),
        "source_sha256": sha256_file(onnx_path), "keep_io_types": keep_io_types,
        "converter": "onnxruntime.transformers.float16.convert_float_to_float16",
        "preprocess": preprocess.to_dict(), "accuracy": accuracy,
    })
    return out_path
