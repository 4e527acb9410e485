"""Runners: one small class per runtime behind :class:`Runner`; optional runtimes imported lazily."""

from .base import Runner, RuntimeUnavailable
from .evaluate import evaluate, topk_correct

__all__ = ["Runner", "RuntimeUnavailable", "evaluate", "topk_correct"]
