"""``rexnet-deploy prune``: structured pruning to a width plan or a MACs/params budget, then fine-tuning."""

from __future__ import annotations

import argparse

from ..cli_args import apply_threads, positive_int
from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="remove channels (torch-pruning) to a width plan or a MACs/params budget, then fine-tune",
        description="Prune a trained ReXNet checkpoint. --width W cuts every layer to the family's exact plan at "
                    "width W (the result loads as that width's model); --macs R / --params R prune globally "
                    "until MACs/params are at most R times the source's. Which channels go is decided by "
                    "--importance. The result is fine-tuned with the checkpoint's training recipe (or --recipe), "
                    "optionally distilled from the unpruned model (--kd-weight).")
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT",
                   help="trained checkpoint (rexnet-deploy train's best.pt, timm or official weights)")
    p.add_argument("--checkpoint", dest="checkpoint_flag", metavar="PATH",
                   help="the checkpoint, as export and bench take it (instead of the positional CHECKPOINT)")
    target = p.add_argument_group("target (exactly one)")
    target.add_argument("--width", type=float, help="prune to the family's channel plan at this width")
    target.add_argument("--macs", type=float, metavar="R", help="keep at most R (0<R<1) of the source's MACs")
    target.add_argument("--params", type=float, metavar="R", help="keep at most R (0<R<1) of the source's params")
    p.add_argument("--importance", default="l2", help="l1, l2 (magnitude), bn_scale or taylor (default l2)")
    p.add_argument("--steps", type=int, default=1, help="iterative pruning steps, channels re-ranked each (default 1)")
    p.add_argument("--model", help="registry name: checked against the checkpoint's family; needed for files "
                                   "without metadata (timm/official)")
    p.add_argument("--source-width", type=float, help="width of a metadata-less checkpoint of an any-width family")
    p.add_argument("--dataset", help="evaluation/fine-tuning dataset (default: the checkpoint's)")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--eval-images", type=int, help="evaluate top-1 on this many test images (default all)")
    ft = p.add_argument_group("fine-tuning")
    ft.add_argument("--recipe", help="training recipe (default: the one the checkpoint was trained with)")
    ft.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the recipe's; 0 = no fine-tuning)")
    ft.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the recipe's)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe key")
    ft.add_argument("--kd-weight", type=float, default=0.0,
                    help="weight of distillation from the unpruned model, 0..1 (default 0: none)")
    ft.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature (default 4)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's)")
    p.add_argument("--out", required=True, help="output folder (pruned.pt, finetuned.pt, plan.json, report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _recipe_overrides(args: argparse.Namespace) -> dict:
    """--lr and --set KEY=VALUE (VALUE read as YAML, as ``rexnet-deploy train --set`` does)."""
    from ..train.recipe import parse_set_overrides

    return {"lr": args.lr, **parse_set_overrides(args.set)}


def _checkpoint(args: argparse.Namespace) -> str:
    """The checkpoint, given exactly once: positionally or with --checkpoint."""
    given = [c for c in (args.checkpoint, args.checkpoint_flag) if c is not None]
    if len(given) != 1:
        raise UserError("give the checkpoint once: rexnet-deploy prune CHECKPOINT ... or rexnet-deploy prune "
                        "--checkpoint CHECKPOINT ...")
    return given[0]


def run(args: argparse.Namespace) -> int:
    from .stage import FinetuneSpec, PruneRequest, prune_checkpoint

    checkpoint = _checkpoint(args)
    apply_threads(args.threads)
    finetune = FinetuneSpec(recipe=args.recipe, epochs=args.epochs, overrides=_recipe_overrides(args),
                            kd_weight=args.kd_weight, kd_temperature=args.kd_temperature)
    final = prune_checkpoint(PruneRequest(
        checkpoint, args.out, width=args.width, macs_ratio=args.macs, params_ratio=args.params,
        importance=args.importance, steps=args.steps, model_name=args.model, source_width=args.source_width,
        dataset=args.dataset, data_dir=args.data_dir, eval_limit=args.eval_images, finetune=finetune,
        device=args.device, progress=not args.no_progress))
    print(f"checkpoint: {final}\nreport: {args.out}/report.md")
    return 0
