"""Calibration methods, and the Q/DQ layouts the backends declare (no heavy imports: the CLI reads them)."""

from __future__ import annotations

from ..backends import BACKENDS, TargetLayout, int8_layouts

METHODS = ("minmax", "entropy", "percentile")


def targets() -> dict[str, TargetLayout]:
    """Q/DQ layouts by name (``quantize --target``): each backend's module declares the one it runs."""
    return int8_layouts()


def target_names() -> list[str]:
    """The layouts' names as the backend table rows give them, without importing the backend modules (``--help``)."""
    return list(dict.fromkeys(b.int8_layout for b in BACKENDS.values() if b.int8_layout))
