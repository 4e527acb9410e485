"""Bundles: a model exported to every precision and built into every engine this machine can, checked and summed up.

The layer above export (torch → ONNX, parity), quantization and the backends: it calls them all.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "build_engine": ".build",
    "engine_parity": ".build",
    "BundleRequest": ".bundle",
    "PRECISIONS": ".bundle",
    "engines_available": ".bundle",
    "export_bundle": ".bundle",
    "read_bundle": ".bundle",
    "summary_rows": ".bundle",
})

__all__ = ["PRECISIONS", "BundleRequest", "build_engine", "engine_parity", "engines_available", "export_bundle",
           "read_bundle", "summary_rows"]
