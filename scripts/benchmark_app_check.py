#!/usr/bin/env python
"""The tool's own OpenVINO row against OpenVINO's own ``benchmark_app`` on the same file and batch.

``benchmark_app`` runs as a user runs it: ``-m FILE -d CPU -shape "[B,C,H,W]" -hint throughput`` (``latency`` at
batch 1) ``-t SECONDS`` and nothing else (it refuses ``-nthreads``/``-nstreams`` beside a hint), plus
``-infer_precision`` where the row sets an inference precision (the tool's f32 and bf16 modes; the peer,
``--mode defaults``, sets none). The row is the bench's: :class:`rexnet_deploy.backends.openvino.OpenVinoRunner`
in that mode, timed by ``rexnet_deploy.bench.harness.measure_batch`` (whole batches through its asynchronous
queue, the queue drained at the end), no thread count set, random inputs as benchmark_app's. One difference stays:
benchmark_app feeds a 3-channel image input as u8 and converts it inside the graph, the row feeds float32.

The two alternate ``--rounds`` times and the best of each is compared (other processes on a shared machine only
ever slow a measurement down, so each side's fastest run is its least disturbed one); benchmark_app's reported
hint, streams, requests and inference precision must be the row's.

    python scripts/benchmark_app_check.py MODEL.onnx --batch 32 --mode defaults     # the peer
    python scripts/benchmark_app_check.py MODEL.fp32.openvino.xml --batch 32 --mode bf16
    python scripts/benchmark_app_check.py --bundle export/X          # its peer and its pick at its deploy batch
exits 0 when every row is within ``--tolerance`` (default 15 %) with the same settings, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 0.15
MODES = ("defaults", "tool", "bf16")


class BadInput(Exception):
    """One line for the user, exit 2."""


def benchmark_app_path() -> Path | None:
    """The ``benchmark_app`` the openvino wheel installs beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("benchmark_app")
    if beside.is_file():
        return beside
    found = shutil.which("benchmark_app")
    return Path(found) if found else None


def tool_row(model: str | Path, batch: int, mode: str | None, seconds: float) -> dict[str, Any]:
    """img/s of the bench's OpenVINO runner at ``batch`` in ``mode`` (None: the tool's f32), timed as the bench
    times a row, and what it compiled (hint, streams, requests, threads, precision)."""
    from rexnet_deploy.backends.openvino import OpenVinoRunner
    from rexnet_deploy.bench.harness import measure_batch
    from rexnet_deploy.bench.timing import Timing

    with OpenVinoRunner(model, mode=mode) as runner:
        dims = [d.get_length() for d in list(runner.model.inputs[0].get_partial_shape())[1:]]
        x = np.random.default_rng(0).standard_normal((batch, *dims)).astype(np.float32)
        # bounded by time, not steps: the comparison needs seconds of steady state, as benchmark_app's -t
        timing = Timing(warmup_steps=3, warmup_seconds=1.0, steps=1_000_000, min_steps=10, max_seconds=seconds,
                        rounds=1)
        entry = measure_batch(runner, x, timing)
        return {"img_per_s": entry["img_per_s"], "steps": entry["steps"], "in_flight": entry["in_flight"],
                "input_shape": [batch, *dims], "compiled": runner.compiled_for[str(batch)]}


def benchmark_app_command(model: str | Path, input_shape: list[int], compiled: dict[str, Any], seconds: float,
                          executable: Path) -> list[str]:
    """benchmark_app as a user runs it for this file and batch: the row's hint, and its inference precision if
    it set one."""
    cmd = [str(executable), "-m", str(model), "-d", "CPU", "-shape", "[" + ",".join(map(str, input_shape)) + "]",
           "-hint", compiled["hint"].lower(), "-t", f"{seconds:g}"]
    precision = compiled["config"].get("INFERENCE_PRECISION_HINT")
    return cmd + (["-infer_precision", str(precision)] if precision else [])


def _property(text: str, name: str) -> str | None:
    found = re.search(rf"^\[ INFO \]\s+{name}: (.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def run_benchmark_app(cmd: list[str], seconds: float) -> dict[str, Any]:
    """Run one benchmark_app command; its img/s and the settings its compiled model reported."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    out = proc.stdout + proc.stderr
    throughput = re.search(r"Throughput:\s+([\d.]+) FPS", out)
    if proc.returncode != 0 or not throughput:
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise RuntimeError(f"benchmark_app failed (exit {proc.returncode}): {tail}")
    requests = re.search(r"Start inference asynchronously, (\d+) inference requests", out)
    precision = re.sub(r"^<Type: '(\w+)'>$", r"\1", _property(out, "INFERENCE_PRECISION_HINT") or "")
    return {"img_per_s": float(throughput.group(1)), "requests": int(requests.group(1)) if requests else 1,
            "streams": int(_property(out, "NUM_STREAMS") or 0),
            "threads": int(_property(out, "INFERENCE_NUM_THREADS") or 0),
            "hint": (_property(out, "PERFORMANCE_HINT") or "").split(".")[-1],
            "inference_precision": {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(precision, precision)}


def settings_mismatch(compiled: dict[str, Any], app: dict[str, Any]) -> list[str]:
    """What benchmark_app's compiled model got differently from the row (empty: the same settings)."""
    return [f"{k}: row {compiled[k]}, benchmark_app {app[k]}"
            for k in ("requests", "streams", "threads", "hint", "inference_precision") if app[k] != compiled[k]]


def cross_check(model: str | Path, batch: int, mode: str | None = None, seconds: float = 10.0, rounds: int = 2,
                executable: Path | None = None) -> dict[str, Any]:
    """Row and benchmark_app alternating ``rounds`` times; ``ratio`` is best row / best benchmark_app."""
    executable = executable or benchmark_app_path()
    if executable is None:
        raise BadInput("benchmark_app not found (it ships in the openvino wheel): pip install openvino")
    rows, apps, cmd = [], [], None
    for _ in range(rounds):
        rows.append(tool_row(model, batch, mode, seconds))
        cmd = benchmark_app_command(model, rows[0]["input_shape"], rows[0]["compiled"], seconds, executable)
        apps.append(run_benchmark_app(cmd, seconds))
    best_row, best_app = max(r["img_per_s"] for r in rows), max(a["img_per_s"] for a in apps)
    return {"model": str(model), "batch": batch, "mode": mode or "tool", "seconds": seconds,
            "compiled": rows[0]["compiled"], "row_img_per_s": [r["img_per_s"] for r in rows],
            "benchmark_app_img_per_s": [a["img_per_s"] for a in apps], "ratio": best_row / best_app,
            "mismatch": settings_mismatch(rows[0]["compiled"], apps[0]), "command": cmd}


def read_bundle(bundle_dir: str | Path) -> dict[str, Any]:
    path = Path(bundle_dir) / "bundle.json"
    if not path.is_file():
        raise BadInput(f"{bundle_dir} is not a bundle (no bundle.json): export one with `rexnet-deploy export`")
    return json.loads(path.read_text())


def bundle_rows(bundle_dir: str | Path) -> list[tuple[str, Path, str | None]]:
    """(label, file, mode) of a bundle's peer (its FP32 ONNX under OpenVINO's defaults) and of its pick
    (``recommended`` in bundle.json) where OpenVINO runs the pick; benchmark_app measures OpenVINO only."""
    folder = Path(bundle_dir)
    path = folder / "bundle.json"
    bundle = read_bundle(folder)
    fp32 = next((f for f in bundle.get("files", []) if f.get("variant") == "fp32" and f["file"].endswith(".onnx")
                 and not f.get("embedded_preprocess")), None)
    if fp32 is None:
        raise BadInput(f"{path} lists no FP32 ONNX file: re-export the bundle")
    rows = [("peer (openvino-default)", folder / fp32["file"], "defaults")]
    pick = bundle.get("recommended")
    if pick and pick.get("backend") == "openvino":
        rows.append((f"pick ({pick['name']})", folder / pick["path"], pick.get("mode")))
    elif pick:
        print(f"the pick {pick['name']} runs on {pick.get('backend')}: benchmark_app measures OpenVINO files only")
    else:
        print(f"{path} records no --precision auto pick: only the peer is checked")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="OpenVINO IR (.xml) or ONNX file")
    parser.add_argument("--bundle", help="a bundle folder: check its peer and its --precision auto pick")
    parser.add_argument("--batch", type=int, help="batch size (default: a bundle's export --batch, else 32)")
    parser.add_argument("--mode", choices=MODES, default="defaults",
                        help="the row's mode: defaults (the peer, default), tool (f32) or bf16")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run, each side")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side; the best is compared")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    try:
        if (args.model is None) == (args.bundle is None):
            raise BadInput("pass a model file or --bundle DIR (one of them)")
        if args.batch is None:
            deploy = (read_bundle(args.bundle).get("precision_auto") or {}).get("deploy_batch") if args.bundle else None
            args.batch = int(deploy or 32)
        if args.batch < 1 or args.rounds < 1 or args.seconds <= 0:
            raise BadInput("--batch and --rounds must be ≥ 1 and --seconds > 0")
        if args.model is not None and not Path(args.model).is_file():
            raise BadInput(f"{args.model} does not exist: pass an OpenVINO IR (.xml) or ONNX file")
        rows = bundle_rows(args.bundle) if args.bundle else \
            [(f"{args.mode} row", Path(args.model), None if args.mode == "tool" else args.mode)]
    except BadInput as exc:
        print(f"benchmark_app_check: {exc}", file=sys.stderr)
        return 2
    from rexnet_deploy.bench.harness import harness_overhead

    overhead = harness_overhead()
    print(f"harness overhead: {overhead['per_step_us']['median']:.1f} µs per step (median; a no-op runner timed "
          f"through the same path)")
    results, ok = [], True
    for label, model, mode in rows:
        try:
            result = cross_check(model, args.batch, mode, args.seconds, args.rounds)
        except BadInput as exc:
            print(f"benchmark_app_check: {exc}", file=sys.stderr)
            return 2
        c = result["compiled"]
        within = abs(result["ratio"] - 1) <= args.tolerance and not result["mismatch"]
        ok &= within
        print(f"{label}: {model.name}, batch {args.batch}: {c['hint']}, {c['streams']} stream(s), {c['requests']} "
              f"request(s) of {c['input_shape']}, {c['threads']} threads, {c['inference_precision']}")
        print(f"  benchmark_app: {' '.join(result['command'][1:])}")
        print(f"  row           img/s: {', '.join(f'{v:.1f}' for v in result['row_img_per_s'])}")
        print(f"  benchmark_app img/s: {', '.join(f'{v:.1f}' for v in result['benchmark_app_img_per_s'])}")
        print(f"  best row / best benchmark_app = {result['ratio']:.3f} (tolerance ±{args.tolerance:.0%}): "
              f"{'ok' if within else 'OUTSIDE'}" + (f"; settings differ: {'; '.join(result['mismatch'])}"
                                                    if result["mismatch"] else ""))
        results.append({"label": label, **result})
    if args.json:
        Path(args.json).write_text(json.dumps({"harness_overhead": overhead, "rows": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
