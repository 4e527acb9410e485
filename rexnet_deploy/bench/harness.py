"""Run a suite: accuracy and speed of every artifact through the shared runners, one result row each.

Every artifact is opened by the same runners that evaluation and parity checks use (found through the
backend table of ``rexnet_deploy.backends``), never by a private inference path. A runtime that cannot
work here (:class:`RuntimeUnavailable`, e.g. TensorRT without a GPU) gives a ``skipped`` row with the reason; a
file that fails to load or run gives a ``failed`` row; either way the other rows still run. The rows of a
group are timed in turns (:func:`time_interleaved`), so the ratios between them do not carry the machine's drift.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import read_manifest_if_any
from ..backends import Runner, RuntimeUnavailable, artifact_size_bytes, evaluate, open_runner, read_artifact
from ..data import DatasetSpec, DataSplit, check_num_classes, load_split, recorded_spec, resolve_spec
from ..errors import UserError, first_line
from ..onnx_io import onnx_precision
from .machine import machine_facts
from .results import check_out_dir, compare_rows, write_results
from .suite import ArtifactSpec, ModelGroup, Suite
from .timing import Timing, measure_steps, merge_speed_entries, speed_entry

SCHEMA_VERSION = 1


def check_preprocess(spec: ArtifactSpec, dataset: DataSplit) -> bool:
    """Refuse an artifact made with another preprocessing contract than the dataset's; False when it records none."""
    try:
        theirs = read_artifact(spec.path, spec.kind).preprocess
    except UserError:
        return False
    if theirs is None:
        return False
    if not theirs.matches(dataset.preprocess):
        raise UserError(f"{spec.path} was made with preprocessing {theirs.describe()}, but {dataset.name} uses "
                        f"{dataset.preprocess.describe()}: bench it on its own dataset (--dataset)")
    return True


def open_artifact(spec: ArtifactSpec, threads: int) -> Runner:
    """The shared runner for ``spec``, found through the backend table; its ``meta`` is what the artifact records.

    A row's ``mode`` (checked against the backend's ``RUNNER_MODES`` when the suite was read) goes to its runner.
    """
    options = {"channels_last": spec.channels_last, "compile": spec.compile} if spec.kind == "checkpoint" else {}
    if spec.mode:
        options["mode"] = spec.mode
    runner = open_runner(spec.path, device=spec.device, threads=threads, role=spec.kind, **options)
    if not runner.meta:
        runner.meta = read_manifest_if_any(spec.path)
    if spec.precision:
        runner.precision = spec.precision
    return runner


def speed_input(dataset: DataSplit, batch: int) -> np.ndarray:
    """A batch of real, preprocessed evaluation images (repeated when the split is smaller than the batch)."""
    n = min(batch, len(dataset))
    images = dataset.inputs(range(n))
    reps = -(-batch // n)
    return np.ascontiguousarray(np.tile(images.numpy(), (reps, 1, 1, 1))[:batch], dtype=np.float32)


def measure_batch(runner: Runner, batch: np.ndarray, timing: Timing) -> dict:
    """Timing of one batch size (one turn of it: ``timing.rounds`` is :func:`time_interleaved`'s), an entry of
    the row's ``speed`` list.

    A CPU runner gets one timing by ``perf_counter``: each step submits the whole batch (``runner.submit``),
    and the runner's queue is drained after the last one (``runner.wait_all``, its time in that step). A runner
    with one request runs each batch to completion, numpy in → numpy out; one with an asynchronous queue
    (OpenVINO at batch ≥ 2) keeps its requests busy, each with the whole batch, so img/s is what the runtime's
    own ``benchmark_app`` measures (``in_flight`` records how many). A GPU runner gets the two that trtexec
    reports apart: the entry's own statistics are GPU compute time (CUDA events around the enqueue, the input
    already on the device: ``timer: cuda_events``, ``input_on_device: true``), and ``host_latency`` is end to
    end (host numpy in, both copies, synchronised numpy out: ``timer: perf_counter``, ``input_on_device: false``).
    """
    if not runner.on_gpu:
        times, warmed = measure_steps(lambda: runner.submit(batch), timing, drain=runner.wait_all)
        return speed_entry(times, len(batch), warmed, "perf_counter", False,
                           in_flight=runner.requests_in_flight(len(batch)))
    import torch

    x = torch.from_numpy(batch).to(runner.device)
    times, warmed = measure_steps(lambda: runner.infer_tensor(x), timing, cuda=True, device=runner.device)
    host, host_warmed = measure_steps(lambda: runner.infer(batch), timing)
    return {**speed_entry(times, len(batch), warmed, "cuda_events", True),
            "host_latency": speed_entry(host, len(batch), host_warmed, "perf_counter", False)}


def time_interleaved(runs: Sequence[tuple[Runner, np.ndarray]], timing: Timing) -> list[dict | Exception]:
    """Each (runner, batch) timed as :func:`measure_batch` times it, all of them in turns: ``timing.rounds``
    rounds, each giving every runner its share of the steps and seconds (:meth:`Timing.slices`), so the
    machine's drift lands on every row alike and their ratios hold from one run to the next.

    Returns one merged speed entry per run, or the exception that stopped it (the others go on).
    """
    turns: list[list[dict]] = [[] for _ in runs]
    errors: list[Exception | None] = [None] * len(runs)
    for share in timing.slices():
        for i, (runner, batch) in enumerate(runs):
            if errors[i] is None:
                try:
                    turns[i].append(measure_batch(runner, batch, share))
                except Exception as exc:  # a runtime's own error: that row fails, the others are still timed
                    errors[i] = exc
    return [errors[i] or merge_speed_entries(turns[i]) for i in range(len(runs))]


class _NoOpRunner(Runner):
    """A runner that computes nothing: what timing it measures is the harness's own cost per step."""

    backend = "none"

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.logits = np.zeros((1, classes), np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.logits


def harness_overhead(steps: int = 2000) -> dict:
    """The harness's own cost per timed step (microseconds): a runner that does nothing, timed by
    :func:`measure_batch` as every CPU row is (submit, drain, ``perf_counter``), ``steps`` steps.

    Subtract it from a row's step time to see the runtime alone; it matters only where steps take well under a
    millisecond (small models at batch 1)."""
    timing = Timing(warmup_steps=50, warmup_seconds=0.0, steps=steps, min_steps=steps, max_seconds=60.0, rounds=1)
    entry = measure_batch(_NoOpRunner(10), np.zeros((1, 3, 8, 8), np.float32), timing)
    return {"per_step_us": {k: v * 1e3 for k, v in entry["ms"].items()}, "steps": entry["steps"],
            "runner": "no-op (returns preallocated logits), timed through measure_batch like every CPU row"}


def failure_status(exc: Exception) -> tuple[str, str]:
    """A row's status and reason for what stopped it."""
    if isinstance(exc, RuntimeUnavailable):
        return "skipped", str(exc)
    if isinstance(exc, UserError):
        return "failed", str(exc)
    return "failed", f"{type(exc).__name__}: {first_line(exc, 200)}"  # a runtime's own error (bad graph, compiler)


def _new_row(spec: ArtifactSpec, group: str) -> dict:
    return {"group": group, "name": spec.name, "kind": spec.kind, "path": str(spec.path), "format": spec.format,
            "device": spec.device, "precision": spec.precision or ("fp32" if spec.kind == "checkpoint" else None),
            "size_bytes": artifact_size_bytes(spec.path), "status": "ok", "reason": None, "runner": None,
            "preprocess_checked": False, "accuracy": None, "speed": []}


def open_and_evaluate(spec: ArtifactSpec, row: dict, dataset: DataSplit, suite: Suite, stack: ExitStack,
                      progress: bool = True) -> Runner | None:
    """Open one row's runner (kept open on ``stack`` for the timing) and measure its accuracy into ``row``;
    None when it cannot run (``row`` then says why)."""
    if not spec.path.exists():
        row.update(status="skipped", reason=f"{spec.path} not found (optional artifact)")
        return None
    try:
        # what the file holds, known even when its runtime cannot start here
        row["precision"] = row["precision"] or (onnx_precision(spec.path) if spec.kind == "onnx"
                                                else read_manifest_if_any(spec.path).get("precision"))
        runner = stack.enter_context(open_artifact(spec, suite.threads))
        row["precision"] = runner.precision
        row["runner"] = runner.describe()
        row["preprocess_checked"] = check_preprocess(spec, dataset)
        row["accuracy"] = evaluate(runner, dataset, batch_size=suite.eval_batch, limit=suite.eval_images,
                                   progress=progress)
        runner.release()  # the evaluation batch's compiled model: every row of the group stays open till timed
    except Exception as exc:
        status, reason = failure_status(exc)
        row.update(status=status, reason=reason, accuracy=None)
        return None
    return runner


def bench_group(group: ModelGroup, dataset: DataSplit, suite: Suite, progress: bool = True) -> list[dict]:
    """One result row per artifact of ``group``: each row's accuracy, then the batch sweep, every batch size
    timed for all the group's rows in turns (:func:`time_interleaved`); ``skipped``/``failed`` rows carry
    the reason, and the other rows still run."""
    dataset = suite.dataset_for(group.name, dataset)  # a speed-only group's resized images
    rows = [_new_row(spec, group.name) for spec in group.artifacts]
    with ExitStack() as stack:
        runners = [open_and_evaluate(spec, row, dataset, suite, stack, progress)
                   for spec, row in zip(group.artifacts, rows)]
        live = [(row, runner) for row, runner in zip(rows, runners) if runner is not None]
        for batch in tqdm(suite.batches, desc=f"time {group.name}", unit="batch size", disable=not progress,
                          leave=False):
            live = [(row, runner) for row, runner in live if row["status"] == "ok"]
            for _, runner in live:
                runner.release()  # the last batch size's: a group of 40 rows at 224 holding three each ran out of 24 GB
            images = speed_input(dataset, batch)
            for (row, _), entry in zip(live, time_interleaved([(r, images) for _, r in live], suite.timing)):
                if isinstance(entry, Exception):
                    status, reason = failure_status(entry)
                    row.update(status=status, reason=reason, accuracy=None, speed=[])
                else:
                    row["speed"].append(entry)
        for row, runner in live:
            if row["status"] == "ok":
                row["runner"] = runner.describe()  # again: runners that compile per batch size record each one
    return rows


def recorded_meta(spec: ArtifactSpec) -> dict:
    """What an artifact file records about its model and data (:func:`~rexnet_deploy.backends.read_artifact`);
    {} for a file that records nothing or cannot be read (its row reports that when it is opened)."""
    if not spec.path.exists():
        return {}
    try:
        return read_artifact(spec.path, spec.kind).meta
    except UserError:
        return {}


def recorded_dataset(suite: Suite) -> tuple[dict, str] | None:
    """The first artifact of the suite that records a dataset: (its metadata, its path)."""
    for _, spec in suite.artifacts():
        meta = recorded_meta(spec)
        if recorded_spec(meta) is not None:
            return meta, str(spec.path)
    return None


def bench_spec(suite: Suite) -> DatasetSpec:
    """The data a suite is measured on: its ``dataset``/``data_dir``, with what the artifacts record filling in
    the rest (an ImageFolder's folder, input size and preprocessing come from the models trained on it)."""
    found = recorded_dataset(suite)
    meta, origin = found if found is not None else ({}, None)
    recorded = recorded_spec(meta)
    if recorded is None or recorded.name != suite.dataset:
        meta, origin = {}, None  # the artifacts record other data (or none): the suite's settings alone
    return resolve_spec(meta, dataset=suite.dataset, data_dir=suite.data_dir, origin=origin)


def bench_split(suite: Suite) -> DataSplit:
    """The evaluation split of :func:`bench_spec` (``split: train`` reads the training split).

    On an ImageFolder tree, a model trained for another number of classes is refused before anything is
    measured (a speed-only group's rows excepted: their top-1 means nothing anyway).
    """
    spec = bench_spec(suite)
    split = load_split(spec, "train" if suite.split == "train" else "val")
    if spec.is_folder:
        for group, artifact in suite.artifacts():
            num_classes = str(recorded_meta(artifact).get("num_classes", ""))
            if group.preprocess is None and num_classes.isdigit():
                check_num_classes(split, int(num_classes), str(artifact.path))
    return split


def run_bench(suite: Suite, out_dir: str | Path | None = None, *, progress: bool = True,
              command: str | None = None) -> dict:
    """Benchmark every artifact of ``suite``; returns the results dict (schema: results.schema.json).

    With ``out_dir`` the results are also written there (results.json, results.md, PNG plots).
    Raises :class:`UserError` before measuring anything if a required artifact is missing.
    """
    suite.check_files()
    if out_dir is not None:
        check_out_dir(out_dir)  # before minutes of measuring, not after
    dataset = bench_split(suite)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for group in tqdm(suite.groups, desc="bench", unit="group", disable=not progress):
        rows.extend(bench_group(group, dataset, suite, progress))
    for group in suite.groups:
        members = [r for r in rows if r["group"] == group.name]
        reference = next(r for r in members if r["name"] == group.reference_name())
        for r in members:
            r["reference"] = reference["name"]
            r["is_reference"] = r is reference
            r["ratios"] = compare_rows(r, reference)
    results = {"schema_version": SCHEMA_VERSION, "created": created, "command": command,
               "suite": suite.to_dict(), "dataset": {**dataset.describe(), "spec": dataset.spec.to_dict()},
               "machine": machine_facts(), "rows": rows, "harness_overhead": harness_overhead()}
    if out_dir is not None:
        write_results(results, out_dir)
    return results
