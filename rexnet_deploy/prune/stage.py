"""The prune stage: checkpoint in → pruned checkpoint (+ fine-tuned one) and a report out.

``prune_checkpoint(PruneRequest(...))`` takes four steps: load the inputs (the source model, its
dataset, the fine-tuning recipe) and measure the source; prune it (:mod:`.engine`), save the result
with :func:`~rexnet_deploy.models.save_model_checkpoint` (state_dict + the channel plan when it is
not a standard width's) and check that :func:`~rexnet_deploy.models.load_model` rebuilds it
exactly; fine-tune it with :func:`~rexnet_deploy.train.fit`, optionally distilling from the unpruned
model; write the before / right-after / fine-tuned table as JSON and Markdown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..artifacts import atomic_path, sha256_file, write_json, write_manifest
from ..data import DataSplit, check_num_classes, data_record, load_split, recipe_spec, recorded_spec, resolve_spec
from ..errors import UserError
from ..models import count_macs, count_params, get_model_info, load_model, save_model_checkpoint
from ..models.checkpoint import read_checkpoint
from ..models.rexnet import ReXNet
from ..report import format_table, markdown_table
from ..train import Distillation, Recipe, TrainRequest, fit, load_recipe
from ..train.recipe import recipe_from_dict
from ..train.trainer import check_distillation
from .engine import PruneSpec, check_narrower, prune_outcome
from .groups import widths_off_multiple

TAYLOR_IMAGES = 256  # labelled training images whose loss gradient ranks channels for Taylor importance


@dataclass
class FinetuneSpec:
    """How the pruned model is fine-tuned.

    ``recipe``: a recipe name or YAML file, None for the one the checkpoint was trained with;
    ``overrides`` change its keys (lr, train_subset, ...). ``epochs`` None: the recipe's; 0: no
    fine-tuning. ``kd_weight`` > 0 distils from the unpruned model at ``kd_temperature``.
    """

    recipe: str | None = None
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    kd_weight: float = 0.0
    kd_temperature: float = 4.0


@dataclass
class PruneRequest:
    """Prune ``checkpoint`` into ``out_dir`` to exactly one target, then fine-tune it.

    The target: ``width`` (the family's channel plan at that width), or ``macs_ratio`` /
    ``params_ratio`` (a global budget relative to the source), channels ranked by ``importance`` in
    ``steps`` rounds. ``model_name``/``source_width`` describe a checkpoint without metadata
    (timm/official layout). ``dataset`` (default: the checkpoint's) gives the test top-1, over the first
    ``eval_limit`` test images (all by default), and the fine-tuning data.
    """

    checkpoint: str | Path
    out_dir: str | Path
    width: float | None = None
    macs_ratio: float | None = None
    params_ratio: float | None = None
    importance: str = "l2"
    steps: int = 1
    model_name: str | None = None
    source_width: float | None = None
    dataset: str | None = None
    data_dir: str | None = None
    eval_limit: int | None = None
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    device: str | None = None
    progress: bool = True

    @property
    def spec(self) -> PruneSpec:
        return PruneSpec(self.width, self.macs_ratio, self.params_ratio, self.importance, self.steps)

    def check(self) -> None:
        """One-line refusals of a malformed request, before any model or data is touched."""
        self.spec.check()
        check_distillation(self.finetune.kd_weight, self.finetune.kd_temperature)


@dataclass
class _Inputs:
    """What pruning reads, loaded and checked: the source, its data, the fine-tuning recipe (None: none)."""

    source: ReXNet
    meta: dict[str, Any]
    dataset: str | None
    recipe: Recipe | None
    test_set: DataSplit | None
    train_set: DataSplit | None
    input_size: tuple[int, int, int]
    source_metrics: dict[str, float] | None


@dataclass
class _Pruned:
    """The pruned model as saved in ``pruned.pt``, with what every later checkpoint records about it."""

    model: ReXNet
    path: Path
    settings: dict[str, Any]
    provenance: dict[str, Any]
    data_meta: dict[str, Any]
    metrics: dict[str, float] | None
    seconds: float


def load_source(checkpoint: str | Path, model_name: str | None = None,
                width: float | None = None) -> tuple[ReXNet, dict[str, Any]]:
    """The model to prune; ``model_name`` (if given) must be of the checkpoint's family."""
    saved_name = read_checkpoint(checkpoint).get("model_name")
    if model_name and saved_name:
        saved, wanted = get_model_info(saved_name), get_model_info(model_name)
        if saved.family != wanted.family:
            raise UserError(f"{checkpoint} holds {saved_name} (family {saved.family}), not a {wanted.family} "
                            f"model: drop --model or pick a {wanted.family} checkpoint")
        model_name = None  # same family: the checkpoint's own name and width rule
    return load_model(checkpoint, model_name=model_name, width=width)


def _evaluate(model: ReXNet, dataset: DataSplit, limit: int | None, device: str,
              progress: bool) -> dict[str, float]:
    from ..backends import evaluate
    from ..backends.torch import TorchRunner

    return evaluate(TorchRunner(model, device=device), dataset, limit=limit, progress=progress)


def _row(stage: str, model: ReXNet, input_size: tuple[int, int, int], metrics: dict | None) -> dict[str, Any]:
    standard = get_model_info(model.model_name).spec.plan(model.width) == model.plan
    return {"stage": stage, "model": f"{model.model_name} w{model.width:g}" + ("" if standard else " (pruned plan)"),
            "params": count_params(model),
            "macs": count_macs(model, input_size), "top1": metrics["top1"] if metrics else None,
            "top5": metrics["top5"] if metrics else None}


def display_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Report rows for people: params and MACs in millions."""
    return [{"stage": r["stage"], "model": r["model"], "params (M)": round(r["params"] / 1e6, 3),
             "MACs (M)": round(r["macs"] / 1e6, 2), "top-1": r["top1"], "top-5": r["top5"]} for r in rows]


def _check_rebuild(model: ReXNet, path: Path, example: torch.Tensor) -> None:
    """The saved file alone (name, width, plan, state_dict) must give back the same network."""
    rebuilt, _ = load_model(path)
    with torch.no_grad():
        diff = (rebuilt(example) - model.eval()(example)).abs().max().item()
    if diff > 1e-5:
        raise RuntimeError(f"{path} does not rebuild the pruned model (logits differ by {diff:.2e})")


def _finetune_recipe(spec: FinetuneSpec, meta: dict, source: str) -> Recipe:
    overrides = {**spec.overrides, "epochs": spec.epochs}
    if spec.recipe:
        return load_recipe(spec.recipe, overrides)
    saved = meta.get("recipe")
    if not isinstance(saved, dict):
        raise UserError(f"{source} does not record the recipe it was trained with: pass --recipe "
                        f"(e.g. fmnist-cpu) or --epochs 0 to skip fine-tuning")
    given = {k: v for k, v in overrides.items() if v is not None}
    # a fine-tuned transfer's recipe protected a new head; the pruned model has none, and its whole network
    # must recover at the recipe's rate from the first step
    whole_network = {"backbone_lr_scale": 1.0, "freeze_epochs": 0}
    return recipe_from_dict({**saved, **whole_network, **given}, f"{source} (recipe)")


def prune_checkpoint(request: PruneRequest) -> Path:
    """Run ``request``; returns the final checkpoint (fine-tuned unless ``finetune.epochs == 0``).

    ``out_dir`` gets ``pruned.pt`` (right after pruning), ``plan.json``, ``finetune/`` (the trainer's
    run), ``finetuned.pt`` and ``report.json``/``report.md``, each checkpoint with its manifest.
    """
    request.check()
    out = Path(request.out_dir)
    if (out / "finetune" / "last.pt").exists() or (out / "pruned.pt").exists():
        raise UserError(f"{out} already holds a pruning run: choose another --out or remove it")
    device = request.device or ("cuda" if torch.cuda.is_available() else "cpu")

    inputs = _load_inputs(request, device)
    rows = [_row("source", inputs.source, inputs.input_size, inputs.source_metrics)]
    pruned = _prune_and_save(request, inputs, out, device)
    rows.append(_row("pruned", pruned.model, inputs.input_size, pruned.metrics))
    final, finetune_info = pruned.path, None
    if inputs.recipe is not None:
        final, finetune_info, tuned_row = _finetune(request, inputs, pruned, out, device)
        rows.append(tuned_row)
    _report(request, inputs, pruned, rows, finetune_info, final, out)
    return final


def _load_inputs(request: PruneRequest, device: str) -> _Inputs:
    """The source model and the splits it is measured and fine-tuned on; the source's metrics."""
    checkpoint = request.checkpoint
    source, meta = load_source(checkpoint, request.model_name, request.source_width)
    if request.width is not None:
        check_narrower(source, request.width, str(checkpoint))  # before any data is loaded
    recipe = None
    if request.finetune.epochs != 0:
        recipe = _finetune_recipe(request.finetune, meta, str(checkpoint))
    origin = f"checkpoint {checkpoint}"
    spec = resolve_spec(meta, dataset=request.dataset, data_dir=request.data_dir, model=source.model_name,
                        origin=origin, required=False)
    if spec is None and recipe is not None:  # a checkpoint without a data record: the fine-tuning recipe's data
        spec = recipe_spec(recipe, request.data_dir).replace(origin=origin)
    if spec is None:
        print("no dataset recorded or given (--dataset): top-1 is not measured")
    test_set = train_set = None
    if spec is not None:
        test_set = load_split(spec, "val")
        check_num_classes(test_set, source.num_classes, origin)
        trained = recorded_spec(meta, origin)
        if trained is not None and trained.preprocess is not None and \
                not trained.preprocess.matches(test_set.preprocess):
            raise UserError(f"{checkpoint} was trained with preprocessing {trained.preprocess.describe()}, but "
                            f"{spec.name} uses {test_set.preprocess.describe()}: pass the dataset it was trained on")
        if request.importance == "taylor" or recipe is not None:
            train_set = load_split(test_set.spec, "train")
    size = test_set.preprocess.size if test_set is not None else \
        (meta.get("preprocess") or {}).get("size") or get_model_info(source.model_name).spec.input_size[1]
    metrics = _evaluate(source, test_set, request.eval_limit, device, request.progress) \
        if test_set is not None else None
    return _Inputs(source, meta, spec.name if spec is not None else None, recipe, test_set, train_set,
                   (3, size, size), metrics)


def _prune_and_save(request: PruneRequest, inputs: _Inputs, out: Path, device: str) -> _Pruned:
    """Prune the source, measure the result, save pruned.pt + plan.json and check the file rebuilds it."""
    taylor_batch = None
    if request.importance == "taylor":
        if inputs.train_set is None:
            raise UserError("--importance taylor needs labelled images: pass --dataset")
        pick = inputs.train_set.subset(TAYLOR_IMAGES, seed=0)
        taylor_batch = (pick.inputs(range(len(pick))), pick.labels)
    started = time.perf_counter()
    outcome = prune_outcome(inputs.source, request.spec, example_input=torch.randn(1, *inputs.input_size),
                            taylor_batch=taylor_batch, progress=request.progress)
    seconds = time.perf_counter() - started
    model = outcome.model
    settings = {"mode": outcome.info["mode"], "width": request.width, "macs_ratio": request.macs_ratio,
                "params_ratio": request.params_ratio, "importance": request.importance, "steps": request.steps,
                **outcome.info, "widths_off_multiple_of_8": widths_off_multiple(model)}
    provenance = {"source": str(request.checkpoint), "source_sha256": sha256_file(request.checkpoint),
                  "pruning": settings}
    if inputs.meta.get("untrained"):  # random weights pruned for a speed study stay marked (fine-tuning trains them)
        provenance["untrained"] = True
    test_set = inputs.test_set
    data_meta = data_record(test_set) if test_set is not None else {}
    metrics = _evaluate(model, test_set, request.eval_limit, device, request.progress) \
        if test_set is not None else None
    path = save_model_checkpoint(model, out / "pruned.pt", **data_meta, **provenance, metrics=metrics or {})
    write_manifest(path, {"kind": "checkpoint", "model_name": model.model_name, "width": model.width,
                          **data_meta, **provenance, "metrics": metrics})
    write_json(out / "plan.json", model.plan.to_dict())
    _check_rebuild(model, path, torch.randn(2, *inputs.input_size))
    return _Pruned(model, path, settings, provenance, data_meta, metrics, seconds)


def _finetune(request: PruneRequest, inputs: _Inputs, pruned: _Pruned, out: Path,
              device: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Train the pruned model on (distilling from the source if asked); finetuned.pt, its facts and report row."""
    spec, recipe = request.finetune, inputs.recipe
    distill = Distillation(inputs.source, spec.kd_weight, spec.kd_temperature) if spec.kd_weight > 0 else None
    started = time.perf_counter()
    result = fit(TrainRequest(recipe, out / "finetune", model=pruned.model, data=(inputs.train_set, inputs.test_set),
                              distill=distill, progress=request.progress, device=device,
                              provenance=pruned.provenance))
    tuned, tuned_meta = load_model(result.best_checkpoint)
    metrics = _evaluate(tuned, inputs.test_set, request.eval_limit, device, request.progress)
    info = {"recipe": recipe.to_dict(), "epochs": recipe.epochs, "kd_weight": spec.kd_weight,
            "kd_temperature": spec.kd_temperature, "best_epoch": tuned_meta.get("epoch"),
            "seconds": time.perf_counter() - started, "run_dir": str(out / "finetune")}
    final = save_model_checkpoint(tuned, out / "finetuned.pt", **pruned.data_meta, **pruned.provenance,
                                  recipe=recipe.to_dict(), finetune=info, metrics=metrics)
    write_manifest(final, {"kind": "checkpoint", "model_name": tuned.model_name, "width": tuned.width,
                           **pruned.data_meta, **pruned.provenance, "finetune": info, "metrics": metrics})
    return final, info, _row("pruned + fine-tuned", tuned, inputs.input_size, metrics)


def _report(request: PruneRequest, inputs: _Inputs, pruned: _Pruned, rows: list[dict[str, Any]],
            finetune_info: dict[str, Any] | None, final: Path, out: Path) -> None:
    """report.json / report.md and the table on the console."""
    metrics = inputs.source_metrics
    report = {"source": str(request.checkpoint), "dataset": inputs.dataset,
              "eval_images": metrics["num_images"] if metrics else None,
              "input_size": list(inputs.input_size), "pruning": pruned.settings, "prune_seconds": pruned.seconds,
              "threads": torch.get_num_threads(), "finetune": finetune_info, "rows": rows,
              "plan": pruned.model.plan.to_dict(), "checkpoint": str(final)}
    write_json(out / "report.json", report)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(_markdown(report))
    print(format_table(display_rows(rows)))


def _markdown(report: dict) -> str:
    p = report["pruning"]
    target = f"the width-{p['width']:g} plan" if p["mode"] == "width" else \
        f"{p['ratio']:g}× the source's {'MACs' if p['mode'] == 'macs' else 'parameters'}"
    lines = [f"# Pruning report: {report['source']}", "",
             f"Pruned to {target} with {p['importance']} importance in {p['steps']} step(s); "
             f"dataset {report['dataset'] or '—'} at {report['input_size'][1]}×{report['input_size'][2]}.", "",
             markdown_table(display_rows(report["rows"]))]
    off = p["widths_off_multiple_of_8"]
    if p["mode"] != "width" and off["chain_inner"]:
        lines.append(f"Widths not a multiple of 8 (inside residual chains, set by the channels each block "
                     f"adds): {', '.join(off['chain_inner'])}.\n")
    return "\n".join(lines)
