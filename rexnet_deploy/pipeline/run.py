"""The one-command pipeline: train → prune → fine-tune → calibrate → quantize/export → bench → check.

Every stage is the stage's own public function; this module only chains them, decides what can be
reused, and gathers the final table. A stage is reused when its folder holds a ``stage.json`` whose
key (a hash of the stage's settings and of its inputs' hashes) matches and whose outputs exist; a
training run that was killed resumes from its last epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..artifacts import atomic_dir, sha256_file, write_json
from ..errors import CheckFailed, UserError

STAGE_FILE = "stage.json"


@dataclasses.dataclass
class PipelineConfig:
    """What the pipeline does; ``quick()`` is the short version CI runs."""

    recipe: str = "fmnist-cpu"
    out: Path = Path("runs/pipeline-fmnist-cpu")
    data_dir: str | None = None
    train_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    prune_width: float | None = None
    prune_macs: float | None = 0.5
    importance: str = "l2"
    finetune_epochs: int = 3
    finetune_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    kd_weight: float = 0.5
    calib_images: int = 512
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    eval_images: int | None = None  # None: the whole test split
    batches: tuple[int, ...] = (1, 8, 32, 64)
    threads: int = 2
    baseline: str | None = "pipeline-fmnist-cpu"

    @classmethod
    def quick(cls, **changes: Any) -> "PipelineConfig":
        """Minutes on 2 cores: one epoch on a subset for training and fine-tuning, 2,000 test images."""
        return dataclasses.replace(cls(
            out=Path("runs/pipeline-quick"),
            train_overrides={"epochs": 2, "train_subset": 15000, "val_subset": 2000},
            finetune_epochs=1, finetune_overrides={"train_subset": 15000, "val_subset": 2000},
            calib_images=256, eval_images=2000, batches=(1, 32), baseline="pipeline-quick"), **changes)


def _key(settings: dict[str, Any], inputs: list[Path]) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str) + "".join(sha256_file(p) for p in inputs)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _reusable(folder: Path, key: str, outputs: list[str]) -> bool:
    try:
        stage = json.loads((folder / STAGE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stage.get("key") == key and all((folder / o).exists() for o in outputs)


def _mark(folder: Path, name: str, key: str, outputs: list[str], settings: dict[str, Any]) -> None:
    write_json(folder / STAGE_FILE, {"stage": name, "key": key, "outputs": outputs, "settings": settings})


def _stage(name: str, folder: Path, settings: dict[str, Any], inputs: list[Path], outputs: list[str],
           build: Callable[[Path], None], log: Callable[[str], None]) -> Path:
    """Run ``build(tmp_folder)`` unless ``folder`` already holds this stage's up-to-date outputs.

    The folder is replaced whole (atomic_dir), so an interrupted stage leaves the previous one intact.
    """
    key = _key(settings, inputs)
    if _reusable(folder, key, outputs):
        log(f"[{name}] up to date, reused: {folder}")
        return folder
    log(f"[{name}] running → {folder}")
    with atomic_dir(folder) as tmp:
        build(tmp)
        _mark(tmp, name, key, outputs, settings)
    return folder


def _train(cfg: PipelineConfig, recipe, log: Callable[[str], None]) -> Path:
    """Train with the recipe; a killed run resumes from ``last.pt`` (same key), a changed recipe restarts."""
    from ..data import load_dataset
    from ..models import create_model
    from ..train import train_model

    folder = cfg.out / "train"
    settings = {"recipe": recipe.to_dict()}
    key = _key(settings, [])
    if _reusable(folder, key, ["best.pt"]):
        log(f"[train] up to date, reused: {folder}")
        return folder / "best.pt"
    try:
        pending = json.loads((folder / "pending.json").read_text()).get("key")
    except (OSError, json.JSONDecodeError):
        pending = None
    resume = pending == key and (folder / "last.pt").exists()
    if resume:
        log(f"[train] resuming the interrupted run in {folder}")
    else:
        if folder.exists():
            shutil.rmtree(folder)  # another recipe's run: derived output, rebuilt below
        log(f"[train] running recipe {recipe.name} → {folder}")
        folder.mkdir(parents=True)
        write_json(folder / "pending.json", {"key": key})
    train_set = load_dataset(recipe.dataset, "train", cfg.data_dir)
    test_set = load_dataset(recipe.dataset, "test", cfg.data_dir)
    model = create_model(recipe.model, width=recipe.width, num_classes=train_set.num_classes, dropout=recipe.dropout)
    result = train_model(model, recipe, train_set, test_set, folder, resume=resume)
    (folder / "pending.json").unlink(missing_ok=True)
    _mark(folder, "train", key, ["best.pt"], settings)
    return result.best_checkpoint


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage (reusing what is up to date); returns the bench results and the check verdict.

    Raises :class:`CheckFailed` when the baseline check fails (after writing everything).
    """
    from ..bench import check_results, load_baseline, run_bench, terminal_table, write_junit
    from ..export import export_bundle, read_bundle
    from ..prune.stage import prune_checkpoint
    from ..quant import build_calibration_set
    from ..train import load_recipe

    # bad names fail here, before any long work
    recipe = load_recipe(cfg.recipe, cfg.train_overrides)
    if cfg.baseline:
        load_baseline(cfg.baseline)
    cfg.out.mkdir(parents=True, exist_ok=True)
    source = _train(cfg, recipe, log)
    recipe_dataset = recipe.dataset

    prune_settings = {"width": cfg.prune_width, "macs": cfg.prune_macs, "importance": cfg.importance,
                      "epochs": cfg.finetune_epochs, "overrides": cfg.finetune_overrides, "kd_weight": cfg.kd_weight}

    def prune(tmp: Path) -> None:
        prune_checkpoint(source, tmp, width=cfg.prune_width, macs_ratio=cfg.prune_macs, importance=cfg.importance,
                         dataset=recipe_dataset, data_dir=cfg.data_dir, epochs=cfg.finetune_epochs,
                         overrides=cfg.finetune_overrides, kd_weight=cfg.kd_weight, eval_limit=cfg.eval_images)

    prune_dir = _stage("prune", cfg.out / "prune", prune_settings, [source], ["finetuned.pt"], prune, log)
    pruned = prune_dir / "finetuned.pt"

    calib_settings = {"dataset": recipe_dataset, "num_images": cfg.calib_images, "seed": 0}
    calib_dir = _stage("calib", cfg.out / "calib", calib_settings, [], ["calib.pt"], lambda tmp: build_calibration_set(
        recipe_dataset, cfg.calib_images, 0, out=tmp / "calib.pt", data_dir=cfg.data_dir), log)
    calib = calib_dir / "calib.pt"

    export_settings = {"precisions": list(cfg.precisions), "eval_images": cfg.eval_images}
    bundle_dir = cfg.out / "export"

    def export(tmp: Path) -> None:
        export_bundle(checkpoint=pruned, precisions=cfg.precisions, out_dir=tmp / "bundle", dataset=recipe_dataset,
                      data_dir=cfg.data_dir, calibration=calib, eval_images=cfg.eval_images or 0)

    _stage("export", bundle_dir, export_settings, [pruned, calib], ["bundle/bundle.json"], export, log)
    bundle = read_bundle(bundle_dir / "bundle")

    log("[bench] measuring every artifact")
    suite = pipeline_suite(source, pruned, bundle_dir / "bundle", bundle, cfg, recipe_dataset)
    results = run_bench(suite, cfg.out / "bench", command="rexnet-deploy pipeline")
    print(terminal_table(results))
    verdict = None
    if cfg.baseline:
        report = check_results(results, cfg.baseline)
        write_junit(report, cfg.out / "bench" / "junit.xml")
        from ..report import format_table

        print(format_table(report.table_rows()))
        verdict = bool(report)
        if not verdict:
            raise CheckFailed(f"{len(report.failures)} accuracy/speed check(s) against baseline {cfg.baseline} failed "
                              f"(details above, JUnit in {cfg.out / 'bench' / 'junit.xml'})")
    return {"results": results, "passed": verdict, "out": str(cfg.out)}


def pipeline_suite(source: Path, pruned: Path, bundle_dir: Path, bundle: dict[str, Any], cfg: PipelineConfig,
                   dataset: str):
    """One group: the source model in torch (the reference), the pruned one, and every bundle file."""
    from ..bench.suite import ArtifactSpec, ModelGroup, Suite

    specs = [ArtifactSpec("torch-source-fp32", "checkpoint", source),
             ArtifactSpec("torch-pruned-fp32", "checkpoint", pruned)]
    for f in bundle["files"]:
        runtime = "ort" if f["kind"] == "onnx" else f["kind"]
        specs.append(ArtifactSpec(f"{runtime}-{f['variant']}", "onnx" if f["kind"] == "onnx" else "engine",
                                  bundle_dir / f["file"]))
    if not any(s.kind != "checkpoint" for s in specs):
        raise UserError(f"bundle {bundle_dir} holds no runnable file: re-run the export stage")
    return Suite(groups=(ModelGroup("pipeline", tuple(specs), "torch-source-fp32"),), name="pipeline",
                 dataset=dataset, data_dir=cfg.data_dir, eval_images=cfg.eval_images, batches=cfg.batches,
                 threads=cfg.threads)
