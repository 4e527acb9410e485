"""Runners: one small class per runtime behind :class:`Runner`; optional runtimes imported lazily."""

from .base import Runner, RuntimeUnavailable
from .evaluate import evaluate, topk_correct
from .open import open_runner

__all__ = ["Runner", "RuntimeUnavailable", "evaluate", "open_runner", "topk_correct"]
