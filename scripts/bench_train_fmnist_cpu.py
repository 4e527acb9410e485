"""Benchmark of the ``fmnist-cpu`` recipe: does it reach ≥ 92 % Fashion-MNIST test top-1 within 10 minutes?

Runs ``rexnet-deploy train --recipe fmnist-cpu`` as a user would, times it (process start to exit, so data
loading, every epoch's validation and checkpointing count), re-evaluates best.pt on the whole test split with
the shared evaluator, and writes bench/results/train-fmnist-cpu/{result.json, result.md, curves.png}.
Usage: .venv/bin/python scripts/bench_train_fmnist_cpu.py [--threads 2] [--note "..."]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_TOP1, GOAL_SECONDS = 92.0, 600.0


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train-fmnist-cpu"))
    parser.add_argument("--note", default="", help="what else ran on the machine, if anything")
    args = parser.parse_args()

    from rexnet_deploy.artifacts import atomic_path, tool_versions, write_json
    from rexnet_deploy.data import load_dataset
    from rexnet_deploy.models import load_model
    from rexnet_deploy.report import format_table, markdown_table
    from rexnet_deploy.runtime import evaluate
    from rexnet_deploy.runtime.torch_runner import TorchRunner

    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "rexnet_deploy", "train", "--recipe", "fmnist-cpu", "--threads",
                   str(args.threads), "--no-progress", "--out", str(run)]
        load_before = os.getloadavg()
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        model, meta = load_model(run / "best.pt")
        test = evaluate(TorchRunner(model, threads=args.threads), load_dataset("fashion_mnist", "test"),
                        progress=False)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "curves.png") as dst:
            shutil.copyfile(run / "curves.png", dst)
        recipe_text = (run / "recipe.yaml").read_text()

    result = {
        "benchmark": "train-fmnist-cpu",
        "command": f"rexnet-deploy train --recipe fmnist-cpu --threads {args.threads} --no-progress --out RUN",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "train_s": round(history[-1]["elapsed_s"], 1),
        "epochs": len(history),
        "best_epoch": meta["epoch"],
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "test_images": test["num_images"],
        "goal": {"top1_min": GOAL_TOP1, "wall_s_max": GOAL_SECONDS},
        "passed": test["top1"] >= GOAL_TOP1 and wall <= GOAL_SECONDS,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
                    "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(load_after[0], 2)},
        "note": args.note,
        "per_epoch": history,
        "recipe": recipe_text,
        "tool_versions": tool_versions(),
    }
    write_json(out / "result.json", result)
    rows = [{"epoch": r["epoch"], "lr": round(r["lr"], 4), "train loss": round(r["train_loss"], 4),
             "val loss": round(r["val_loss"], 4), "top-1": r["val_top1"], "top-5": r["val_top5"],
             "img/s": round(r["train_img_s"]), "elapsed (s)": round(r["elapsed_s"])} for r in history]
    summary = [{"wall (min)": round(wall / 60, 2), "test top-1": test["top1"], "test top-5": test["top5"],
                "goal": f"≥ {GOAL_TOP1} % in ≤ {GOAL_SECONDS / 60:g} min", "passed": result["passed"]}]
    md = (f"# fmnist-cpu training benchmark\n\n`{result['command']}` on {result['machine']['cpu']} "
          f"({os.cpu_count()} cores, {args.threads} threads), {result['date']}.\n\n"
          + markdown_table(summary) + "\n" + markdown_table(rows)
          + f"\nLoad average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after."
          + (f" {args.note}" if args.note else "") + "\n\n![curves](curves.png)\n\n## Resolved recipe\n\n```yaml\n"
          + recipe_text + "```\n")
    with atomic_path(out / "result.md") as dst:
        dst.write_text(md)
    print(format_table(summary))
    print(f"results: {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
