"""Export stage: ONNX files, parity checks and deployable bundles (engines: :mod:`rexnet_deploy.engines`)."""

from .bundle import PRECISIONS, export_bundle, read_bundle, summary_rows
from .onnx_export import (
           DEFAULT_OPSET,
           INPUT_NAME,
           OUTPUT_NAME,
           export_onnx,
           onnx_precision,
           read_metadata,
           set_metadata,
)
from .parity import PARITY_LIMITS, check_parity, compare_logits, require_parity

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "PARITY_LIMITS", "PRECISIONS", "check_parity",
           "compare_logits", "export_bundle", "export_onnx", "onnx_precision", "read_bundle", "read_metadata",
           "require_parity", "set_metadata", "summary_rows"]
