"""The compression table: a source model, its pruned + fine-tuned versions, and the same size trained from scratch.

Rows (all measured here, on the dataset's full test split):

1. the source model (family at ``--source-width``, trained ``--source-epochs`` with the recipe);
2. pruned to the family's ``--target-width`` plan, fine-tuned ``--finetune-epochs``;
3. the same, fine-tuned with knowledge distillation from the source (``--kd-weight``);
4. the ``--target-width`` model trained from scratch for source + fine-tune epochs (the same total);
5. a global ``--macs`` prune of the source, fine-tuned like row 2.

Columns: params, MACs (at the dataset's input size), top-1, and torch eager img/s at batch 64.
Every run is a stage in ``--work`` (:mod:`rexnet_deploy.stages`), in a folder named after its
content key: a finished run with the same settings and inputs is reused, an interrupted training run
resumes, and a run with other settings goes to another folder. So an interrupted table resumes, and
changing one setting (say ``--finetune-lr``) redoes only the runs it changes. Writes
``compression.json``/``.md``/``.png`` into ``--out``.

CPU (Fashion-MNIST, rexnet 0.7 → 0.5 with the fmnist-cpu recipe; the recorded table)::

    python -m rexnet_deploy.experiments.compression_table --source-width 0.7 --target-width 0.5 --macs 0.5 \\
        --source-epochs 20 --finetune-epochs 3 --finetune-lr 0.1 --kd-weight 0.5 --seeds 0 1 --threads 2 \\
        --work runs/compression-converged --out bench/results/compression

``--seeds 0 1`` repeats the fine-tuned and from-scratch runs per seed and reports their mean. A source
trained too briefly makes the table compare schedules rather than pruning (bench/results/README.md).

(tiny-cifar trains at 12–20 img/s on a 2-core CPU, hours per epoch: its table needs a GPU.)

CIFAR-10 on a GPU (tiny-cifar 0.7 → 0.5, the seed's row)::

    python -m rexnet_deploy.experiments.compression_table --model rexnet_tiny_cifar --source-width 0.7 \\
        --target-width 0.5 --dataset cifar10 --data-dir data/cifar10 --download \\
        --recipe tiny-cifar-sgdmix-cosine --source-epochs 100 \\
        --finetune-recipe tiny-cifar-sgd --finetune-epochs 30 --finetune-lr 0.01 \\
        --device cuda --work runs/compression-cifar10 --out bench/results/compression-cifar10
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic_path, write_json
from ..cli_args import add_device_arg, apply_threads, positive_int
from ..data import load_datasets
from ..errors import UserError, require_file
from ..models import count_macs, count_params, load_model
from ..prune import FinetuneSpec, PruneRequest, prune_checkpoint
from ..report import format_table, markdown_table
from ..stages import Stage, stage_key
from ..train import Recipe, TrainRequest, fit_stage, load_recipe
from ..train.recipe import parse_set_overrides

PROG = "python -m rexnet_deploy.experiments.compression_table"
BATCH = 64
SPEED_ROUNDS = 3


def _folder(work: Path, label: str, settings: dict[str, Any], inputs: list[Path] | None = None) -> Path:
    """A run's folder in --work: its label and its content key, so a run of other settings never lands in it."""
    return work / f"{label}-{stage_key(settings, inputs or [])}"


def _train(label: str, recipe: Recipe, data: tuple, work: Path, device: str, progress: bool) -> tuple[Path, bool]:
    """A training run of ``recipe`` (its model built from the recipe and seeded by it): best.pt, and whether reused."""
    folder = _folder(work, label, {"recipe": recipe.to_dict()})
    return fit_stage(TrainRequest(recipe, folder, data=data, progress=progress, device=device), label)


def prune_settings(request: PruneRequest) -> dict[str, Any]:
    """What a pruning run's result depends on besides its source file: the request, less where it reads and
    writes and how it shows progress, with the fine-tuning recipe resolved (a recipe file can change)."""
    settings = {k: v for k, v in dataclasses.asdict(request).items()
                if k not in ("checkpoint", "out_dir", "data_dir", "device", "progress")}
    spec = request.finetune
    settings["finetune"]["recipe"] = load_recipe(spec.recipe, {**spec.overrides, "epochs": spec.epochs}).to_dict()
    return settings


def _prune(label: str, request: PruneRequest, work: Path) -> tuple[Path, bool]:
    """A prune_checkpoint run (a half-written one is redone whole): its fine-tuned checkpoint, and whether reused."""
    settings, inputs = prune_settings(request), [Path(request.checkpoint)]
    stage = Stage(label, _folder(work, label, settings, inputs), settings, inputs, ["finetuned.pt", "report.json"])
    reused = stage.done()
    stage.run(lambda tmp: prune_checkpoint(dataclasses.replace(request, out_dir=tmp)))
    return stage.folder / "finetuned.pt", reused


def images_per_second(models: list[torch.nn.Module], dataset, device: str, rounds: int = SPEED_ROUNDS) -> list[float]:
    """Torch eager (NCHW) throughput at batch 64 on real test images, for each model.

    Each model's img/s is 64 / its median step time, and the median over ``rounds`` round-robin passes
    over all models, so a burst of other work on a shared machine lands on one pass of every model
    alike rather than on one row.
    """
    from statistics import median

    from ..backends.torch import TorchRunner
    from ..bench.harness import speed_input
    from ..bench.timing import Timing, measure_steps, summarize_timings

    batch = speed_input(dataset, BATCH)
    runners = [TorchRunner(m, device=device) for m in models]
    passes: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for runner, speeds in zip(runners, passes):
            x = torch.from_numpy(batch).to(runner.device)
            times, _ = measure_steps(lambda r=runner, x=x: r.infer_tensor(x), Timing(),
                                     cuda=runner.device.type == "cuda")
            speeds.append(BATCH * 1e3 / summarize_timings(times, BATCH)["ms"]["median"])
    return [median(speeds) for speeds in passes]


def measure(label: str, paths: list[Path], test_set, input_size: tuple[int, int, int], epochs: str, device: str,
            progress: bool, limit: int | None = None) -> tuple[dict[str, Any], torch.nn.Module]:
    """A table row (without img/s) and the first run's model; one path per seed, top-1 is their mean."""
    from statistics import mean

    from ..backends import evaluate
    from ..backends.torch import TorchRunner

    runs = []
    for path in paths:
        model, meta = load_model(path)
        runs.append((model, meta, evaluate(TorchRunner(model, device=device), test_set, limit=limit,
                                           progress=progress)))
    model, meta, _ = runs[0]
    top1s = [metrics["top1"] for _, _, metrics in runs]
    return {"model": label, "architecture": f"{model.model_name} w{model.width:g}"
            + (" (pruned plan)" if "plan" in meta else ""),
            "params": count_params(model), "macs": count_macs(model, input_size), "top1": mean(top1s),
            "top1_runs": top1s, "top5": mean(metrics["top5"] for _, _, metrics in runs), "epochs": epochs,
            "checkpoints": [str(p) for p in paths]}, model


def _plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, r in enumerate(rows):  # the bar spans the seeds' top-1; labels at the same MACs stack, not overlap
        x, runs = r["macs"] / 1e6, r["top1_runs"]
        ax.errorbar(x, r["top1"], yerr=[[r["top1"] - min(runs)], [max(runs) - r["top1"]]], fmt="o", capsize=3)
        stack = sorted((o["top1"], j) for j, o in enumerate(rows) if o["macs"] == r["macs"]).index((r["top1"], i))
        ax.annotate(r["model"], (x, r["top1"]), fontsize=7, xytext=(6, 3 + 10 * stack), textcoords="offset points")
    ax.set_xlabel("MACs (M)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def build_table(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from ..bench.machine import machine_facts

    if not args.target_width < args.source_width:
        raise UserError(f"--target-width {args.target_width:g} must be below --source-width {args.source_width:g}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    apply_threads(args.threads)
    work, seeds, progress = Path(args.work), args.seeds, not args.no_progress
    se, fe = args.source_epochs, args.finetune_epochs

    def recipe(width: float, epochs: int, seed: int) -> Recipe:
        return load_recipe(args.recipe, {"model": args.model, "width": width, "dataset": args.dataset,
                                         "epochs": epochs, "seed": seed})

    source_recipe = recipe(args.source_width, se, seeds[0])
    finetune_overrides = parse_set_overrides(args.finetune_set)
    data = load_datasets(source_recipe, args.data_dir, download=args.download)
    test_set = data[1]
    input_size = (3, test_set.preprocess.size, test_set.preprocess.size)
    started = time.perf_counter()

    reused: list[bool] = []  # one per run: taken finished from --work, so its training is not in the total time

    def keep(run: tuple[Path, bool]) -> Path:
        reused.append(run[1])
        return run[0]

    if args.source:
        source = require_file(args.source, "--source checkpoint", "check the path, or drop --source to train one")
    else:
        source = keep(_train("source", source_recipe, data, work, device, progress))
    width_ft, width_kd, scratch, macs_ft = [], [], [], []
    for seed in seeds:
        finetune = FinetuneSpec(recipe=args.finetune_recipe or args.recipe, epochs=fe,
                                overrides={**finetune_overrides, "lr": args.finetune_lr, "seed": seed})
        # out_dir: each run's own stage folder, which _prune sets
        base = PruneRequest(source, work, width=args.target_width, importance=args.importance, steps=args.steps,
                            dataset=args.dataset, data_dir=args.data_dir, eval_limit=args.eval_images,
                            finetune=finetune, device=device, progress=progress)
        kd = dataclasses.replace(finetune, kd_weight=args.kd_weight, kd_temperature=args.kd_temperature)
        width_ft.append(keep(_prune(f"prune-width-seed{seed}", base, work)))
        width_kd.append(keep(_prune(f"prune-width-kd-seed{seed}", dataclasses.replace(base, finetune=kd), work)))
        scratch.append(keep(_train(f"scratch-seed{seed}", recipe(args.target_width, se + fe, seed), data, work,
                                   device, progress)))
        macs_ft.append(keep(_prune(f"prune-macs-seed{seed}",
                                   dataclasses.replace(base, width=None, macs_ratio=args.macs), work)))

    runs = [
        (f"source {args.model} w{args.source_width:g}", [source], f"{se}"),
        (f"pruned to w{args.target_width:g} plan + fine-tuned", width_ft, f"{se} + {fe}"),
        (f"pruned to w{args.target_width:g} plan + fine-tuned with KD (weight {args.kd_weight:g})", width_kd,
         f"{se} + {fe}"),
        (f"w{args.target_width:g} from scratch", scratch, f"{se + fe}"),
        (f"--macs {args.macs:g} global prune + fine-tuned", macs_ft, f"{se} + {fe}"),
    ]
    measured = [measure(label, paths, test_set, input_size, epochs, device, progress, args.eval_images)
                for label, paths, epochs in runs]
    rows = [row for row, _ in measured]
    for row, speed in zip(rows, images_per_second([model for _, model in measured], test_set, device)):
        row["img_per_s"] = speed
    src, scratch_row = rows[0], rows[3]
    for r in rows:
        r["delta_top1_vs_source"] = r["top1"] - src["top1"]
    goals = [{"model": r["model"], "top1": r["top1"], "within_1_point_of_source": src["top1"] - r["top1"] <= 1.0,
              "not_worse_than_scratch": r["top1"] >= scratch_row["top1"]} for r in rows[1:3]]
    return {"command": command,
            "dataset": test_set.name, "input_size": list(input_size),
            "test_images": min(args.eval_images or len(test_set), len(test_set)),
            "recipe": args.recipe, "seeds": seeds, "speed": {"runtime": "torch eager FP32 NCHW", "batch": BATCH,
                                             "threads": torch.get_num_threads(), "device": device,
                                             "rounds": SPEED_ROUNDS},
            "rows": rows, "goals": goals, "total_minutes": (time.perf_counter() - started) / 60,
            "runs_total": len(reused), "runs_reused": sum(reused),
            "machine": machine_facts(), "notes": args.note}


def display_rows(rows: list[dict]) -> list[dict]:
    """Rows for people; with several seeds, top-1 is their mean and each seed's top-1 has a column."""
    several = any(len(r["top1_runs"]) > 1 for r in rows)
    return [{"model": r["model"], "params (M)": round(r["params"] / 1e6, 3), "MACs (M)": round(r["macs"] / 1e6, 2),
             "top-1": r["top1"], **({"top-1 per seed": " / ".join(f"{t:.2f}" for t in r["top1_runs"])}
                                    if several else {}),
             "Δ top-1": r["delta_top1_vs_source"], "img/s": round(r["img_per_s"]), "epochs": r["epochs"]}
            for r in rows]


def write_table(table: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    speed = table["speed"]
    threads = f"{speed['threads']} thread{'s' if speed['threads'] != 1 else ''}"
    md = [f"# Compression: {table['dataset']} ({table['test_images']} test images, "
          f"{table['input_size'][1]}×{table['input_size'][2]})", "",
          f"Recipe `{table['recipe']}`. top-1 on those test images"
          + (f", the mean of seeds {', '.join(map(str, table['seeds']))} for the fine-tuned and from-scratch rows "
             f"(the source is one run, seed {table['seeds'][0]})" if len(table["seeds"]) > 1 else "")
          + "; Δ against the source. img/s: "
          f"{speed['runtime']}, batch {speed['batch']}, {threads} on {speed['device']} ({table['machine']['cpu']}), "
          f"64 / median step time, median of {speed['rounds']} round-robin passes.", "",
          markdown_table(display_rows(table["rows"]))]
    for g in table["goals"]:
        md.append(f"- {g['model']}: within 1 point of the source — "
                  f"{'yes' if g['within_1_point_of_source'] else 'NO'}; not worse than from scratch — "
                  f"{'yes' if g['not_worse_than_scratch'] else 'NO'}")
    reuse = (f" ({table['runs_reused']} of its {table['runs_total']} training runs reused finished from "
             f"earlier calls: their training is not in it)" if table["runs_reused"] else "")
    md += [f"- total time {table['total_minutes']:.1f} min{reuse}", "", f"Produced by: `{table['command']}`", ""]
    if table["notes"]:
        md += [f"Note: {table['notes']}", ""]
    paths = [write_json(out / "compression.json", table)]
    with atomic_path(out / "compression.md") as tmp:
        tmp.write_text("\n".join(md))
    paths.append(out / "compression.md")
    paths.append(_plot(table["rows"], out / "compression.png", f"{table['dataset']}: top-1 vs MACs"))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="rexnet", help="any-width family (default rexnet)")
    p.add_argument("--source-width", type=float, default=0.7)
    p.add_argument("--target-width", type=float, default=0.5)
    p.add_argument("--macs", type=float, default=0.5, help="budget of the global-prune row (default 0.5)")
    p.add_argument("--recipe", default="fmnist-cpu", help="recipe of the source and from-scratch runs")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-dir")
    p.add_argument("--download", action="store_true", help="fetch CIFAR if missing")
    p.add_argument("--source-epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--finetune-recipe", help="recipe for fine-tuning (default: --recipe)")
    p.add_argument("--finetune-lr", type=float, help="fine-tuning learning rate (default: the recipe's)")
    p.add_argument("--importance", default="l2")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--kd-weight", type=float, default=0.5)
    p.add_argument("--kd-temperature", type=float, default=4.0)
    p.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the fine-tuning recipe (e.g. ema=true)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds of the fine-tuned and from-scratch runs; top-1 is their mean (default 0). "
                        "The source is trained once, with the first")
    p.add_argument("--eval-images", type=int, help="measure top-1 on this many test images (default: all)")
    p.add_argument("--source", help="an already trained source checkpoint (skips training it)")
    add_device_arg(p, "cuda when available, else cpu")
    p.add_argument("--threads", type=positive_int, help="torch threads for the whole run, img/s column included "
                                               "(default: torch's)")
    p.add_argument("--work", default="runs/compression", help="where the runs go (reused when complete)")
    p.add_argument("--out", default="runs/compression/table",
                   help="where the table goes (default runs/compression/table; record one into the tracked "
                        "bench/results/compression on purpose)")
    p.add_argument("--note", default="", help="a remark stored with the table (e.g. machine load)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        table = build_table(args, shlex.join([*PROG.split(), *(sys.argv[1:] if argv is None else argv)]))
    except UserError as exc:
        print(f"compression_table: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for path in write_table(table, Path(args.out)):
        print(f"wrote {path}")
    print(format_table(display_rows(table["rows"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
