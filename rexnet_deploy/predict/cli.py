"""``rexnet-deploy predict ARTIFACT PATH...`` (top-k classes of image files, folders or globs) and
``rexnet-deploy inspect ARTIFACT`` (what any artifact records): the commands that use an artifact."""

from __future__ import annotations

import argparse
import sys

from ..cli_args import add_device_arg, add_threads_arg, positive_int, resolve_threads, show_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_predict_parser(sub)
    add_inspect_parser(sub)


def add_predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with any exported artifact (.pt, .onnx, .xml, .pte, "
                                       ".engine)",
                       description="Classify images with an artifact rexnet-deploy wrote, preprocessed by the "
                                   "contract the artifact records. Exit 0: every image classified; 1: some images "
                                   "could not be decoded (their rows say why); 2: bad input.")
    p.add_argument("artifact", help="the model file: a checkpoint, ONNX file, OpenVINO .xml, ExecuTorch .pte or "
                                    "TensorRT engine")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively) or glob patterns (quote them)")
    p.add_argument("--top-k", type=positive_int, default=5, help="classes listed per image (default 5)")
    p.add_argument("--batch", type=positive_int, default=32, help="images per inference call (default 32)")
    p.add_argument("--out", help="also write every row to this .json or .csv file (default: print only)")
    add_threads_arg(p)
    add_device_arg(p, "the artifact's backend's first device", gpu_index=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import format_table
    from .predict import PredictRequest, predict_images, write_predictions

    result = predict_images(PredictRequest(args.artifact, args.paths, top_k=args.top_k, batch_size=args.batch,
                                           threads=resolve_threads(args), device=args.device,
                                           progress=show_progress(args)))
    rows = [{"image": r["image"], "top-1": r["top1"], "probability": r["probability"],
             "top-k": ", ".join(f"{c} {p:.3f}" for c, p in r["topk"][1:]) if r["topk"] else None,
             "error": r["error"]} for r in result.rows]
    print(format_table(rows))
    if args.out:
        print(f"predictions: {write_predictions(result, args.out)}")
    if result.failed:
        print(f"rexnet-deploy predict: {result.failed} of {len(result.rows)} images could not be classified "
              f"(see their error column)", file=sys.stderr)
        return 1
    return 0


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="say what an artifact records (model, classes, preprocessing, precision, "
                                       "accuracy, provenance); a checkpoint is also loaded into a model")
    p.add_argument("artifact", help="any file rexnet-deploy reads: a .pt/.pth checkpoint (ours, timm's or the "
                                    "official clovaai layout), .onnx, OpenVINO .xml, ExecuTorch .pte or a TensorRT "
                                    "engine")
    p.add_argument("--model", help="checkpoints only: registry name to load it into, e.g. rexnet_tiny_cifar "
                                   "(default: do not load)")
    p.add_argument("--width", type=float, help="checkpoints only: width multiplier for families that take any width "
                                               "(default: the family's)")
    p.add_argument("--num-classes", type=int, help="checkpoints only: classifier size (default: the family's)")
    p.set_defaults(func=inspect)


def inspect(args: argparse.Namespace) -> int:
    from ..backends import read_artifact
    from ..report import format_table

    record = read_artifact(args.artifact)
    facts = [{"field": k, "value": v} for k, v in record.summary().items() if v not in (None, "", False)]
    print(format_table(facts))
    if record.backend.role == "checkpoint":
        from ..models import count_params, create_model
        from ..models.checkpoint import checkpoint_filter_fn, describe_state_dict, extract_state_dict, read_checkpoint

        sd = checkpoint_filter_fn(extract_state_dict(read_checkpoint(args.artifact)))
        print(f"weights: {len(sd)} tensors; {describe_state_dict(sd)}")
        if args.model:
            model = create_model(args.model, width=args.width, num_classes=args.num_classes,
                                 checkpoint=args.artifact)
            print(f"loads into {args.model} width {model.width:g}: {count_params(model):,} parameters")
    elif args.model:
        print(f"note: --model applies to checkpoints; {record.path.name} is a {record.backend.name} file")
    return 0
