"""Bundles: a model exported to every precision and built into every engine this machine can, checked and summed up.

The layer above export (torch → ONNX, parity), quantization and the backends: it calls them all.
"""

from .build import build_engine, engine_parity
from .bundle import PRECISIONS, BundleRequest, engines_available, export_bundle, read_bundle, summary_rows

__all__ = ["PRECISIONS", "BundleRequest", "build_engine", "engine_parity", "engines_available", "export_bundle",
           "read_bundle", "summary_rows"]
