"""``rexnet-deploy``: one sub-command per stage.

Each stage module has ``add_parser(subparsers)`` that registers its sub-command and sets
``func(args) -> int``. The stage modules import torch and friends inside ``func``, so ``--help``
stays fast. Exit codes: 0 ok, 1 a check failed, 2 bad usage or bad input (one line, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from . import __version__
from .cli_args import add_progress_arg
from .errors import CheckFailed, UserError

# Stage command modules, in pipeline order.
COMMAND_MODULES = [
    "rexnet_deploy.models.cli",
    "rexnet_deploy.train.cli",
    "rexnet_deploy.prune.cli",
    "rexnet_deploy.quant.cli",
    "rexnet_deploy.bundle.cli",
    "rexnet_deploy.bundle.build_cli",
    "rexnet_deploy.bench.cli",
    "rexnet_deploy.pipeline.cli",
    "rexnet_deploy.predict.cli",
]


class _OneLineErrors(argparse.ArgumentParser):
    """Bad usage is one line naming the command and where to look, exit 2 (argparse prints its whole usage first,
    a screenful for some commands, before the line that says what was wrong). Sub-commands inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="rexnet-deploy",
        description="Train, prune, quantize, export and benchmark ReXNet image classifiers for edge deployment.")
    parser.add_argument("--version", action="version", version=f"rexnet-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    for command in sub.choices.values():  # one flag, one default, in every command
        add_progress_arg(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, CheckFailed) as exc:
        print(f"rexnet-deploy {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rexnet-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
