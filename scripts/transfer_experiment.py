"""Transfer learning on this CPU (issue 25): does starting from pretrained weights beat training from scratch on a
few images of new classes, and does the whole pipeline work from such weights?

A source model (fmnist-cpu's ReXNet w=0.5 at 32×32) is trained on Fashion-MNIST classes 0–4, written as an
ImageFolder tree of PNGs. It is then fine-tuned on classes 5–9 (``--pretrained``, the ``finetune`` recipe: a new
head, trained alone for one epoch, then every layer) with 50, 200 and 1,000 training images per class, against the
same model trained from scratch with the ``fmnist-cpu`` recipe for the same steps (same images, epochs and batch).
At 200 per class the recipe's choices are varied one at a time (the pretrained layers at 0.3× and 0.1× lr, no
head-only epoch). Every run validates on all 5,000 test images of classes 5–9 after each epoch; the tables report
the last epoch's top-1 (no epoch picked on the test images). Then ``rexnet-deploy pipeline --pretrained`` (fine-tune,
prune to half the MACs + KD fine-tune, calibrate, ONNX FP32/FP16/INT8 and OpenVINO, bench, check) runs on the
200-per-class tree.

Writes OUT/results.json, results.md, transfer.png, README.md and OUT/pipeline/ (the pipeline's results, check and
prune report). Trees and runs go to --work, each a content-keyed stage (rexnet_deploy/stages.py): a rerun reuses
what is done and redoes what its settings change.
Usage: .venv/bin/python scripts/transfer_experiment.py [--work runs/transfer] [--out bench/results/transfer]
       [--threads 1] [--source-epochs 3] [--epochs 50:20,200:12,1000:6] [--finetune-epochs 10] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # make_imagefolder.py, beside this script

from make_imagefolder import write_tree  # noqa: E402

from rexnet_deploy.cli_args import positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CLASSES, TARGET_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
VAL_PER_CLASS = 1000  # all of Fashion-MNIST's test images of each class
BATCH = 32  # both arms: the finetune recipe's batch, so small trees still give several steps per epoch
INPUT_SIZE = 32
ABLATION_SIZE = 200  # images per class where the recipe's choices are varied
ABLATION = {"backbone_lr_scale 0.3": {"backbone_lr_scale": 0.3}, "backbone_lr_scale 0.1": {"backbone_lr_scale": 0.1},
            "freeze_epochs 0": {"freeze_epochs": 0}}


def _epochs(text: str) -> dict[int, int]:
    """``50:20,200:12`` → {images per class: epochs}."""
    try:
        pairs = dict(tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PER_CLASS:EPOCHS pairs like 50:20,200:12, not {text!r}") from None
    if not pairs or min(pairs) < 1 or min(pairs.values()) < 2:
        raise argparse.ArgumentTypeError(f"images per class must be positive and epochs at least 2: {text!r}")
    return pairs


def _tree(work: Path, name: str, per_class: int, classes: tuple[int, ...]) -> Path:
    from rexnet_deploy.stages import Stage

    settings = {"per_class": per_class, "val_per_class": VAL_PER_CLASS, "classes": list(classes)}
    return Stage(f"tree {name}", work / f"tree-{name}", settings, outputs=["train", "val"]).run(
        lambda tmp: write_tree(tmp, per_class, VAL_PER_CLASS, classes=classes))


def _train(work: Path, label: str, recipe, data: tuple, pretrained: Path | None = None) -> dict[str, Any]:
    """One run as a stage in work/label; its per-epoch metrics and final top-1."""
    from rexnet_deploy.models.checkpoint import read_metadata
    from rexnet_deploy.train import TrainRequest, fit_stage

    best, reused = fit_stage(TrainRequest(recipe, work / label, data=data, progress=False, pretrained=pretrained),
                             label)
    history = [json.loads(line) for line in (best.parent / "metrics.jsonl").read_text().splitlines()]
    meta = read_metadata(best.parent / "last.pt")
    return {"run": label, "recipe": recipe.to_dict(), "epochs": len(history),
            "steps": sum(r["steps"] for r in history), "train_images": len(data[0]), "val_images": len(data[1]),
            "top1": history[-1]["val_top1"], "best_top1": max(r["val_top1"] for r in history),
            "train_s": round(sum(r["epoch_time_s"] for r in history), 1), "autocast": meta.get("autocast"),
            "pretrained": meta.get("pretrained"), "per_epoch": [round(r["val_top1"], 2) for r in history],
            "reused": reused}


def _grid(work: Path, args: argparse.Namespace, source_best: Path) -> list[dict[str, Any]]:
    """Transfer and scratch at every tree size, the same steps each."""
    from rexnet_deploy.data import load_datasets
    from rexnet_deploy.train import load_recipe
    from rexnet_deploy.train.pretrained import pretrained_recipe

    rows = []
    for per_class, epochs in sorted(args.epochs.items()):
        tree = _tree(work, f"target-{per_class}", per_class, TARGET_CLASSES)
        fixed = {"epochs": epochs, "batch_size": BATCH}
        transfer = pretrained_recipe(load_recipe("finetune", fixed), source_best)
        scratch = load_recipe("fmnist-cpu", {**fixed, "dataset": "imagefolder", "input_size": INPUT_SIZE})
        data = load_datasets(transfer, tree)  # the same 32-px tree preprocessing for both recipes
        runs = {arm: _train(work, f"{arm}-{per_class}", recipe, data, source_best if arm == "transfer" else None)
                for arm, recipe in (("transfer", transfer), ("scratch", scratch))}
        assert runs["transfer"]["steps"] == runs["scratch"]["steps"], runs
        rows.append({"images_per_class": per_class, "train_images": runs["scratch"]["train_images"],
                     "epochs": epochs, "steps": runs["scratch"]["steps"], "scratch": runs["scratch"],
                     "transfer": runs["transfer"], "gain": runs["transfer"]["top1"] - runs["scratch"]["top1"]})
        print(f"{per_class}/class: scratch {runs['scratch']['top1']:.2f}, transfer {runs['transfer']['top1']:.2f}")
    return rows


def _ablation(work: Path, args: argparse.Namespace, source_best: Path) -> list[dict[str, Any]]:
    """The finetune recipe with one choice changed at a time, on the ABLATION_SIZE tree, the same steps."""
    from rexnet_deploy.data import load_datasets
    from rexnet_deploy.train import load_recipe
    from rexnet_deploy.train.pretrained import pretrained_recipe

    tree = _tree(work, f"target-{ABLATION_SIZE}", ABLATION_SIZE, TARGET_CLASSES)
    rows, data = [], None
    for label, change in ABLATION.items():
        fixed = {"epochs": args.epochs[ABLATION_SIZE], "batch_size": BATCH, **change}
        recipe = pretrained_recipe(load_recipe("finetune", fixed), source_best)
        data = data or load_datasets(recipe, tree)
        run = _train(work, f"ablation-{ABLATION_SIZE}-{label.replace(' ', '-')}", recipe, data, source_best)
        rows.append({"change": label, **run})
        print(f"{ABLATION_SIZE}/class, {label}: {run['top1']:.2f}")
    return rows


def _pipeline(work: Path, out: Path, args: argparse.Namespace, source_best: Path) -> dict[str, Any]:
    """rexnet-deploy pipeline --pretrained on the 200-per-class tree, as a user types it; its check, re-read."""
    from rexnet_deploy.artifacts import atomic_dir
    from rexnet_deploy.bench import check_results, load_results
    from rexnet_deploy.cli import main
    from rexnet_deploy.pipeline.run import own_reference_baseline

    per_class = 200
    tree = _tree(work, f"target-{per_class}", per_class, TARGET_CLASSES)
    run = work / f"pipeline-{per_class}"
    argv = ["pipeline", "--pretrained", str(source_best), "--data-dir", str(tree), "--epochs",
            str(args.epochs[per_class]), "--finetune-epochs", str(args.finetune_epochs), "--engines", "openvino",
            "--batches", "1,32", "--threads", str(args.threads), "--out", str(run)]
    code = main(argv)
    results = load_results(run / "bench" / "results.json")
    report = check_results(results, own_reference_baseline("pipeline-fmnist-cpu"))
    with atomic_dir(out / "pipeline") as tmp:
        for src, name in ((run / "bench" / "results.json", "results.json"), (run / "bench" / "results.md",
                          "results.md"), (run / "bench" / "junit.xml", "junit.xml"),
                          (run / "prune" / "report.md", "prune-report.md"),
                          (run / "export" / "bundle" / "bundle.md", "bundle.md")):
            if src.is_file():
                shutil.copyfile(src, tmp / name)
    rows = [{"artifact": r["name"], "top-1": r["accuracy"]["top1"] if r.get("accuracy") else None,
             "status": r["status"]} for r in results["rows"]]
    return {"command": shlex.join(["rexnet-deploy", *argv]), "exit_code": code, "passed": bool(report),
            "checks": report.table_rows(), "rows": rows}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rexnet_deploy.artifacts import atomic_path

    x = [r["images_per_class"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, style, recipe in (("transfer", "o-", "finetune"), ("scratch", "s--", "fmnist-cpu")):
        ax.plot(x, [r[arm]["top1"] for r in rows], style, label=f"{arm} ({recipe} recipe)")
    ax.set(xscale="log", xlabel="training images per class (classes 5–9)", ylabel="test top-1 (%), 5,000 images",
           title="Fashion-MNIST 0–4 → 5–9, same steps per size")
    ax.set_xticks(x, [str(v) for v in x])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"images/class": r["images_per_class"], "train images": r["train_images"], "epochs": r["epochs"],
             "steps": r["steps"], "scratch top-1": round(r["scratch"]["top1"], 2),
             "transfer top-1": round(r["transfer"]["top1"], 2), "transfer − scratch": round(r["gain"], 2)}
            for r in rows]


def _findings(result: dict[str, Any]) -> list[str]:
    """What the numbers say, in sentences built from them (so a rerun cannot leave stale claims)."""
    rows, notes = result["grid"], []
    worse = [r for r in rows if r["gain"] < 0]
    spans = ", ".join(f"{r['images_per_class']}/class {r['gain']:+.2f}" for r in rows)
    if worse:
        notes.append(f"Transfer is **not** at least as good as scratch everywhere: {spans} points "
                     f"(transfer − scratch).")
    else:
        notes.append(f"Transfer ≥ scratch at every data size: {spans} points (transfer − scratch).")
    if result.get("ablation"):
        shipped = next(r for r in rows if r["images_per_class"] == ABLATION_SIZE)["transfer"]["top1"]
        notes.append(f"At {ABLATION_SIZE}/class, against the recipe as shipped ({shipped:.2f}): " + ", ".join(
            f"{r['change']} {r['top1'] - shipped:+.2f}" for r in result["ablation"]) + " points.")
    notes.append(f"Source model (classes 0–4, {result['source']['epochs']} epochs of 30,000 images): "
                 f"{result['source']['top1']:.2f} % on its 5,000 test images.")
    pipe = result.get("pipeline")
    if pipe:
        failed = [c for c in pipe["checks"] if c["result"] == "FAIL"]
        verdict = "passed every check" if pipe["passed"] else f"failed {len(failed)} check(s): " + \
            "; ".join(f"{c['artifact']} {c['check']} {c['detail']}" for c in failed)
        notes.append(f"The pipeline from the pretrained weights (200/class) {verdict} (the drop budgets of baseline "
                     f"pipeline-fmnist-cpu against its own reference rows).")
    return notes


def _markdown(result: dict[str, Any]) -> str:
    from rexnet_deploy.report import markdown_table

    lines = ["# Transfer learning: Fashion-MNIST classes 0–4 → 5–9", "",
             "Top-1 of the last epoch on all 5,000 test images of classes 5–9; both arms run the same steps "
             "(same images, epochs, batch 32).", "", markdown_table(_table(result["grid"])), "",
             "![top-1 against images per class](transfer.png)", ""]
    lines += [f"- {note}" for note in _findings(result)]
    if result.get("ablation"):
        recipe = next(r for r in result["grid"] if r["images_per_class"] == ABLATION_SIZE)["transfer"]
        rows = [{"finetune recipe": "as shipped", "top-1": round(recipe["top1"], 2)}] + \
            [{"finetune recipe": r["change"], "top-1": round(r["top1"], 2)} for r in result["ablation"]]
        lines += ["", f"## One choice of the finetune recipe changed ({ABLATION_SIZE} images per class, same steps)",
                  "", markdown_table(rows)]
    pipe = result.get("pipeline")
    if pipe:
        lines += ["", "## Pipeline from the pretrained weights (200 images per class)", "", f"`{pipe['command']}`",
                  "", markdown_table(pipe["rows"]), "", markdown_table(pipe["checks"])]
    return "\n".join(lines) + "\n"


def _runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [result["source"], *(r[arm] for r in result["grid"] for arm in ("transfer", "scratch")),
            *result.get("ablation", [])]


def _readme(result: dict[str, Any]) -> str:
    m, runs = result["machine"], _runs(result)
    return "\n".join([
        "# Transfer learning on this CPU (issue 25)", "",
        f"Recorded {result['date']} by `{result['command']}`: {result['wall_min']:.1f} min wall-clock for this "
        f"invocation, which reused {sum(r['reused'] for r in runs)} of its {len(runs)} training runs (finished stages "
        f"of an earlier one); the training epochs of all runs took {sum(r['train_s'] for r in runs) / 60:.1f} min.",
        "",
        f"Machine: {m['cpu_model']}, ISA flags {', '.join(m['isa_flags']) or 'none'} ({m['isa_class']}), "
        f"{m['cpu_cores']} cores; every run at {result['threads']} thread(s). Load average (1 min) "
        f"{result['load_avg_before']:.2f} before, {result['load_avg_after']:.2f} after: the cores were shared with "
        "other work, so no time here is a speed figure.", "",
        "What ran: a source model (the `fmnist-cpu` recipe's ReXNet w=0.5, 32×32, "
        f"{result['source']['epochs']} epochs) on Fashion-MNIST classes 0–4 written as an ImageFolder tree "
        "(`scripts/make_imagefolder.py --classes 0,1,2,3,4`); then, for 50, 200 and 1,000 training images per class "
        "of classes 5–9, `rexnet-deploy train --pretrained SOURCE/best.pt --data-dir TREE` (the `finetune` recipe, "
        "which replaces the 5-class head of other classes) against `rexnet-deploy train --recipe fmnist-cpu "
        "--dataset imagefolder --input-size 32` from scratch, the same epochs and batch size (so the same steps). "
        "Both validate on the whole test split of classes 5–9 after every epoch.", "",
        "## Findings", "", *[f"- {note}" for note in _findings(result)], "",
        "Table, plot and pipeline checks: [`results.md`](results.md); every run's recipe, per-epoch top-1 and the "
        "pretrained provenance its checkpoints record: [`results.json`](results.json); the pipeline's own bench "
        "results and check: [`pipeline/`](pipeline/).", ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "transfer", help="trees and runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transfer")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1: on 2 shared cores 2 threads ran many times slower)")
    parser.add_argument("--source-epochs", type=positive_int, default=3)
    parser.add_argument("--epochs", type=_epochs, default=_epochs("50:20,200:12,1000:6"),
                        help="PER_CLASS:EPOCHS of each target size (default 50:20,200:12,1000:6)")
    parser.add_argument("--finetune-epochs", type=positive_int, default=10,
                        help="the pipeline's fine-tuning epochs after pruning (default 10)")
    parser.add_argument("--no-pipeline", action="store_true", help="the transfer table only")
    args = parser.parse_args()
    if not args.no_pipeline and 200 not in args.epochs:
        parser.error("the pipeline runs on the 200-per-class tree: --epochs must include 200:N")

    from rexnet_deploy.artifacts import atomic_path, tool_versions, write_json
    from rexnet_deploy.cli_args import apply_threads
    from rexnet_deploy.data import load_datasets
    from rexnet_deploy.hardware import cpu_isa_flags, cpu_model, isa_class
    from rexnet_deploy.report import format_table
    from rexnet_deploy.train import load_recipe

    apply_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    work = args.work
    source_tree = _tree(work, "source", 6000, SOURCE_CLASSES)
    recipe = load_recipe("fmnist-cpu", {"dataset": "imagefolder", "input_size": INPUT_SIZE,
                                        "epochs": args.source_epochs})
    source = _train(work, "source", recipe, load_datasets(recipe, source_tree))
    source_best = work / "source" / "best.pt"
    grid = _grid(work, args, source_best)
    result = {"benchmark": "transfer", "command": shlex.join(["python", "scripts/transfer_experiment.py",
                                                               *sys.argv[1:]]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": args.threads,
              "source": source, "source_checkpoint": str(source_best), "grid": grid}
    if not args.no_pipeline:
        result["pipeline"] = _pipeline(work, args.out, args, source_best)
    if ABLATION_SIZE in args.epochs:
        result["ablation"] = _ablation(work, args, source_best)
    result.update(wall_min=(time.perf_counter() - started) / 60, load_avg_before=load_before,
                  load_avg_after=os.getloadavg()[0],
                  machine={"cpu_model": cpu_model(), "isa_flags": cpu_isa_flags(), "isa_class": isa_class(),
                           "cpu_cores": os.cpu_count()},
                  tool_versions=tool_versions())
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", result)
    _plot(grid, out / "transfer.png")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(_markdown(result))
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(_readme(result))
    print(format_table(_table(grid)))
    for note in _findings(result):
        print(note)
    print(f"results: {out}")
    return 0 if all(r["gain"] >= 0 for r in grid) and result.get("pipeline", {}).get("passed", True) else 1


if __name__ == "__main__":
    sys.exit(main())
