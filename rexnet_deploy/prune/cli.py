"""``rexnet-deploy prune``: structured pruning to a width plan or a MACs/params budget, then fine-tuning."""

from __future__ import annotations

import argparse
import datetime
import sys

from ..cli_args import (
    add_checkpoint_arg,
    add_device_arg,
    add_eval_images_arg,
    add_threads_arg,
    apply_threads,
    resolve_threads,
    show_progress,
)
from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="remove channels (torch-pruning) to a width plan or a MACs/params budget, then fine-tune",
        description="Prune a trained ReXNet checkpoint. --width W cuts every layer to the family's exact plan at "
                    "width W (the result loads as that width's model); --macs R / --params R prune globally "
                    "until MACs/params are at most R times the source's. Which channels go is decided by "
                    "--importance. The result is fine-tuned with the checkpoint's training recipe (or --recipe), "
                    "optionally distilled from the unpruned model (--kd-weight).")
    # the positional spelling is the old one: kept hidden for a release, with a note (--checkpoint everywhere)
    p.add_argument("checkpoint", nargs="?", help=argparse.SUPPRESS)
    add_checkpoint_arg(p, "trained checkpoint (rexnet-deploy train's best.pt, timm or official weights; required)",
                       dest="checkpoint_flag")
    target = p.add_argument_group("target (exactly one is required)")
    target.add_argument("--width", type=float, help="prune to the family's channel plan at this width (required: "
                                                    "this, --macs or --params)")
    target.add_argument("--macs", type=float, metavar="R", help="keep at most R (0<R<1) of the source's MACs "
                                                                "(required: this, --width or --params)")
    target.add_argument("--params", type=float, metavar="R", help="keep at most R (0<R<1) of the source's params "
                                                                  "(required: this, --width or --macs)")
    p.add_argument("--importance", default="l2", help="l1, l2 (magnitude), bn_scale or taylor (default l2)")
    p.add_argument("--steps", type=int, default=1, help="iterative pruning steps, channels re-ranked each (default 1)")
    p.add_argument("--model", help="registry name: checked against the checkpoint's family; needed for files "
                                   "without metadata (timm/official; default: what the checkpoint records)")
    p.add_argument("--source-width", type=float, help="width of a metadata-less checkpoint of an any-width family "
                                                      "(default: what the checkpoint records)")
    p.add_argument("--dataset", help="evaluation/fine-tuning dataset (default: the checkpoint's)")
    p.add_argument("--data-dir", help="dataset folder (default: the one the checkpoint records)")
    add_eval_images_arg(p)
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--recipe", help="training recipe (default: the one the checkpoint was trained with)")
    ft.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the recipe's; 0 = no fine-tuning)")
    ft.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the recipe's)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any recipe key (repeatable; default: none)")
    ft.add_argument("--kd-weight", type=float, default=0.0,
                    help="weight of distillation from the unpruned model, 0..1 (default 0: none)")
    ft.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    add_device_arg(p, "cuda when available, else cpu")
    add_threads_arg(p)
    p.add_argument("--out", help="output folder: pruned.pt, finetuned.pt, plan.json, report (default "
                                 "runs/prune-<time>/)")
    p.set_defaults(func=run)


def _recipe_overrides(args: argparse.Namespace) -> dict:
    """--lr and --set KEY=VALUE (VALUE read as YAML, as ``rexnet-deploy train --set`` does)."""
    from ..train.recipe import parse_set_overrides

    return {"lr": args.lr, **parse_set_overrides(args.set)}


def _checkpoint(args: argparse.Namespace) -> str:
    """The checkpoint, given exactly once: positionally or with --checkpoint."""
    given = [c for c in (args.checkpoint, args.checkpoint_flag) if c is not None]
    if len(given) != 1:
        raise UserError("give the checkpoint once: rexnet-deploy prune --checkpoint CHECKPOINT ...")
    if args.checkpoint is not None:
        print("note: a positional CHECKPOINT is deprecated, use --checkpoint CHECKPOINT (the old spelling goes in "
              "the next release)", file=sys.stderr)
    return given[0]


def run(args: argparse.Namespace) -> int:
    from .stage import FinetuneSpec, PruneRequest, prune_checkpoint

    checkpoint = _checkpoint(args)
    apply_threads(resolve_threads(args))
    out = args.out or f"runs/prune-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    finetune = FinetuneSpec(recipe=args.recipe, epochs=args.epochs, overrides=_recipe_overrides(args),
                            kd_weight=args.kd_weight, kd_temperature=args.kd_temperature)
    final = prune_checkpoint(PruneRequest(
        checkpoint, out, width=args.width, macs_ratio=args.macs, params_ratio=args.params,
        importance=args.importance, steps=args.steps, model_name=args.model, source_width=args.source_width,
        dataset=args.dataset, data_dir=args.data_dir, eval_limit=args.eval_images, finetune=finetune,
        device=args.device, progress=show_progress(args)))
    print(f"checkpoint: {final}\nreport: {out}/report.md")
    return 0
