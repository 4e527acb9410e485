"""OpenVINO CPU engines: the ONNX converted to IR (``.xml`` + ``.bin``) plus a warmed compile cache.

The IR is what ships to edge CPUs (any OpenVINO ≥ the one that wrote it reads it); the cache
folder beside it (``<name>.ovcache/``) holds the compiled blob for this OpenVINO and CPU, so
``bench --engine X.xml`` and :class:`~rexnet_deploy.runtime.openvino_runner.OpenVinoRunner` start
in a fraction of the compile time. Weights keep the ONNX's precision (no silent FP16 compression).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import sha256_file
from ..export.onnx_export import onnx_precision
from ..runtime.base import RuntimeUnavailable


def require_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailable(f"OpenVINO is not installed ({exc}): pip install 'rexnet-deploy[openvino]'") from None
    return openvino


def openvino_cache_dir(xml_path: str | Path) -> Path:
    xml_path = Path(xml_path)
    return xml_path.with_name(xml_path.stem + ".ovcache")


def build_openvino(onnx_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Convert ``onnx_path`` to IR at ``out_path`` (.xml, .bin beside) and warm its compile cache.

    Returns the manifest fields; the caller writes the manifest and checks parity.
    """
    ov = require_openvino()
    from ..runtime.openvino_runner import OpenVinoRunner

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    model = ov.Core().read_model(str(onnx_path))
    ov.save_model(model, str(out_path), compress_to_fp16=False)
    weights = out_path.with_suffix(".bin")
    OpenVinoRunner(out_path).close()  # compiling once fills the cache folder
    return {
        "kind": "engine",
        "backend": "openvino",
        "precision": onnx_precision(onnx_path),
        "device": "CPU",
        "inference_precision": "f32",
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": sha256_file(onnx_path),
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "size_bytes": weights.stat().st_size},
        "cache_dir": openvino_cache_dir(out_path).name,
        "openvino_version": ov.get_version(),
        "input_shape": [d.get_length() if d.is_static else -1 for d in model.inputs[0].get_partial_shape()],
    }
