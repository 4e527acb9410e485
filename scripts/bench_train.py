"""Recorded training run: does a recipe reach its goal (``fmnist-cpu``: ≥ 92 % test top-1 within 10 minutes)?

Runs ``rexnet-deploy train --recipe R [--set K=V ...]`` as a user would, times it (process start to exit, so
data loading, every epoch's validation and checkpointing count), re-evaluates best.pt on the whole test split
with the shared evaluator, and writes OUT/{result.json, result.md, curves.png}. OUT defaults to
runs/bench-train-<recipe>/; a run is recorded into the tracked bench/results/train-<recipe>/ on purpose,
with --out.
Usage: .venv/bin/python scripts/bench_train.py [--recipe fmnist-cpu] [--set KEY=VALUE ...] [--threads 2]
       [--keep runs/fmnist-cpu] [--out bench/results/train-<recipe>] [--note "..."]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rexnet_deploy.cli_args import positive_int

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"fmnist-cpu": (92.0, 600.0)}  # recipe → (top-1 %, wall seconds) it promises


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="fmnist-cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--test-images", type=int, default=None,
                        help="re-evaluate best.pt on the first N test images (default: the whole split)")
    parser.add_argument("--out", default=None, help="default: runs/bench-train-<recipe>")
    parser.add_argument("--note", default="", help="what else ran on the machine, if anything")
    parser.add_argument("--keep", default=None,
                        help="copy the run folder here (runs/fmnist-cpu is what the fmnist-cpu bench suite reads)")
    args = parser.parse_args()

    from rexnet_deploy.artifacts import atomic_dir, atomic_path, tool_versions, write_json
    from rexnet_deploy.backends import evaluate
    from rexnet_deploy.backends.torch import TorchRunner
    from rexnet_deploy.bench.machine import cpu_model
    from rexnet_deploy.data import load_dataset
    from rexnet_deploy.models import load_model
    from rexnet_deploy.report import format_table, markdown_table

    out = Path(args.out or ROOT / "runs" / f"bench-train-{Path(args.recipe).stem}")
    goal = GOALS.get(args.recipe) if not args.set else None  # an overridden recipe promises nothing
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        run = Path(tmp) / "run"
        overrides = [f for kv in args.set for f in ("--set", kv)]
        command = [sys.executable, "-m", "rexnet_deploy", "train", "--recipe", args.recipe, *overrides,
                   "--threads", str(args.threads), "--no-progress", "--out", str(run)]
        load_before = os.getloadavg()
        start = time.perf_counter()
        code = subprocess.run(command, cwd=ROOT).returncode
        if code:  # the train command has already said why, in one line
            return code
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        model, meta = load_model(run / "best.pt")
        test = evaluate(TorchRunner(model, threads=args.threads), load_dataset(meta["dataset"], "test"),
                        limit=args.test_images, progress=False)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "curves.png") as dst:
            shutil.copyfile(run / "curves.png", dst)
        recipe_text = (run / "recipe.yaml").read_text()
        if args.keep:
            with atomic_dir(Path(args.keep)) as dst:
                shutil.copytree(run, dst, dirs_exist_ok=True)

    result = {
        "benchmark": f"train-{args.recipe}",
        "command": shlex.join(["rexnet-deploy", *command[3:-1], "RUN"]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "train_s": round(history[-1]["elapsed_s"], 1),
        "epochs": len(history),
        "best_epoch": meta["epoch"],
        "test_top1": test["top1"],
        "test_top5": test["top5"],
        "test_images": test["num_images"],
        "train_steps": sum(r["steps"] for r in history),
        "goal": {"top1_min": goal[0], "wall_s_max": goal[1]} if goal else None,
        "passed": test["top1"] >= goal[0] and wall <= goal[1] if goal else None,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
                    "load_avg_1m_before": round(load_before[0], 2), "load_avg_1m_after": round(load_after[0], 2)},
        "note": args.note,
        "per_epoch": history,
        "recipe": recipe_text,
        "tool_versions": tool_versions(),
    }
    write_json(out / "result.json", result)
    rows = [{"epoch": r["epoch"], "steps": r["steps"], "optimizer": r["optimizer"], "lr": round(r["lr"], 4),
             "train loss": round(r["train_loss"], 4),
             "val loss": round(r["val_loss"], 4), "top-1": r["val_top1"], "top-5": r["val_top5"],
             "img/s": round(r["train_img_s"]), "elapsed (s)": round(r["elapsed_s"])} for r in history]
    summary = [{"wall (min)": round(wall / 60, 2), "test images": test["num_images"], "test top-1": test["top1"],
                "test top-5": test["top5"],
                "goal": f"≥ {goal[0]} % in ≤ {goal[1] / 60:g} min" if goal else "—",
                "passed": "—" if result["passed"] is None else result["passed"]}]
    md = (f"# Training run: {args.recipe}\n\n`{result['command']}` on {result['machine']['cpu']} "
          f"({os.cpu_count()} cores, {args.threads} threads), {result['date']}.\n\n"
          + markdown_table(summary) + "\n" + markdown_table(rows)
          + f"\nLoad average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after."
          + (f" {args.note}" if args.note else "") + "\n\n![curves](curves.png)\n\n## Resolved recipe\n\n```yaml\n"
          + recipe_text + "```\n")
    with atomic_path(out / "result.md") as dst:
        dst.write_text(md)
    print(format_table(summary))
    print(f"results: {out}")
    return 1 if result["passed"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
