"""The prune stage: checkpoint in → pruned checkpoint (+ fine-tuned one) and a report out.

``prune_checkpoint`` loads a trained checkpoint, measures it, prunes it (:mod:`.engine`), saves the
result with :func:`~rexnet_deploy.models.save_model_checkpoint` (state_dict + the channel plan when it
is not a standard width's) and checks that :func:`~rexnet_deploy.models.load_model` rebuilds it
exactly, then fine-tunes it with the training stage's trainer, optionally distilling from the
unpruned model, and writes the before / right-after / fine-tuned table as JSON and Markdown.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..artifacts import sha256_file, write_json, write_manifest
from ..errors import UserError
from ..models import count_macs, count_params, get_model_info, load_model, save_model_checkpoint
from ..models.checkpoint import read_checkpoint
from ..models.rexnet import ReXNet
from ..report import format_table, markdown_table
from .engine import check_narrower, check_request, prune_outcome
from .groups import widths_off_multiple

TAYLOR_IMAGES = 256  # labelled training images whose loss gradient ranks channels for Taylor importance


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


def _dataset_name(dataset: str | None, meta: dict) -> str | None:
    if dataset:
        return dataset
    saved = meta.get("dataset")
    return saved.get("dataset") if isinstance(saved, dict) else saved


def _evaluate(model: ReXNet, dataset, limit: int | None, device: str, progress: bool) -> dict[str, float]:
    from ..runtime.evaluate import evaluate
    from ..runtime.torch_runner import TorchRunner

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


def _finetune_recipe(recipe: str | None, meta: dict, overrides: dict[str, Any], source: str):
    from ..train.recipe import load_recipe, recipe_from_dict

    if recipe:
        return load_recipe(recipe, overrides)
    saved = meta.get("recipe")
    if not isinstance(saved, dict):
        raise UserError(f"{source} does not record the recipe it was trained with: pass --recipe "
                        f"(e.g. fmnist-cpu) or --epochs 0 to skip fine-tuning")
    given = {k: v for k, v in overrides.items() if v is not None}
    return recipe_from_dict({**saved, **given}, f"{source} (recipe)")


def prune_checkpoint(checkpoint: str | Path, out_dir: str | Path, *, model_name: str | None = None,
                     source_width: float | None = None, width: float | None = None, macs_ratio: float | None = None,
                     params_ratio: float | None = None, importance: str = "l2", steps: int = 1,
                     dataset: str | None = None, data_dir: str | None = None, recipe: str | None = None,
                     epochs: int | None = None, overrides: dict[str, Any] | None = None, kd_weight: float = 0.0,
                     kd_temperature: float = 4.0, eval_limit: int | None = None, device: str | None = None,
                     progress: bool = True) -> Path:
    """Prune ``checkpoint`` into ``out_dir``; returns the final checkpoint (fine-tuned unless ``epochs == 0``).

    ``out_dir`` gets ``pruned.pt`` (right after pruning), ``plan.json``, ``finetune/`` (the trainer's
    run), ``finetuned.pt`` and ``report.json``/``report.md``, each checkpoint with its manifest.
    ``epochs`` None: the fine-tuning recipe's epochs; 0: no fine-tuning. The recipe is ``recipe``, or
    the one the checkpoint was trained with; ``overrides`` change its keys (lr, train_subset, ...).
    ``kd_weight`` > 0 distils from the unpruned model.
    """
    check_request(width, macs_ratio, params_ratio, importance, steps)
    if not 0.0 <= kd_weight <= 1.0 or kd_temperature <= 0:
        raise UserError(f"--kd-weight must lie in 0..1 and --kd-temperature be positive "
                        f"(got {kd_weight:g}, {kd_temperature:g})")
    out = Path(out_dir)
    if (out / "finetune" / "last.pt").exists() or (out / "pruned.pt").exists():
        raise UserError(f"{out} already holds a pruning run: choose another --out or remove it")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    source, meta = load_source(checkpoint, model_name, source_width)
    if width is not None:
        check_narrower(source, width, str(checkpoint))  # before any data is loaded
    name = _dataset_name(dataset, meta)
    finetune = epochs != 0
    ft_recipe = None
    if finetune:
        ft_recipe = _finetune_recipe(recipe, meta, {**(overrides or {}), "epochs": epochs}, str(checkpoint))
        name = name or ft_recipe.dataset
    if name is None:
        print("no dataset recorded or given (--dataset): top-1 is not measured")
    test_set = train_set = None
    if name is not None:
        from ..data import load_dataset

        test_set = load_dataset(name, "test", data_dir)
        if "preprocess" in meta:
            from ..data import Preprocess

            if not Preprocess.from_dict(meta["preprocess"]).matches(test_set.preprocess):
                raise UserError(f"{checkpoint} was trained with preprocessing {meta['preprocess']}, but {name} "
                                f"uses {test_set.preprocess.to_dict()}: pass the dataset it was trained on")
        if importance == "taylor" or finetune:
            train_set = load_dataset(name, "train", data_dir)
    size = test_set.preprocess.size if test_set is not None else \
        (meta.get("preprocess") or {}).get("size") or get_model_info(source.model_name).spec.input_size[1]
    input_size = (3, size, size)

    source_metrics = _evaluate(source, test_set, eval_limit, device, progress) if test_set is not None else None
    rows = [_row("source", source, input_size, source_metrics)]
    taylor_batch = None
    if importance == "taylor":
        if train_set is None:
            raise UserError("--importance taylor needs labelled images: pass --dataset")
        pick = train_set.subset(TAYLOR_IMAGES, seed=0)
        taylor_batch = (pick.preprocess(pick.images), pick.labels)
    started = time.perf_counter()
    outcome = prune_outcome(source, width=width, macs_ratio=macs_ratio, params_ratio=params_ratio,
                            importance=importance, steps=steps, example_input=torch.randn(1, *input_size),
                            taylor_batch=taylor_batch, progress=progress)
    prune_seconds = time.perf_counter() - started
    pruned = outcome.model
    settings = {"mode": outcome.info["mode"], "width": width, "macs_ratio": macs_ratio, "params_ratio": params_ratio,
                "importance": importance, "steps": steps, **outcome.info,
                "widths_off_multiple_of_8": widths_off_multiple(pruned)}
    provenance = {"source": str(checkpoint), "source_sha256": sha256_file(checkpoint), "pruning": settings}
    data_meta = {"dataset": name, "preprocess": test_set.preprocess.to_dict()} if test_set is not None else {}
    pruned_metrics = _evaluate(pruned, test_set, eval_limit, device, progress) if test_set is not None else None
    rows.append(_row("pruned", pruned, input_size, pruned_metrics))
    pruned_path = save_model_checkpoint(pruned, out / "pruned.pt", **data_meta, **provenance,
                                        metrics=pruned_metrics or {})
    write_manifest(pruned_path, {"kind": "checkpoint", "model_name": pruned.model_name, "width": pruned.width,
                                 **data_meta, **provenance, "metrics": pruned_metrics})
    write_json(out / "plan.json", pruned.plan.to_dict())
    _check_rebuild(pruned, pruned_path, torch.randn(2, *input_size))
    final = pruned_path

    finetune_info = None
    if finetune:
        from ..train import train_model

        teacher = source if kd_weight > 0 else None
        started = time.perf_counter()
        result = train_model(pruned, ft_recipe, train_set, test_set, out / "finetune", teacher=teacher,
                             kd_temperature=kd_temperature, kd_weight=kd_weight, progress=progress,
                             device=device, provenance=provenance)
        tuned, tuned_meta = load_model(result.best_checkpoint)
        tuned_metrics = _evaluate(tuned, test_set, eval_limit, device, progress)
        finetune_info = {"recipe": ft_recipe.to_dict(), "epochs": ft_recipe.epochs, "kd_weight": kd_weight,
                         "kd_temperature": kd_temperature, "best_epoch": tuned_meta.get("epoch"),
                         "seconds": time.perf_counter() - started, "run_dir": str(out / "finetune")}
        rows.append(_row("pruned + fine-tuned", tuned, input_size, tuned_metrics))
        final = save_model_checkpoint(tuned, out / "finetuned.pt", **data_meta, **provenance,
                                      recipe=ft_recipe.to_dict(), finetune=finetune_info, metrics=tuned_metrics)
        write_manifest(final, {"kind": "checkpoint", "model_name": tuned.model_name, "width": tuned.width,
                               **data_meta, **provenance, "finetune": finetune_info, "metrics": tuned_metrics})

    report = {"source": str(checkpoint), "dataset": name,
              "eval_images": source_metrics["num_images"] if source_metrics else None,
              "input_size": list(input_size), "pruning": settings, "prune_seconds": prune_seconds,
              "threads": torch.get_num_threads(),
              "finetune": finetune_info, "rows": rows, "plan": pruned.plan.to_dict(), "checkpoint": str(final)}
    write_json(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report))
    print(format_table(display_rows(rows)))
    return final


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
