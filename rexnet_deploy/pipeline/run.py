"""The one-command pipeline: train → prune → fine-tune → calibrate → quantize/export → bench → check.

Every stage is the stage's own public function; this module only chains them, names what each
stage's result depends on, and gathers the final table. A stage is reused when its folder holds a
``stage.json`` whose key (a hash of the stage's settings and of its inputs' hashes) matches and whose
outputs exist (:mod:`rexnet_deploy.stages`); a training run that was killed resumes from its last epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import CheckFailed, UserError
from ..stages import Stage

if TYPE_CHECKING:
    from ..data import DataSplit
    from ..train import Recipe


@dataclasses.dataclass
class PipelineConfig:
    """What the pipeline does; ``quick()`` is the short version CI runs."""

    recipe: str = "fmnist-cpu"
    out: Path = Path("runs/pipeline-fmnist-cpu")
    pretrained: Path | None = None  # the training stage starts from this checkpoint's weights (any layout)
    model: str | None = None  # None: the recipe's (or the pretrained file's); also how a timm/official file is read
    width: float | None = None
    dataset: str | None = None  # None: the recipe's
    data_dir: str | None = None
    input_size: int | None = None  # ImageFolder: None is the model's own
    epochs: int | None = None  # None: the recipe's (or quick()'s)
    train_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    prune_width: float | None = None
    prune_macs: float | None = 0.5
    importance: str = "l2"
    finetune_epochs: int = 3
    finetune_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    kd_weight: float = 0.5
    calib_images: int = 512
    cap_calib_images: bool = True  # a training split smaller than calib_images gives all its images
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # or ("auto",): all, and the fastest here recommended
    deploy_batch: int | None = None  # what --precision auto times candidates at (None: the largest bench batch)
    engines: list[str] | None = None  # backends the export builds (None: every one this machine can)
    eval_images: int | None = None  # None: the whole test split
    batches: tuple[int, ...] = (1, 8, 32, 64)
    threads: int = 2
    baseline: str | None = "pipeline-fmnist-cpu"
    # on data other than the baseline's own (Fashion-MNIST), keep only its drop budgets, against this run's rows
    own_reference: bool = True
    command: str = "rexnet-deploy pipeline"  # what the results file says produced it
    progress: bool = True  # progress bars of every stage (no stage's key: a run reuses one made either way)

    @classmethod
    def quick(cls, **changes: Any) -> "PipelineConfig":
        """Minutes on 2 cores: one epoch on a subset for training and fine-tuning, 2,000 test images."""
        return dataclasses.replace(cls(
            out=Path("runs/pipeline-quick"),
            train_overrides={"epochs": 2, "train_subset": 15000, "val_subset": 2000},
            finetune_epochs=1, finetune_overrides={"train_subset": 15000, "val_subset": 2000},
            calib_images=256, eval_images=2000, batches=(1, 32), baseline="pipeline-quick"), **changes)


def pipeline_recipe(cfg: PipelineConfig) -> Recipe:
    """The training recipe: ``cfg.recipe`` with ``train_overrides``, then the flags that were given on top; from
    ``cfg.pretrained``, the file's architecture and (unless given) input size."""
    from ..train import load_recipe
    from ..train.pretrained import pretrained_recipe

    given = {"dataset": cfg.dataset, "input_size": cfg.input_size, "epochs": cfg.epochs, "model": cfg.model,
             "width": cfg.width}
    recipe = load_recipe(cfg.recipe, {**cfg.train_overrides, **{k: v for k, v in given.items() if v is not None}})
    if cfg.pretrained is not None:
        recipe = pretrained_recipe(recipe, cfg.pretrained, cfg.model, cfg.width)
    return recipe


def train_stage(cfg: PipelineConfig, recipe: Recipe, log: Callable[[str], None] = print,
                data: tuple[DataSplit, DataSplit] | None = None) -> Path:
    """The pipeline's training step: ``fit`` with the recipe in ``cfg.out/train``; its best checkpoint.

    A finished run of this recipe (and of the same ``cfg.pretrained`` file, by content) is reused, a killed one
    resumes from ``last.pt``, another one is replaced. The weights start as ``rexnet-deploy train`` with the same
    recipe (and ``--pretrained``) starts them.
    ``data``: the recipe's (train, val) splits, already loaded (``load_datasets``); None loads them.
    """
    from ..train import TrainRequest, fit_stage

    best, _ = fit_stage(TrainRequest(recipe, cfg.out / "train", data=data, data_dir=cfg.data_dir,
                                     progress=cfg.progress, pretrained=cfg.pretrained), log=log)
    return best


def run_pipeline(cfg: PipelineConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage (reusing what is up to date); returns the bench results and the check verdict.

    Raises :class:`CheckFailed` when the baseline check fails (after writing everything).
    """
    from ..bench import check_results, run_bench, terminal_table, write_junit
    from ..bundle import BundleRequest, export_bundle, read_bundle
    from ..data import load_datasets, recipe_spec
    from ..prune import FinetuneSpec, PruneRequest, prune_checkpoint
    from ..quant import build_calibration_set

    # bad names and bad data fail here, before anything is written
    recipe = pipeline_recipe(cfg)
    spec = recipe_spec(recipe, cfg.data_dir)
    data = load_datasets(recipe, cfg.data_dir)
    train_images = len(data[0])
    baseline = _baseline(cfg, spec.name)
    cfg.out.mkdir(parents=True, exist_ok=True)
    source = train_stage(cfg, recipe, log, data)

    prune_settings = {"width": cfg.prune_width, "macs": cfg.prune_macs, "importance": cfg.importance,
                      "epochs": cfg.finetune_epochs, "overrides": cfg.finetune_overrides, "kd_weight": cfg.kd_weight}

    def prune(tmp: Path) -> None:
        finetune = FinetuneSpec(epochs=cfg.finetune_epochs, overrides=cfg.finetune_overrides, kd_weight=cfg.kd_weight)
        prune_checkpoint(PruneRequest(source, tmp, width=cfg.prune_width, macs_ratio=cfg.prune_macs,
                                      importance=cfg.importance, data_dir=cfg.data_dir, eval_limit=cfg.eval_images,
                                      finetune=finetune, progress=cfg.progress))

    prune_dir = Stage("prune", cfg.out / "prune", prune_settings, [source], ["finetuned.pt"]).run(prune, log)
    pruned = prune_dir / "finetuned.pt"

    calib_images = min(cfg.calib_images, train_images) if cfg.cap_calib_images else cfg.calib_images
    calib_settings = {"dataset_spec": spec.to_dict(), "num_images": calib_images, "seed": 0}
    calib_dir = Stage("calib", cfg.out / "calib", calib_settings, outputs=["calib.pt"]).run(
        lambda tmp: build_calibration_set(spec, calib_images, 0, out=tmp / "calib.pt"), log)
    calib = calib_dir / "calib.pt"

    deploy_batch = cfg.deploy_batch or max(cfg.batches)
    export_settings = {"precisions": list(cfg.precisions), "eval_images": cfg.eval_images,
                       "deploy_batch": deploy_batch,
                       "engines": list(cfg.engines) if cfg.engines is not None else "all available"}
    bundle_dir = cfg.out / "export"

    def export(tmp: Path) -> None:
        export_bundle(BundleRequest(checkpoint=pruned, precisions=cfg.precisions, out_dir=tmp / "bundle",
                                    dataset=spec.name, data_dir=cfg.data_dir, calibration=calib, engines=cfg.engines,
                                    eval_images=cfg.eval_images or 0, deploy_batch=deploy_batch,
                                    progress=cfg.progress))

    Stage("export", bundle_dir, export_settings, [pruned, calib], ["bundle/bundle.json"]).run(export, log)
    bundle = read_bundle(bundle_dir / "bundle")

    log("[bench] measuring every artifact")
    suite = pipeline_suite(source, pruned, bundle_dir / "bundle", bundle, cfg, spec.name)
    results = run_bench(suite, cfg.out / "bench", command=cfg.command, progress=cfg.progress)
    print(terminal_table(results))
    verdict = None
    if baseline is not None:
        report = check_results(results, baseline)
        write_junit(report, cfg.out / "bench" / "junit.xml")
        from ..report import format_table

        print(format_table(report.table_rows()))
        verdict = bool(report)
        if not verdict:
            against = _baseline_name(cfg, spec.name)
            raise CheckFailed(f"{len(report.failures)} accuracy/speed check(s) against {against} failed"
                              f" (details above, JUnit in {cfg.out / 'bench' / 'junit.xml'})")
    return {"results": results, "passed": verdict, "out": str(cfg.out)}


BASELINE_DATASET = "fashion_mnist"  # the data the packaged pipeline baselines' floors were measured on


def own_reference_baseline(name: str) -> dict[str, Any]:
    """Baseline ``name`` with its absolute floors (``min_top1``/``min_top5``) removed: only the drop budgets
    remain, each against a reference row of the same run, which is what holds on anyone's data."""
    from ..bench.check import resolve_baseline_path

    path = resolve_baseline_path(name)
    data = yaml.safe_load(path.read_text())
    floors = ("min_top1", "min_top5")
    artifacts = {}
    for pattern, limits in (data.get("artifacts") or {}).items():
        kept = {k: v for k, v in (limits or {}).items() if k not in floors}
        if set(kept) - {"versus"}:  # an entry left with no limit would check nothing
            artifacts[pattern] = kept
    return {"description": f"{data.get('description', name)} — drop budgets only, against this run's own rows",
            "suite": data.get("suite"), "defaults": {k: v for k, v in (data.get("defaults") or {}).items()
                                                     if k not in floors}, "artifacts": artifacts}


def _own_reference(cfg: PipelineConfig, dataset: str) -> bool:
    """Whether the check keeps only the baseline's drop budgets: on data other than the baseline's own."""
    return cfg.own_reference and dataset != BASELINE_DATASET


def _baseline(cfg: PipelineConfig, dataset: str) -> str | dict[str, Any] | None:
    """What the check stage compares with (loaded here, so a bad name fails before any work)."""
    from ..bench import load_baseline

    if not cfg.baseline:
        return None
    baseline = own_reference_baseline(cfg.baseline) if _own_reference(cfg, dataset) else cfg.baseline
    load_baseline(baseline)
    return baseline


def _baseline_name(cfg: PipelineConfig, dataset: str) -> str:
    return f"the drop budgets of baseline {cfg.baseline} (this run's own reference rows)" \
        if _own_reference(cfg, dataset) else f"baseline {cfg.baseline}"


def pipeline_suite(source: Path, pruned: Path, bundle_dir: Path, bundle: dict[str, Any], cfg: PipelineConfig,
                   dataset: str):
    """One group: the source model in torch (the reference), the pruned one, and every bundle file."""
    from ..backends import get_backend
    from ..bench.suite import ArtifactSpec, ModelGroup, Suite

    specs = [ArtifactSpec("torch-source-fp32", "checkpoint", source),
             ArtifactSpec("torch-pruned-fp32", "checkpoint", pruned)]
    for f in bundle["files"]:
        backend = get_backend(f["backend"])
        specs.append(ArtifactSpec(f"{backend.row_tag}-{f['variant']}", backend.role, bundle_dir / f["file"],
                                  device=backend.devices[0]))
        if f["precision"] == "fp32":
            # the peer rows: the same FP32 file under the runtime's own defaults, run as its own benchmark runs it
            # (openvino-default, ort-default: what a user gets without this tool)
            for mode, precision in backend.runner_modes().items():
                if precision is None:
                    specs.append(ArtifactSpec(f"{backend.row_tag}-default", backend.role, bundle_dir / f["file"],
                                              device=backend.devices[0], mode=mode))
    pick = bundle.get("recommended")
    if pick:  # --precision auto's file, again, under a name a baseline can gate on: pipeline/recommended
        backend = get_backend(pick["backend"])
        specs.append(ArtifactSpec("recommended", backend.role, bundle_dir / pick["path"], device=backend.devices[0],
                                  mode=pick["mode"]))
    if not any(s.kind != "checkpoint" for s in specs):
        raise UserError(f"bundle {bundle_dir} holds no runnable file: re-run the export stage")
    return Suite(groups=(ModelGroup("pipeline", tuple(specs), "torch-source-fp32"),), name="pipeline",
                 dataset=dataset, data_dir=cfg.data_dir, eval_images=cfg.eval_images, batches=cfg.batches,
                 threads=cfg.threads)
