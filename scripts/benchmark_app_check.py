#!/usr/bin/env python
"""Cross-check the bench's OpenVINO img/s against OpenVINO's own ``benchmark_app`` under the same settings.

The bench times one batch per step through :class:`rexnet_deploy.backends.openvino.OpenVinoRunner`; this
script opens that runner for one batch size, reads what it compiled (static input shape per request, hint,
streams, threads, inference precision: the row's ``runner.compiled`` entry), and runs ``benchmark_app``
with exactly that compile config (``-load_config``), input shape and request count: sync API for one
request, async with one request per stream otherwise. It then checks from benchmark_app's own report that
its compiled model got the same streams, threads, hint and precision, and compares the two img/s.

Both are measured ``rounds`` times, alternating, and the best of each is compared: on a shared machine other
processes only ever slow a measurement down, so the fastest run of each is the least disturbed one.

    python scripts/benchmark_app_check.py model.fp32.openvino.xml --batch 64 --threads 2 --seconds 10
exits 0 when the two figures are within ``--tolerance`` (default 15 %), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 0.15


def benchmark_app_path() -> Path | None:
    """The ``benchmark_app`` the openvino wheel installs beside this Python, else the one on PATH."""
    beside = Path(sys.executable).with_name("benchmark_app")
    if beside.is_file():
        return beside
    found = shutil.which("benchmark_app")
    return Path(found) if found else None


def bench_row(model: str | Path, batch: int, threads: int, seconds: float) -> dict[str, Any]:
    """img/s of the bench's runner at ``batch`` (random inputs, as benchmark_app uses) and what it compiled."""
    from rexnet_deploy.backends.openvino import OpenVinoRunner
    from rexnet_deploy.bench.timing import Timing, measure_steps, summarize_timings

    with OpenVinoRunner(model, threads=threads) as runner:
        dims = [d.get_length() for d in list(runner.model.inputs[0].get_partial_shape())[1:]]
        x = np.random.default_rng(0).standard_normal((batch, *dims)).astype(np.float32)
        # many steps, bounded by time: the comparison needs seconds of steady state, not a step count
        timing = Timing(warmup_steps=3, warmup_seconds=1.0, steps=1_000_000, min_steps=10, max_seconds=seconds)
        times, _ = measure_steps(lambda: runner.infer(x), timing)
        return {"img_per_s": summarize_timings(times, batch)["img_per_s"], "steps": len(times),
                "compiled": runner.compiled_for[str(batch)]}


def _property(text: str, name: str) -> str | None:
    found = re.search(rf"^\[ INFO \]\s+{name}: (.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def run_benchmark_app(model: str | Path, compiled: dict[str, Any], seconds: float,
                      executable: Path | None = None) -> dict[str, Any]:
    """benchmark_app on ``model`` with the compile config, shape and request count one bench row used."""
    executable = executable or benchmark_app_path()
    if executable is None:
        raise FileNotFoundError("benchmark_app not found (it ships in the openvino wheel): pip install openvino")
    if compiled.get("static", True):  # the row compiled this static shape: benchmark_app reshapes to it
        shape_args = ["-shape", "[" + ",".join(str(d) for d in compiled["input_shape"]) + "]"]
    else:  # the row kept the dynamic batch (a Q/DQ file): benchmark_app too, fed the row's per-request batch
        dims = compiled["input_shape"].strip("[]").split(",")[1:]
        shape_args = ["-data_shape", "[" + ",".join([str(compiled["request_batch"]), *dims]) + "]"]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"CPU": {k: str(v) for k, v in compiled["config"].items()}}))
        cmd = [str(executable), "-m", str(model), "-d", "CPU", *shape_args, "-layout", "[NCHW]",
               # -ip f32: benchmark_app otherwise feeds a 3-channel NCHW input as u8 and adds a conversion
               "-ip", "f32", "-load_config", str(config), "-t", f"{seconds:g}",
               "-api", "sync" if compiled["requests"] == 1 else "async"]
        # no -nireq: it would add PERFORMANCE_HINT_NUM_REQUESTS to the config; benchmark_app's default is the
        # compiled model's optimal request count, one per stream, which is what the runner uses (checked after)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    out = proc.stdout + proc.stderr
    throughput = re.search(r"Throughput:\s+([\d.]+) FPS", out)
    if proc.returncode != 0 or not throughput:
        tail = " | ".join(out.strip().splitlines()[-5:])
        raise RuntimeError(f"benchmark_app failed (exit {proc.returncode}): {tail}")
    requests = re.search(r"Start inference (?:a?synchronously), (\d+) inference requests", out)
    precision = _property(out, "INFERENCE_PRECISION_HINT") or ""
    return {"img_per_s": float(throughput.group(1)), "command": cmd,
            "requests": int(requests.group(1)) if requests else 1,
            "streams": int(_property(out, "NUM_STREAMS") or 0),
            "threads": int(_property(out, "INFERENCE_NUM_THREADS") or 0),
            "hint": (_property(out, "PERFORMANCE_HINT") or "").split(".")[-1],
            "inference_precision": {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(
                re.sub(r"^<Type: '(\w+)'>$", r"\1", precision), precision)}


def settings_mismatch(compiled: dict[str, Any], app: dict[str, Any]) -> list[str]:
    """What benchmark_app's compiled model got differently from the bench row (empty: the same settings)."""
    wanted = {"requests": compiled["requests"], "streams": compiled["streams"], "threads": compiled["threads"],
              "hint": compiled["hint"], "inference_precision": compiled["inference_precision"]}
    return [f"{k}: bench {v}, benchmark_app {app[k]}" for k, v in wanted.items() if app[k] != v]


def cross_check(model: str | Path, batch: int, threads: int = 2, seconds: float = 10.0, rounds: int = 2,
                executable: Path | None = None) -> dict[str, Any]:
    """Both img/s figures, alternating ``rounds`` times; ``ratio`` is best bench / best benchmark_app."""
    bench, app = [], []
    for _ in range(rounds):
        bench.append(bench_row(model, batch, threads, seconds))
        app.append(run_benchmark_app(model, bench[-1]["compiled"], seconds, executable))
    best_bench = max(r["img_per_s"] for r in bench)
    best_app = max(r["img_per_s"] for r in app)
    return {"model": str(model), "batch": batch, "threads": threads, "seconds": seconds,
            "compiled": bench[0]["compiled"], "bench_img_per_s": [r["img_per_s"] for r in bench],
            "benchmark_app_img_per_s": [r["img_per_s"] for r in app], "ratio": best_bench / best_app,
            "mismatch": settings_mismatch(bench[0]["compiled"], app[0]), "command": app[0]["command"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="OpenVINO IR (.xml) or ONNX file")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run, each side")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side; the best is compared")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    args = parser.parse_args(argv)
    result = cross_check(args.model, args.batch, args.threads, args.seconds, args.rounds)
    c = result["compiled"]
    print(f"batch {args.batch}: {c['requests']} request(s) of {c['input_shape']}, {c['hint']}, {c['streams']} "
          f"stream(s), {c['threads']} threads, {c['inference_precision']}")
    print(f"bench         img/s: {', '.join(f'{v:.1f}' for v in result['bench_img_per_s'])}")
    print(f"benchmark_app img/s: {', '.join(f'{v:.1f}' for v in result['benchmark_app_img_per_s'])}")
    print(f"best bench / best benchmark_app = {result['ratio']:.3f} (tolerance ±{args.tolerance:.0%})")
    if result["mismatch"]:
        print("settings differ: " + "; ".join(result["mismatch"]))
        return 1
    return 0 if abs(result["ratio"] - 1) <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
