"""Argument types and settings shared by the stage commands and the experiment scripts.

Kept apart from :mod:`rexnet_deploy.cli` so that no library module imports the CLI.
"""

from __future__ import annotations

import argparse
import re
import sys

_Parser = argparse.ArgumentParser | argparse._ArgumentGroup


class _DeprecatedAlias(argparse.Action):
    """An old spelling of a flag, kept hidden for one release: it fills the new flag's value and says so."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is deprecated, use {self.new} (the old spelling goes in the next release)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: _Parser, old: str, new: str, dest: str, **kwargs) -> None:
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


# One definition per concept: every command that has the concept adds its flag through one of these helpers, so the
# name, metavar, type and wording are the same everywhere (tests/test_cli.py checks it); ``role`` is the command's
# own part of the help and must state the default.

THREADS_HELP = ("CPU threads of torch and every runtime (default: this machine's physical cores; a bench suite's own "
                "threads: wins unless this is given)")


def add_threads_arg(parser: _Parser) -> None:
    """``--threads``, the same in every command that computes."""
    parser.add_argument("--threads", type=positive_int, metavar="N", help=THREADS_HELP)


def resolve_threads(args: argparse.Namespace) -> int:
    """``--threads``, else the one default: the physical cores (what ONNX Runtime's own pool takes)."""
    if getattr(args, "threads", None):
        return args.threads
    from .hardware import physical_cores

    return physical_cores()


PROGRESS_HELP = "no progress bars (default: shown when stderr is a terminal, off in CI logs and pipes)"


def add_progress_arg(parser: _Parser) -> None:
    """``--no-progress``, the same in every command."""
    parser.add_argument("--no-progress", action="store_true", help=PROGRESS_HELP)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars for this command: not asked off (``--no-progress``, every command has it) and stderr a
    terminal, so a captured log holds no bars."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def add_checkpoint_arg(parser: _Parser, role: str, **kwargs) -> None:
    """``--checkpoint PATH``: a torch checkpoint (this tool's, timm's or the official clovaai layout)."""
    parser.add_argument("--checkpoint", metavar="PATH", help=role, **kwargs)


def add_calibration_arg(parser: _Parser, role: str, **kwargs) -> None:
    """``--calibration PATH``: a calibration set file written by ``rexnet-deploy calib``."""
    parser.add_argument("--calibration", metavar="PATH", help=f"calibration set from `rexnet-deploy calib`: {role}",
                        **kwargs)


def add_calibration_images_arg(parser: _Parser, default: int | None = None, default_text: str | None = None) -> None:
    """``--calibration-images N``: how many images a calibration set holds."""
    parser.add_argument("--calibration-images", type=positive_int, default=default, metavar="N",
                        help=f"images in the INT8 calibration set (default {default_text or default})")


def add_max_drop_arg(parser: _Parser, role: str, default: float = 0.5) -> None:
    """``--max-drop POINTS``: the top-1 points a file may lose against FP32."""
    parser.add_argument("--max-drop", type=float, default=default, metavar="POINTS",
                        help=f"top-1 points a file may lose against FP32: {role} (default {default:g})")


def add_batch_arg(parser: _Parser, role: str, default: int | None = None, default_text: str | None = None) -> None:
    """``--batch N``: the batch the model runs at (not the training batch, not a sweep)."""
    parser.add_argument("--batch", type=positive_int, default=default, metavar="N",
                        help=f"the batch size you run at: {role} (default {default_text or default})")


def add_eval_images_arg(parser: _Parser, default: int | None = None, *, zero_skips: bool = False, **kwargs) -> None:
    """``--eval-images N``: measure top-1 on the first N evaluation images (the same N images every time)."""
    parser.add_argument("--eval-images", type=int if zero_skips else positive_int, default=default, metavar="N",
                        **kwargs,
                        help=f"measure top-1 on the first N images of the evaluation split"
                             f"{' (0: skip)' if zero_skips else ''} (default {default or 'all'})")


GPU_INDEX = re.compile(r"cuda:\d+")


def add_device_arg(parser: _Parser, default: str, *, extra: dict[str, str] | None = None,
                   gpu_index: bool = True) -> None:
    """``--device``: cpu, cuda (and cuda:N where one GPU of several can be named); ``extra`` adds a word of one
    command with its meaning (bench's ``tensorrt``: ONNX Runtime's TensorRT provider)."""
    words = ["cpu", "cuda", *(extra or {})]

    def device(text: str) -> str:
        value = text.strip().lower()
        if value in words or (gpu_index and GPU_INDEX.fullmatch(value)):
            return value
        raise argparse.ArgumentTypeError(f"expected {', '.join(words)}{' or cuda:N' if gpu_index else ''}, "
                                         f"not {text!r}")

    meanings = "".join(f"; {word}: {meaning}" for word, meaning in (extra or {}).items())
    parser.add_argument("--device", type=device, metavar="DEVICE",
                        help=f"cpu or cuda{' (cuda:N: GPU N)' if gpu_index else ''}{meanings} (default: {default})")


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when the user asked for one (``--threads``)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
