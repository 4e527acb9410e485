"""Argument types and settings shared by the stage commands and the experiment scripts.

Kept apart from :mod:`rexnet_deploy.cli` so that no library module imports the CLI.
"""

from __future__ import annotations

import argparse
import sys


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag, kept hidden for one release: it fills the new flag's value and says so."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated, use {self.new} (the old spelling goes in the next release)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str, dest: str,
                         **kwargs) -> None:
    """``old`` (hidden from --help) sets what ``new`` sets (``dest``), with a one-line deprecation note."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS, **kwargs)


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


THREADS_HELP = ("CPU threads of torch and every runtime (default: this machine's physical cores; a bench suite's own "
                "threads: wins unless this is given)")


def add_threads_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--threads``, the same in every command that computes."""
    parser.add_argument("--threads", type=positive_int, help=THREADS_HELP)


def resolve_threads(args: argparse.Namespace) -> int:
    """``--threads``, else the one default: the physical cores (what ONNX Runtime's own pool takes)."""
    if getattr(args, "threads", None):
        return args.threads
    from .hardware import physical_cores

    return physical_cores()


PROGRESS_HELP = "no progress bars (default: shown when stderr is a terminal, off in CI logs and pipes)"


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars for this command: not asked off (``--no-progress``, every command has it) and stderr a
    terminal, so a captured log holds no bars."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when the user asked for one (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
