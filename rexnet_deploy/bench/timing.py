"""Step timing: warm-up, timed steps, and the statistics computed from the raw step times.

Percentiles are ``numpy.percentile``'s default (``method="linear"``, Hyndman & Fan type 7): for ``n``
sorted values the ``q``-th percentile sits at rank ``q / 100 * (n - 1)``, interpolated between neighbours.

What a time means is said beside it (:func:`speed_entry`): ``timer`` is ``perf_counter`` (host wall
clock around the whole call) or ``cuda_events`` (GPU time between two events on the stream the work is
queued on, as trtexec's "GPU Compute Time"), and ``input_on_device`` says whether the input was already
on the GPU, i.e. whether host↔device copies are in the time.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..errors import UserError

PERCENTILES = (50, 90, 99)


def summarize_timings(step_ms: Sequence[float], batch: int) -> dict:
    """Statistics of one batch size's raw step times (milliseconds).

    ``img_per_s`` is throughput over the whole timed run: ``batch * steps / total seconds``.
    """
    if not step_ms:
        raise ValueError("no timed steps to summarize")
    at = np.percentile(np.asarray(step_ms, dtype=np.float64), [50, *PERCENTILES])
    stats = {"mean": sum(step_ms) / len(step_ms), "median": float(at[0]), "min": min(step_ms), "max": max(step_ms)}
    stats.update({f"p{q}": float(v) for q, v in zip(PERCENTILES, at[1:])})
    return {"batch": batch, "steps": len(step_ms), "ms": stats, "img_per_s": batch * len(step_ms) * 1e3 / sum(step_ms)}


@dataclass(frozen=True)
class Timing:
    """How long to warm up and how many steps to time, per batch size.

    Warm-up runs until both ``warmup_steps`` steps and ``warmup_seconds`` have passed. Timing then
    records up to ``steps`` steps, stopping early once ``max_seconds`` have passed and at least
    ``min_steps`` were recorded (so slow rows stay bounded and fast rows get many samples).

    ``rounds`` > 1 splits that budget into as many turns (:meth:`slices`), which the rows compared with
    each other take in turn (row A, row B, …, then A again): a shared 2-core VM's speed drifts by ±20 %
    from one second to the next (measured on the AVX-512 EPYC), and rows timed one after the other in
    blocks of seconds carried that drift into their ratios (0.86–1.52× for the same two files). Taken
    in turns, the drift lands on every row alike.
    """

    warmup_steps: int = 5
    warmup_seconds: float = 0.2
    steps: int = 200
    min_steps: int = 10
    max_seconds: float = 5.0
    rounds: int = 5

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.warmup_seconds < 0:
            raise UserError("warm-up steps and seconds must be ≥ 0: fix warmup_steps/warmup_seconds")
        if not 1 <= self.min_steps <= self.steps:
            raise UserError(f"timing needs 1 ≤ min_steps ≤ steps (got min_steps {self.min_steps}, steps "
                            f"{self.steps}): fix them in the suite or on the command line")
        if self.max_seconds <= 0:
            raise UserError(f"max_seconds must be > 0 (got {self.max_seconds})")
        if self.rounds < 1:
            raise UserError(f"timing needs rounds ≥ 1 (got {self.rounds}): fix it in the suite or on the command line")

    def slices(self) -> list["Timing"]:
        """One turn's timing per round: the steps, minimum steps and seconds shared out (the totals stay as
        asked; fewer turns when ``min_steps`` < ``rounds``, each turn times at least one step). The first turn
        warms up as asked; later ones for one step (the other rows ran in between and evicted this one's caches)."""
        turns = min(self.rounds, self.min_steps)
        if turns == 1:
            return [replace(self, rounds=1)]
        out = []
        for i in range(turns):
            steps = self.steps // turns + (i < self.steps % turns)
            min_steps = self.min_steps // turns + (i < self.min_steps % turns)
            warmup = (self.warmup_steps, self.warmup_seconds) if i == 0 else (min(self.warmup_steps, 1), 0.0)
            out.append(replace(self, steps=steps, min_steps=min_steps, max_seconds=self.max_seconds / turns,
                               warmup_steps=warmup[0], warmup_seconds=warmup[1], rounds=1))
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def speed_entry(step_ms: Sequence[float], batch: int, warmup_steps: int, timer: str, input_on_device: bool,
                rounds: int = 1, in_flight: int = 1) -> dict:
    """One batch size's timing as results.json records it: the statistics, and what the times measured
    (``rounds``: in how many turns, interleaved with the other rows of its group, the steps were taken;
    ``in_flight``: batches the runner kept in flight at once, 1 when each step ran one batch to completion)."""
    return {**summarize_timings(step_ms, batch), "warmup_steps": warmup_steps, "timer": timer,
            "input_on_device": input_on_device, "rounds": rounds, "in_flight": in_flight,
            "raw_ms": [round(t, 4) for t in step_ms]}


def merge_speed_entries(entries: Sequence[dict]) -> dict:
    """The turns of one row's timing (:meth:`Timing.slices`) as one entry: their steps together, the
    statistics over all of them, the warm-up steps summed (GPU rows: their ``host_latency`` alike)."""
    first = entries[0]
    merged = speed_entry([t for e in entries for t in e["raw_ms"]], first["batch"],
                         sum(e["warmup_steps"] for e in entries), first["timer"], first["input_on_device"],
                         rounds=len(entries), in_flight=first.get("in_flight", 1))
    if "host_latency" in first:
        merged["host_latency"] = merge_speed_entries([e["host_latency"] for e in entries])
    return merged


def measure_steps(step: Callable[[], object], timing: Timing, cuda: bool = False,
                  device: object = None, drain: Callable[[], object] | None = None) -> tuple[list[float], int]:
    """Warm up, then time ``step`` repeatedly; returns (raw step times in ms, warm-up steps run).

    One turn: ``timing.rounds`` is for the caller that interleaves rows (``bench.harness.time_interleaved``).

    ``drain``: for a ``step`` that only starts work (an asynchronous queue keeping several batches in flight),
    what waits for all of it. It runs untimed after the warm-up, so the timed run starts with nothing in flight,
    and timed after the last step, its time added to that step: the total is then from the first start to the
    last completion, as OpenVINO's ``benchmark_app`` measures throughput. A step's own time is then the wait
    for a free request (≈ batch ÷ throughput in steady state), not one request's latency.

    With ``cuda=True`` each step is timed by CUDA events recorded on the current stream of ``device``
    (a torch device or index; None: the current one) before and after ``step`` and waited for: the GPU
    time of the work ``step`` queues there (a runner with its own stream orders it between the two
    events). Otherwise by ``time.perf_counter``.
    """
    if cuda:
        import torch

        # events are recorded on the current device's stream: make it the runner's, or a runner on
        # cuda:1 would be timed by events on cuda:0 that wait for nothing
        with torch.cuda.device(device):
            return _measure(step, timing, cuda, drain)
    return _measure(step, timing, cuda, drain)


def _measure(step: Callable[[], object], timing: Timing, cuda: bool,
             drain: Callable[[], object] | None) -> tuple[list[float], int]:
    warmed = 0
    start = time.perf_counter()
    while warmed < timing.warmup_steps or time.perf_counter() - start < timing.warmup_seconds:
        step()
        warmed += 1
    if cuda:
        import torch

        torch.cuda.synchronize()
    if drain is not None:
        drain()
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
    if drain is not None:
        t0 = time.perf_counter()
        drain()
        times[-1] += (time.perf_counter() - t0) * 1e3
    return times, warmed
