"""Calibration methods, and the Q/DQ layouts the backends declare (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from ..backends import TargetLayout, int8_layouts

METHODS = ("minmax", "entropy", "percentile")


def targets() -> dict[str, TargetLayout]:
    """Q/DQ layouts by name (``quantize --target``): each backend's module declares the one it runs."""
    return int8_layouts()
