"""``rexnet-deploy pipeline``: every stage in one command, reusing what is up to date."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="train → prune → fine-tune → calibrate → quantize/export → bench → check",
                       description="Run the whole toolchain on the default offline dataset and print the final "
                                   "table. Stages whose outputs are up to date are reused; a killed run resumes.")
    p.add_argument("--recipe", default="fmnist-cpu", help="training recipe (default fmnist-cpu)")
    p.add_argument("--quick", action="store_true",
                   help="the short version CI runs: a few minutes on 2 cores, gated by baseline pipeline-quick")
    p.add_argument("--out", help="run folder (default runs/pipeline-fmnist-cpu, or runs/pipeline-quick)")
    p.add_argument("--data-dir", help="dataset folder (default: the Debian package's Fashion-MNIST)")
    p.add_argument("--prune-width", type=float, help="prune to the family's plan at this width")
    p.add_argument("--prune-macs", type=float, help="prune globally to this MACs ratio (default 0.5)")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--baseline", help="baseline for the check stage (bench/baselines/NAME.yaml); 'none' skips it")
    p.add_argument("--threads", type=positive_int, help="CPU threads for the benchmark (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .run import PipelineConfig, run_pipeline

    cfg = PipelineConfig.quick() if args.quick else PipelineConfig()
    changes = {"recipe": args.recipe, "data_dir": args.data_dir, "finetune_epochs": args.finetune_epochs,
               "threads": args.threads}
    if args.out:
        changes["out"] = Path(args.out)
    if args.prune_width is not None or args.prune_macs is not None:
        changes.update(prune_width=args.prune_width, prune_macs=args.prune_macs)
    if args.baseline:
        changes["baseline"] = None if args.baseline == "none" else args.baseline
    for key, value in changes.items():
        if value is not None or key in ("prune_width", "prune_macs", "baseline"):
            setattr(cfg, key, value)
    run_pipeline(cfg)
    return 0
