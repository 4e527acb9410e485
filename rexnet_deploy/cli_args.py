"""Argument types and settings shared by the stage commands and the experiment scripts.

Kept apart from :mod:`rexnet_deploy.cli` so that no library module imports the CLI.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts such as --threads: a bad value is a usage error, not a traceback from torch."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def comma_list(text: str) -> list[str]:
    """``fp32,int8`` → ``["fp32", "int8"]`` (lower case, blanks dropped)."""
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def engines_arg(text: str | None) -> list[str] | None:
    """``--engines``: ``auto`` (or not given) → None, every engine this machine builds; ``none`` → []; else a list."""
    if text is None or text.strip().lower() == "auto":
        return None
    return [] if text.strip().lower() == "none" else comma_list(text)


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when the user asked for one (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
