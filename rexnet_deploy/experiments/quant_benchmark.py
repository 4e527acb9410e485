"""Quantization benchmark: FP32 vs INT8 (every calibration method × target) vs FP16 in ONNX Runtime on this CPU.

    python -m rexnet_deploy.experiments.quant_benchmark [--fmnist-checkpoint PATH] [--tiny-checkpoint PATH]

For the CPU recipe's model (``rexnet`` w=0.5 on Fashion-MNIST) and tiny-cifar-0.5 (trained on
Fashion-MNIST too, so that the benchmark needs no download), it exports the FP32 ONNX, builds the
calibration set, quantizes with each method for each target, converts to FP16, then measures every
file in one ``rexnet_deploy.bench.run_bench`` run (top-1 on the test split, size, img/s at batch 1
and 64, ONNX Runtime CPU with 2 threads). Results go to ``--out`` (default ``runs/quant``; the
recorded ones are in ``bench/results/quant/``, written there on purpose with ``--out``): the bench
stage's results.json/results.md/plots plus quant-summary.json/.md with the goal check: INT8 ort-cpu
within 0.5 point of FP32 and ≥ 1.5× its img/s at batch 64.

A checkpoint not given is trained here with the ``fmnist-cpu`` recipe (tiny-cifar for
``--tiny-steps`` steps, as far as CPU time allows), as a stage in ``--work`` keyed by its recipe:
a later call with the same recipe reuses it, an interrupted one resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..artifacts import atomic_path, read_manifest, sha256_file, write_json, write_manifest
from ..data import ImageDataset, load_dataset
from ..errors import CheckFailed, UserError
from ..stages import stage_key

PROG = "python -m rexnet_deploy.experiments.quant_benchmark"
DATASET = "fashion_mnist"
INPUT_SIZE = (3, 32, 32)
MODELS = {"rexnet-0.5": ("rexnet", 0.5), "tiny-cifar-0.5": ("rexnet_tiny_cifar", 0.5)}
GOAL_MAX_DROP = 0.5
GOAL_SPEEDUP_B64 = 1.5


def train_checkpoint(name: str, model_name: str, width: float, work: Path, steps: int | None) -> Path:
    """Train with the ``fmnist-cpu`` recipe; with ``steps``, one epoch of that many batches of 64.

    tiny-cifar trains at about 20 img/s on a 2-core CPU, so it gets a few hundred steps on a subset,
    validated on 2000 test images. The run is a stage in ``work``, in a folder named by the recipe's key.
    """
    from ..train import TrainRequest, fit_stage, load_recipe

    overrides: dict = {"model": model_name, "width": width, "dataset": DATASET}
    if steps is not None:
        overrides.update({"epochs": 1, "batch_size": 64, "lr": 0.05, "train_subset": steps * 64, "val_subset": 2000})
    recipe = load_recipe("fmnist-cpu", overrides)
    folder = work / f"train-{name}-{stage_key({'recipe': recipe.to_dict()})}"
    best, _ = fit_stage(TrainRequest(recipe, folder), f"train {name}")
    return best


def export_fp32(checkpoint: Path, out: Path, val: ImageDataset) -> Path:
    from ..export import export_onnx
    from ..models import load_model

    model, meta = load_model(checkpoint)
    if meta.get("dataset") not in (None, DATASET):
        raise UserError(f"{checkpoint} was trained on {meta['dataset']}, not {DATASET}: pass a Fashion-MNIST one")
    export_onnx(model, out, INPUT_SIZE, metadata={"preprocess": json.dumps(val.preprocess.to_dict()),
                                                  "dataset": DATASET, "precision": "fp32"})
    write_manifest(out, {"kind": "onnx", "precision": "fp32", "source_checkpoint": str(checkpoint),
                         "source_sha256": sha256_file(checkpoint), "preprocess": val.preprocess.to_dict()})
    return out


def prepare_artifacts(name: str, checkpoint: Path, calib: Path, val: ImageDataset, work: Path,
                      eval_images: int | None) -> dict[str, Path]:
    """FP32, INT8 for every method × target, and FP16 ONNX files of one model: ``{row name: path}``."""
    from ..quant import METHODS, AccuracyBudget, convert_fp16, quantize_onnx, targets

    fp32 = export_fp32(checkpoint, work / f"{name}.fp32.onnx", val)
    files = {"ort-fp32": fp32}
    for target in targets():
        for method in METHODS:
            files[f"int8-{target}-{method}"] = quantize_onnx(
                fp32, calib, work / f"{name}.int8-{target}-{method}.onnx", method=method, target=target,
                budget=AccuracyBudget(val, eval_images))
    files["fp16"] = convert_fp16(fp32, work / f"{name}.fp16.onnx", eval_set=val, eval_images=eval_images)
    return files


def quant_summary(results: dict, files: dict[str, dict[str, Path]]) -> dict:
    """Per-row quantization facts (target, method, units kept float) beside the measured ratios; the goal check."""
    from ..bench.results import speed_at

    rows, goals = [], []
    for r in results["rows"]:
        path = files[r["group"]][r["name"]]
        manifest = read_manifest(path)
        ratios = r.get("ratios") or {}
        b1, b64 = speed_at(r, 1), speed_at(r, 64)
        rows.append({
            "model": r["group"], "artifact": r["name"], "precision": manifest.get("precision"),
            "target": manifest.get("target", "—"), "method": manifest.get("method", "—"),
            "float units": ", ".join(u["unit"] for u in manifest.get("float_units", [])) or "—",
            "top-1": (r.get("accuracy") or {}).get("top1"), "Δ top-1": ratios.get("top1_delta"),
            "size MB": r["size_bytes"] / 1e6 if r["size_bytes"] else None,
            "img/s b1": b1["img_per_s"] if b1 else None, "img/s b64": b64["img_per_s"] if b64 else None,
            "× img/s b64": (ratios.get("speedup") or {}).get("64"), "status": r["status"]})
    for group in files:
        candidates = [row for row in rows if row["model"] == group and row["target"] == "ort-cpu"
                      and row["status"] == "ok"]
        met = [c for c in candidates if c["Δ top-1"] >= -GOAL_MAX_DROP and c["× img/s b64"] >= GOAL_SPEEDUP_B64]
        best = max(candidates, key=lambda c: c["× img/s b64"] if c["Δ top-1"] >= -GOAL_MAX_DROP else -1,
                   default=None)
        goals.append({"model": group, "goal": f"INT8 ort-cpu within {GOAL_MAX_DROP} point of FP32 and "
                                              f"≥ {GOAL_SPEEDUP_B64}× its img/s at batch 64",
                      "met_by": [c["artifact"] for c in met], "met": bool(met),
                      "best": {k: best[k] for k in ("artifact", "Δ top-1", "× img/s b64")} if best else None})
    return {"rows": rows, "goals": goals}


def summary_markdown(summary: dict, results: dict) -> str:
    from ..report import markdown_table

    lines = ["# Quantization benchmark", "",
             f"Recorded {results['created']} with `{results['command']}`; measured in one `run_bench` run "
             f"(details, raw timings and plots: results.md / results.json). ONNX Runtime CPU, "
             f"{results['suite']['threads']} threads; top-1 on {results['dataset']['dataset']} "
             f"{results['dataset']['split']}; ratios against each model's ort-fp32 row.", "",
             f"1-minute load average on this {summary['load_average_1min']['cores']}-core machine: "
             f"{summary['load_average_1min']['before']:.1f} before the timed run, "
             f"{summary['load_average_1min']['after']:.1f} after (other work shared the CPU when it is above "
             f"the core count; timings are then noisy, ratios less so than absolute img/s).", "",
             markdown_table(summary["rows"]), "", "## Goal", ""]
    for g in summary["goals"]:
        best = g["best"]
        detail = (f"best ort-cpu INT8 within the accuracy goal: {best['artifact']} (Δ top-1 {best['Δ top-1']:+.2f}, "
                  f"{best['× img/s b64']:.2f}× img/s at batch 64)") if best else "no ort-cpu INT8 row ran"
        lines.append(f"- {g['model']}: {'MET' if g['met'] else 'NOT MET'} — {g['goal']}; {detail}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--fmnist-checkpoint", type=Path, help="rexnet w=0.5 Fashion-MNIST checkpoint")
    parser.add_argument("--tiny-checkpoint", type=Path, help="rexnet_tiny_cifar w=0.5 Fashion-MNIST checkpoint")
    parser.add_argument("--tiny-steps", type=int, default=300, help="training steps when tiny-cifar is trained here")
    parser.add_argument("--eval-images", type=int, help="test images for every accuracy (default: the whole split)")
    parser.add_argument("--work", type=Path, default=Path("runs/quant-bench"),
                        help="where the training runs and ONNX files go")
    parser.add_argument("--out", type=Path, default=Path("runs/quant"),
                        help="where the results go (default runs/quant; record into bench/results/quant on purpose)")
    args = parser.parse_args(argv)
    try:
        return run(args, " ".join([PROG, *(sys.argv[1:] if argv is None else argv)]))
    except (UserError, CheckFailed) as exc:
        print(f"quant benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code


def run(args: argparse.Namespace, command: str) -> int:
    from ..bench import ArtifactSpec, ModelGroup, Suite, Timing, run_bench
    from ..quant import DEFAULT_NUM_IMAGES, build_calibration_set, default_calibration_path
    from ..report import format_table

    val = load_dataset(DATASET, "test")
    calib = default_calibration_path(DATASET, DEFAULT_NUM_IMAGES, 0)
    if not calib.is_file():
        calib = build_calibration_set(DATASET, DEFAULT_NUM_IMAGES, 0, calib)
    given = {"rexnet-0.5": args.fmnist_checkpoint, "tiny-cifar-0.5": args.tiny_checkpoint}
    files: dict[str, dict[str, Path]] = {}
    for name, (model_name, width) in MODELS.items():
        checkpoint = given[name] or train_checkpoint(name, model_name, width, args.work,
                                                     None if name == "rexnet-0.5" else args.tiny_steps)
        print(f"{name}: {checkpoint}")
        files[name] = prepare_artifacts(name, checkpoint, calib, val, args.work, args.eval_images)

    groups = tuple(ModelGroup(name, tuple(ArtifactSpec(row, "onnx", path) for row, path in rows.items()), "ort-fp32")
                   for name, rows in files.items())
    suite = Suite(groups=groups, name="quant", dataset=DATASET, split="test", eval_images=args.eval_images,
                  batches=(1, 64), headline_batch=64, threads=2, timing=Timing(steps=100, max_seconds=5.0))
    load_before = os.getloadavg()
    results = run_bench(suite, args.out, command=command)
    summary = quant_summary(results, files)
    # the machine is shared: the load average says how much else ran while the timings were taken
    summary["load_average_1min"] = {"before": load_before[0], "after": os.getloadavg()[0],
                                    "cores": os.cpu_count()}
    write_json(args.out / "quant-summary.json", {"created": results["created"], "command": command, **summary})
    with atomic_path(args.out / "quant-summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, results))
    print(format_table(summary["rows"]))
    for g in summary["goals"]:
        print(f"{g['model']}: goal {'met' if g['met'] else 'NOT met'} ({g['best']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
