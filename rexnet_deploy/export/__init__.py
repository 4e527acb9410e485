"""Export stage: torch → ONNX, and parity checks of exported files (bundles: :mod:`rexnet_deploy.bundle`)."""

from ..onnx_io import INPUT_NAME, OUTPUT_NAME, onnx_precision, read_metadata, set_metadata
from .onnx_export import DEFAULT_OPSET, export_onnx
from .parity import PARITY_LIMITS, check_parity, compare_logits, require_parity

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "PARITY_LIMITS", "check_parity", "compare_logits",
           "export_onnx", "onnx_precision", "read_metadata", "require_parity", "set_metadata"]
