"""``rexnet-deploy train``: a recipe, overridable flag by flag, on one CPU/GPU or many under torchrun."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli_args import (
    add_deprecated_alias,
    add_device_arg,
    add_eval_images_arg,
    add_threads_arg,
    apply_threads,
    positive_int,
    resolve_threads,
    show_progress,
)
from ..errors import UserError

if TYPE_CHECKING:  # torch and friends load only when the command runs, so --help stays fast
    from ..models.rexnet import ReXNet
    from .trainer import DistEnv, Split

# flag → recipe key, for the common ones; any other key goes through --set KEY=VALUE
_FLAG_KEYS = ("model", "width", "dataset", "input_size", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
              "schedule", "warmup_epochs", "label_smoothing", "train_subset", "val_subset", "seed", "ema", "workers")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a ReXNet with a recipe (CPU, one GPU, or torchrun for many)",
                       description="Train a ReXNet. Recipes live in rexnet_deploy/recipes/ (--list); every key "
                                   "can be overridden by a flag or --set KEY=VALUE. Multi-GPU: torchrun "
                                   "--nproc_per_node=N -m rexnet_deploy train ...")
    p.add_argument("--recipe", help="recipe name or YAML file (default: fmnist-cpu; finetune with --pretrained; the "
                                    "resumed run's with --resume)")
    p.add_argument("--list", action="store_true", help="list the packaged recipes and exit")
    p.add_argument("--model", help="registry name, e.g. rexnet, rexnet_tiny_cifar, rexnet_100 (default: the "
                                   "recipe's)")
    p.add_argument("--width", type=float, help="width multiplier of any-width families (default: the recipe's)")
    p.add_argument("--dataset", help="fashion_mnist, cifar10, cifar100 or imagefolder (default: the recipe's)")
    p.add_argument("--data-dir", help="dataset folder (ImageFolder: holds train/ and val/; default: the dataset's "
                                      "own place)")
    p.add_argument("--download", action="store_true", help="fetch CIFAR-10/100 into --data-dir if missing")
    p.add_argument("--input-size", type=positive_int,
                   help="ImageFolder: the model's input size (default: the model's own, 32 for tiny-cifar, 224 for "
                        "V1/Lite)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size, split over torchrun processes (default: the "
                                                  "recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--optimizer", help="sgd, sgdp, adam, adamw, adamp or sgdmix (default: the recipe's)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default: the recipe's)")
    p.add_argument("--schedule", help="cosine, step, multistep or constant (default: the recipe's)")
    p.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs (default: the recipe's)")
    p.add_argument("--label-smoothing", type=float, help="label smoothing (default: the recipe's)")
    p.add_argument("--train-subset", type=int, help="train on this many images drawn at random (default: all)")
    add_eval_images_arg(p, dest="val_subset")
    add_deprecated_alias(p, "--val-subset", "--eval-images", "val_subset", type=positive_int)
    p.add_argument("--seed", type=int, help="seed of weights, data order and augmentation (default: the recipe's)")
    p.add_argument("--ema", action="store_true", default=None,
                   help="keep an EMA of the weights (default: the recipe's)")
    p.add_argument("--workers", type=int, help="DataLoader workers of an ImageFolder (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe key (repeatable; default: none)")
    p.add_argument("--out", help="run folder (default runs/<recipe>-<time>/)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_OR_CHECKPOINT",
                   help="continue --out's last.pt, or the given run folder / checkpoint (default: a new run)")
    p.add_argument("--pretrained", metavar="CHECKPOINT",
                   help="start from this checkpoint's architecture and weights with a fresh schedule: this tool's "
                        "checkpoints, timm's or the official clovaai files (those need --model/--width unless the "
                        "recipe's model is theirs); a new classifier when the dataset's classes differ; not with "
                        "--resume (default: none: weights drawn from the recipe's seed)")
    add_deprecated_alias(p, "--init", "--pretrained", "pretrained", metavar="CHECKPOINT")
    p.add_argument("--teacher", help="checkpoint of a teacher model: train with knowledge distillation (default: none)")
    p.add_argument("--kd-weight", type=float, default=0.5,
                   help="weight of the distillation loss (with --teacher; default 0.5)")
    p.add_argument("--kd-temperature", type=float, default=4.0,
                   help="distillation temperature (with --teacher; default 4)")
    add_device_arg(p, "cuda when available, else cpu")
    add_threads_arg(p)
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="deterministic algorithms (bit-exact resume on the same machine)")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    from .recipe import parse_set_overrides

    values = {key: getattr(args, key) for key in _FLAG_KEYS}
    values["deterministic"] = args.deterministic
    return {**values, **parse_set_overrides(args.set)}


def _resume_dir(resume: str | bool | None, out: str | None) -> Path | None:
    if resume is None:
        return None
    if resume is True:
        if not out:
            raise UserError("--resume without a path needs --out naming the run folder")
        return Path(out)
    path = Path(resume)
    return path.parent if path.is_file() else path


def _out_dir(args: argparse.Namespace, resume_dir: Path | None, recipe_name: str, env: DistEnv) -> Path:
    """--out, else the resumed run's folder, else runs/<recipe>-<time>/ (rank 0's time under torchrun)."""
    if args.out:
        return Path(args.out)
    if resume_dir is not None:
        return resume_dir
    import datetime as dt

    import torch

    stamp = [dt.datetime.now().strftime("%Y%m%d-%H%M%S")]
    if env.world > 1:  # every process must write to rank 0's folder
        torch.distributed.broadcast_object_list(stamp, src=0)
    return Path("runs") / f"{recipe_name}-{stamp[0]}"


def _trained_model(path: str, role: str, train_set: Split) -> ReXNet:
    """A checkpoint's model for --teacher, which must classify the run's classes."""
    from ..models import load_model

    model, _ = load_model(path)
    if model.num_classes != train_set.num_classes:
        raise UserError(f"{role} {path} has {model.num_classes} classes, the dataset "
                        f"{train_set.num_classes}: pick a checkpoint trained on {train_set.name}")
    return model


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_datasets
    from ..report import format_table
    from .fitting import fit
    from .pretrained import pretrained_recipe
    from .recipe import list_recipes, load_recipe
    from .trainer import Distillation, TrainRequest, check_distillation, distributed_env

    if args.list:
        rows = [{"recipe": name, "description": load_recipe(name).description} for name in list_recipes()]
        print(format_table(rows))
        return 0
    apply_threads(resolve_threads(args))
    resume_dir = _resume_dir(args.resume, args.out)
    if args.pretrained and args.resume is not None:
        raise UserError(f"--pretrained {args.pretrained} starts a new run from a checkpoint's weights, --resume "
                        f"continues a run: pass one of them")
    recipe_source = args.recipe
    if recipe_source is None:
        saved = resume_dir / "recipe.yaml" if resume_dir else None
        recipe_source = saved if saved is not None and saved.is_file() else \
            "finetune" if args.pretrained else "fmnist-cpu"
    recipe = load_recipe(recipe_source, _overrides(args))
    if args.pretrained:  # the file's architecture and input size, before the data is read at that size
        recipe = pretrained_recipe(recipe, args.pretrained, args.model, args.width)
    check_distillation(args.kd_weight if args.teacher else 0.0, args.kd_temperature)
    env = distributed_env(args.device)
    out = _out_dir(args, resume_dir, recipe.name, env)
    resume = False if args.resume is None else (True if args.resume is True else Path(args.resume))
    train_set, val_set = load_datasets(recipe, args.data_dir, download=args.download, env=env)

    distill = None
    if args.teacher:
        distill = Distillation(_trained_model(args.teacher, "teacher", train_set), args.kd_weight,
                               args.kd_temperature)
    result = fit(TrainRequest(recipe, out, data=(train_set, val_set), resume=resume, distill=distill,
                              progress=show_progress(args), device=args.device, pretrained=args.pretrained))
    if env.main:
        best = max(result.metrics, key=lambda r: r.get("ema_top1", r["val_top1"]))
        print(format_table([{"run": str(result.run_dir), "model": f"{recipe.model} w{result.model.width:g}",
                             "epochs": result.metrics[-1]["epoch"], "best epoch": best["epoch"],
                             "top-1": result.best_top1, "top-5": best.get("ema_top5", best["val_top5"]),
                             "time (min)": result.metrics[-1]["elapsed_s"] / 60}]))
        print(f"best checkpoint: {result.best_checkpoint}\ncurves: {result.run_dir / 'curves.png'}")
    if env.world > 1:
        torch.distributed.destroy_process_group()
    return 0
