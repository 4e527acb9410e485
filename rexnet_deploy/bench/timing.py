"""Step timing: warm-up, timed steps, and the statistics computed from the raw step times.

Percentiles use linear interpolation between the two nearest ranks (Hyndman & Fan type 7, numpy's
default ``method="linear"``): for ``n`` sorted values the ``q``-th percentile sits at rank
``q / 100 * (n - 1)``, and a fractional rank interpolates between its neighbours.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ..errors import UserError

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values`` by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of an empty list")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize_timings(step_ms: Sequence[float], batch: int) -> dict:
    """Statistics of one batch size's raw step times (milliseconds).

    ``img_per_s`` is throughput over the whole timed run: ``batch * steps / total seconds``.
    """
    if not step_ms:
        raise ValueError("no timed steps to summarize")
    stats = {"mean": sum(step_ms) / len(step_ms), "median": percentile(step_ms, 50), "min": min(step_ms),
             "max": max(step_ms)}
    stats.update({f"p{q}": percentile(step_ms, q) for q in PERCENTILES})
    return {"batch": batch, "steps": len(step_ms), "ms": stats, "img_per_s": batch * len(step_ms) * 1e3 / sum(step_ms)}


@dataclass(frozen=True)
class Timing:
    """How long to warm up and how many steps to time, per batch size.

    Warm-up runs until both ``warmup_steps`` steps and ``warmup_seconds`` have passed. Timing then
    records up to ``steps`` steps, stopping early once ``max_seconds`` have passed and at least
    ``min_steps`` were recorded (so slow rows stay bounded and fast rows get many samples).
    """

    warmup_steps: int = 5
    warmup_seconds: float = 0.2
    steps: int = 200
    min_steps: int = 10
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.warmup_seconds < 0:
            raise UserError("warm-up steps and seconds must be ≥ 0: fix warmup_steps/warmup_seconds")
        if not 1 <= self.min_steps <= self.steps:
            raise UserError(f"timing needs 1 ≤ min_steps ≤ steps (got min_steps {self.min_steps}, steps "
                            f"{self.steps}): fix them in the suite or on the command line")
        if self.max_seconds <= 0:
            raise UserError(f"max_seconds must be > 0 (got {self.max_seconds})")

    def to_dict(self) -> dict:
        return asdict(self)


def measure_steps(step: Callable[[], object], timing: Timing, cuda: bool = False) -> tuple[list[float], int]:
    """Warm up, then time ``step`` repeatedly; returns (raw step times in ms, warm-up steps run).

    With ``cuda=True`` each step is timed by CUDA events recorded on the current stream and waited
    for, so the time is the device's, not the launch's; otherwise by ``time.perf_counter``.
    """
    warmed = 0
    start = time.perf_counter()
    while warmed < timing.warmup_steps or time.perf_counter() - start < timing.warmup_seconds:
        step()
        warmed += 1
    if cuda:
        import torch

        torch.cuda.synchronize()
    gc.collect()  # a collection inside the timed loop would land in one step's time
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < timing.steps:
        if len(times) >= timing.min_steps and time.perf_counter() - start >= timing.max_seconds:
            break
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            step()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times, warmed
