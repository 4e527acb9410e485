"""Run a suite: accuracy and speed of every artifact through the shared runners, one result row each.

Every artifact is opened by the same runner classes that evaluation and parity checks use
(``rexnet_deploy.runtime``), never by a private inference path. A runtime that cannot work here
(:class:`RuntimeUnavailable`, e.g. TensorRT without a GPU) gives a ``skipped`` row with the reason; a
file that fails to load or run gives a ``failed`` row; either way the other rows still run.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data import ImageDataset, Preprocess, load_dataset
from ..errors import UserError
from ..export import onnx_precision, read_metadata
from ..runtime import Runner, RuntimeUnavailable, evaluate, open_runner
from .machine import machine_facts
from .results import check_out_dir, compare_rows, write_results
from .suite import ArtifactSpec, Suite
from .timing import measure_steps, summarize_timings

SCHEMA_VERSION = 1


def artifact_size_bytes(path: Path) -> int | None:
    """Bytes on disk; an OpenVINO IR counts its .xml and .bin, a folder all its files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if not path.is_file():
        return None
    size = path.stat().st_size
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def _manifest(path: Path) -> dict:
    from ..artifacts import manifest_path, read_manifest

    return read_manifest(path) if manifest_path(path).is_file() else {}


def _recorded_preprocess(spec: ArtifactSpec, meta: dict) -> dict | None:
    """The preprocessing the artifact says it was trained with: checkpoint metadata, manifest, ONNX metadata."""
    if isinstance(meta.get("preprocess"), dict):
        return meta["preprocess"]
    if spec.kind == "onnx":
        value = read_metadata(spec.path).get("preprocess")
        if value:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, dict) else None
    return None


def check_preprocess(spec: ArtifactSpec, meta: dict, dataset: ImageDataset) -> bool:
    """Refuse an artifact trained with other preprocessing than the dataset's; False when it records none."""
    recorded = _recorded_preprocess(spec, meta)
    if recorded is None:
        return False
    try:
        theirs = Preprocess.from_dict(recorded)
    except (KeyError, TypeError, ValueError):
        return False
    if not theirs.matches(dataset.preprocess):
        raise UserError(f"{spec.path} was made with preprocessing {theirs.to_dict()}, but {dataset.name} uses "
                        f"{dataset.preprocess.to_dict()}: bench it on its own dataset (--dataset)")
    return True


def open_artifact(spec: ArtifactSpec, threads: int) -> tuple[Runner, dict]:
    """The shared runner for ``spec`` and the artifact's recorded metadata (checkpoint meta or manifest)."""
    if spec.kind == "checkpoint":
        import torch

        from ..models import load_model
        from ..runtime.torch_runner import TorchRunner

        if spec.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("torch sees no CUDA GPU here: run this row on a machine with one")
        model, meta = load_model(spec.path)
        return TorchRunner(model, device=spec.device, channels_last=spec.channels_last, compile=spec.compile,
                           threads=threads), meta
    runner = open_runner(spec.path, device=spec.device, threads=threads)  # precision read from the file
    if spec.precision:
        runner.precision = spec.precision
    return runner, _manifest(spec.path)


def speed_input(dataset: ImageDataset, batch: int) -> np.ndarray:
    """A batch of real, preprocessed evaluation images (repeated when the split is smaller than the batch)."""
    n = min(batch, len(dataset))
    images = dataset.preprocess(dataset.images[:n])
    reps = -(-batch // n)
    return np.ascontiguousarray(np.tile(images.numpy(), (reps, 1, 1, 1))[:batch], dtype=np.float32)


def measure_batch(runner: Runner, batch: np.ndarray, suite: Suite) -> dict:
    """Timing of one batch size; device-resident inputs and CUDA events when the runner is on a GPU."""
    device = getattr(runner, "device", None)
    on_gpu = hasattr(runner, "infer_tensor") and getattr(device, "type", str(device)) == "cuda"
    if on_gpu:
        import torch

        x = torch.from_numpy(batch).to(device)
        times, warmed = measure_steps(lambda: runner.infer_tensor(x), suite.timing, cuda=True)
    else:
        times, warmed = measure_steps(lambda: runner.infer(batch), suite.timing)
    return {**summarize_timings(times, len(batch)), "warmup_steps": warmed,
            "timer": "cuda_events" if on_gpu else "perf_counter", "input_on_device": on_gpu,
            "raw_ms": [round(t, 4) for t in times]}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def bench_artifact(spec: ArtifactSpec, group: str, dataset: ImageDataset, suite: Suite,
                   progress: bool = True) -> dict:
    """One result row: accuracy, then the batch sweep; ``skipped``/``failed`` rows carry the reason."""
    row = {"group": group, "name": spec.name, "kind": spec.kind, "path": str(spec.path), "format": spec.format,
           "device": spec.device, "precision": spec.precision or ("fp32" if spec.kind == "checkpoint" else None),
           "size_bytes": artifact_size_bytes(spec.path), "status": "ok", "reason": None, "runner": None,
           "preprocess_checked": False, "accuracy": None, "speed": []}
    if not spec.path.exists():
        return {**row, "status": "skipped", "reason": f"{spec.path} not found (optional artifact)"}
    try:
        # what the file holds, known even when its runtime cannot start here
        row["precision"] = row["precision"] or (onnx_precision(spec.path) if spec.kind == "onnx"
                                                else _manifest(spec.path).get("precision"))
        runner, meta = open_artifact(spec, suite.threads)
        with runner:
            row["precision"] = runner.precision
            row["runner"] = runner.describe()
            row["preprocess_checked"] = check_preprocess(spec, meta, dataset)
            row["accuracy"] = evaluate(runner, dataset, batch_size=suite.eval_batch, limit=suite.eval_images,
                                       progress=progress)
            for batch in tqdm(suite.batches, desc=f"time {group}/{spec.name}", unit="batch size",
                              disable=not progress, leave=False):
                row["speed"].append(measure_batch(runner, speed_input(dataset, batch), suite))
    except RuntimeUnavailable as exc:
        return {**row, "status": "skipped", "reason": str(exc), "accuracy": None, "speed": []}
    except UserError as exc:
        return {**row, "status": "failed", "reason": str(exc), "accuracy": None, "speed": []}
    except Exception as exc:  # a runtime's own error (bad graph, compiler failure): report it, bench the rest
        return {**row, "status": "failed", "reason": _first_line(exc), "accuracy": None, "speed": []}
    return row


def run_bench(suite: Suite, out_dir: str | Path | None = None, *, progress: bool = True,
              command: str | None = None) -> dict:
    """Benchmark every artifact of ``suite``; returns the results dict (schema: results.schema.json).

    With ``out_dir`` the results are also written there (results.json, results.md, PNG plots).
    Raises :class:`UserError` before measuring anything if a required artifact is missing.
    """
    suite.check_files()
    if out_dir is not None:
        check_out_dir(out_dir)  # before minutes of measuring, not after
    dataset = load_dataset(suite.dataset, suite.split, suite.data_dir)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = []
    for group, spec in tqdm(suite.artifacts(), desc="bench", unit="artifact", disable=not progress):
        rows.append(bench_artifact(spec, group.name, dataset, suite, progress))
    for group in suite.groups:
        members = [r for r in rows if r["group"] == group.name]
        reference = next(r for r in members if r["name"] == group.reference_name())
        for r in members:
            r["reference"] = reference["name"]
            r["is_reference"] = r is reference
            r["ratios"] = compare_rows(r, reference)
    results = {"schema_version": SCHEMA_VERSION, "created": created, "command": command,
               "suite": suite.to_dict(), "dataset": {k: v for k, v in dataset.describe().items() if k != "classes"},
               "machine": machine_facts(), "rows": rows}
    if out_dir is not None:
        write_results(results, out_dir)
    return results
