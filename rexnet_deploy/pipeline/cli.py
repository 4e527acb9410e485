"""``rexnet-deploy pipeline``: every stage in one command, reusing what is up to date."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..cli_args import (
    add_batch_arg,
    add_calibration_images_arg,
    add_deprecated_alias,
    add_eval_images_arg,
    add_threads_arg,
    comma_list,
    engines_arg,
    positive_int,
    resolve_threads,
    show_progress,
)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers like 1,32, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="train → prune → fine-tune → calibrate → quantize/export → bench → check",
                       description="Run the whole toolchain and print the final table: on the default offline "
                                   "dataset (Fashion-MNIST), or on your own images with --dataset imagefolder "
                                   "--data-dir DIR (train/ and val/, one sub-folder per class). Stages whose "
                                   "outputs are up to date are reused; a killed run resumes.")
    p.add_argument("--recipe", help="training recipe (default fmnist-cpu; finetune with --pretrained)")
    p.add_argument("--pretrained", metavar="CHECKPOINT",
                   help="the training stage starts from this checkpoint's weights (this tool's, timm's or the official "
                        "clovaai files), with a new classifier when the dataset's classes differ, at the input size "
                        "it records unless --input-size is given (default: none, weights from the recipe's seed)")
    p.add_argument("--model", help="registry name (default: the recipe's, or the --pretrained file's); reads a timm "
                                   "or official file, which does not record it")
    p.add_argument("--width", type=float, help="width multiplier, as --model, of any-width families (default: the "
                                                    "recipe's)")
    p.add_argument("--quick", action="store_true",
                   help="the short version CI runs: a few minutes on 2 cores, gated by baseline pipeline-quick")
    p.add_argument("--out", help="run folder (default runs/pipeline-fmnist-cpu, runs/pipeline-quick, "
                                 "runs/pipeline-imagefolder, or runs/pipeline-pretrained with --pretrained)")
    p.add_argument("--dataset", help="fashion_mnist, cifar10, cifar100 or imagefolder (default: the recipe's)")
    p.add_argument("--data-dir", help="dataset folder (ImageFolder: holds train/ and val/; default: the Debian "
                                      "package's Fashion-MNIST)")
    p.add_argument("--input-size", type=positive_int,
                   help="ImageFolder: the model's input size (default: the model's own, 32 for tiny-cifar, 224 for "
                        "V1/Lite)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default: the recipe's)")
    p.add_argument("--prune-width", type=float, help="prune to the family's plan at this width (default: none, "
                                                         "--prune-macs)")
    p.add_argument("--prune-macs", type=float, help="prune globally to this MACs ratio (default 0.5)")
    p.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs after pruning (default: the recipe's)")
    add_calibration_images_arg(p, default_text="512, or the whole training split when it is smaller")
    add_deprecated_alias(p, "--calib-images", "--calibration-images", "calibration_images", type=positive_int)
    add_eval_images_arg(p)
    p.add_argument("--engines", help="engines the export builds: none, or a list of backends (default: every one "
                                     "this machine can, as rexnet-deploy export --engines auto)")
    p.add_argument("--precision", help="precisions the export writes: a list of fp32,fp16,int8 (default all), or "
                                       "auto: all, and the fastest file here within 0.5 top-1 points of FP32 "
                                       "recommended in bundle.json and benched as row pipeline/recommended")
    add_batch_arg(p, "what --precision auto times candidates at", default_text="the largest of --batches")
    add_deprecated_alias(p, "--deploy-batch", "--batch", "batch", type=positive_int)
    p.add_argument("--batches", type=_batches, help="bench batch sweep, e.g. 1,32 (default 1,8,32,64)")
    p.add_argument("--baseline", help="baseline for the check stage (a file, or NAME of "
                                      "rexnet_deploy/bench/baselines/NAME.yaml); 'none' skips it. Default: "
                                      "pipeline-fmnist-cpu (pipeline-quick with --quick) on Fashion-MNIST; on other "
                                      "data its drop budgets against the run's own reference rows, without its "
                                      "Fashion-MNIST floors")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import get_format
    from .run import PipelineConfig, run_pipeline

    cfg = PipelineConfig.quick() if args.quick else PipelineConfig()
    changes = {"recipe": args.recipe or ("finetune" if args.pretrained else None), "data_dir": args.data_dir,
               "pretrained": Path(args.pretrained) if args.pretrained else None, "model": args.model,
               "width": args.width, "finetune_epochs": args.finetune_epochs,
               "threads": resolve_threads(args), "dataset": args.dataset, "input_size": args.input_size,
               "epochs": args.epochs, "calib_images": args.calibration_images, "eval_images": args.eval_images,
               "batches": args.batches, "engines": engines_arg(args.engines),
               "precisions": tuple(comma_list(args.precision)) if args.precision else None,
               "deploy_batch": args.batch, "command": shlex.join(["rexnet-deploy", *sys.argv[1:]]),
               "progress": show_progress(args)}
    if args.calibration_images is not None:
        changes["cap_calib_images"] = False  # asked for: too few images is an error, not a smaller set
    if args.out:
        changes["out"] = Path(args.out)
    elif args.pretrained:
        changes["out"] = Path("runs/pipeline-pretrained" + ("-quick" if args.quick else ""))
    elif args.dataset and get_format(args.dataset).user_tree:  # the user's own images: a run folder of their own
        changes["out"] = Path(f"runs/pipeline-{args.dataset}" + ("-quick" if args.quick else ""))
    if args.prune_width is not None or args.prune_macs is not None:
        changes.update(prune_width=args.prune_width, prune_macs=args.prune_macs)
    if args.baseline:
        changes["baseline"] = None if args.baseline == "none" else args.baseline
        changes["own_reference"] = False
    for key, value in changes.items():
        if value is not None or key in ("prune_width", "prune_macs", "baseline"):
            setattr(cfg, key, value)
    run_pipeline(cfg)
    return 0
