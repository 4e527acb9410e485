"""Package attributes imported on first use (PEP 562), so ``rexnet-deploy --help`` imports no torch.

A package ``__init__`` maps each public name to the module that defines it; ``from rexnet_deploy.models import
create_model`` then imports ``models.registry`` (and torch) only when a command actually runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``homes`` maps a public name to its module (relative to the
    package, as in ``from .registry import create_model``); a name once imported is kept on the package."""
    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(homes[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
