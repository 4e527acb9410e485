"""Export stage: ONNX files, engines and deployable bundles."""

from .onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx, read_metadata, set_metadata

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "export_onnx", "read_metadata", "set_metadata"]
