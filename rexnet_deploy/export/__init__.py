"""Export stage: torch → ONNX, and parity checks of exported files (bundles: :mod:`rexnet_deploy.bundle`)."""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "INPUT_NAME": "..onnx_io",
    "OUTPUT_NAME": "..onnx_io",
    "onnx_precision": "..onnx_io",
    "read_metadata": "..onnx_io",
    "set_metadata": "..onnx_io",
    "DEFAULT_OPSET": ".onnx_export",
    "export_onnx": ".onnx_export",
    "PARITY_LIMITS": ".parity",
    "check_parity": ".parity",
    "compare_logits": ".parity",
    "require_parity": ".parity",
})

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "PARITY_LIMITS", "check_parity", "compare_logits",
           "export_onnx", "onnx_precision", "read_metadata", "require_parity", "set_metadata"]
