"""``rexnet-deploy calib`` and ``rexnet-deploy quantize``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_args import (
    add_calibration_arg,
    add_calibration_images_arg,
    add_checkpoint_arg,
    add_deprecated_alias,
    add_eval_images_arg,
    add_max_drop_arg,
    add_threads_arg,
    apply_threads,
    positive_int,
    resolve_threads,
    show_progress,
)
from .layouts import METHODS, target_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calib", help="draw a calibration set (stratified, seeded, preprocessed) into calib/",
                       description="Draw a calibration set from a dataset's training split, stratified by class and "
                                   "seeded, preprocessed as the model's evaluation. With --checkpoint the dataset, "
                                   "its folder and the preprocessing are the checkpoint's.")
    add_checkpoint_arg(p, "draw from the data this checkpoint was trained on, preprocessed as it was (default: none; "
                          "--dataset's data at its own preprocessing)")
    p.add_argument("--dataset", help="fashion_mnist, cifar10, cifar100 or imagefolder (default: the checkpoint's, "
                                     "else fashion_mnist)")
    add_calibration_images_arg(p, 512)
    add_deprecated_alias(p, "--num-images", "--calibration-images", "calibration_images", type=positive_int)
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    p.add_argument("--out", type=Path, help="tensor file to write (default calib/<dataset>-<N>-s<seed>.pt under the "
                                            "current folder; the path is printed)")
    p.add_argument("--data-dir", type=Path, help="folder holding the dataset files (ImageFolder: train/ and val/; "
                                                 "default: the one the checkpoint records, else the dataset's "
                                                 "own default place)")
    p.add_argument("--input-size", type=int, help="ImageFolder: the model's input size (default: the checkpoint's, "
                                                  "else 224)")
    add_threads_arg(p)
    p.set_defaults(func=run_calib)

    p = sub.add_parser("quantize", help="INT8 (Q/DQ, per target) or FP16 ONNX from an exported FP32 ONNX")
    p.add_argument("onnx", type=Path, help="FP32 ONNX model from `rexnet-deploy export`")
    p.add_argument("--precision", choices=("int8", "fp16"), default="int8", help="what to write (default int8)")
    add_calibration_arg(p, "what INT8 calibrates on (required for int8; no default)", type=Path)
    add_deprecated_alias(p, "--calib", "--calibration", "calibration", type=Path)
    p.add_argument("--method", choices=METHODS, default="minmax",
                   help="activation range calibration (int8; default minmax)")
    p.add_argument("--target", choices=target_names(), default="ort-cpu",
                   help="Q/DQ layout: ort-cpu = uint8 activations, tensorrt = symmetric int8 only (int8; default "
                        "ort-cpu)")
    add_max_drop_arg(p, "INT8 keeps its most sensitive units in float until it holds")
    p.add_argument("--max-float-units", type=int, default=16,
                   help="most units the fallback keeps in float (default 16)")
    add_eval_images_arg(p)
    p.add_argument("--no-eval", action="store_true", help="skip the accuracy measurement (and so the fallback)")
    p.add_argument("--dataset", help="validation dataset (default: the calibration set's, or the model's metadata)")
    p.add_argument("--data-dir", type=Path, help="folder holding the dataset files (default: the one the calibration "
                                                 "set or the model records)")
    p.add_argument("--out", type=Path, help="output ONNX (default beside the input: <name>-int8-<target>-<method>"
                                            ".onnx or <name>-fp16.onnx)")
    add_threads_arg(p)
    p.set_defaults(func=run_quantize)


def _calib_spec(args: argparse.Namespace):
    """The data a calibration set is drawn from: the flags, then the checkpoint's record, else Fashion-MNIST."""
    from ..data import resolve_spec

    meta, model = {}, None
    if args.checkpoint:
        from ..models.checkpoint import read_metadata

        meta = read_metadata(args.checkpoint)
        model = meta.get("model_name")
    return resolve_spec(meta, dataset=args.dataset or (None if args.checkpoint else "fashion_mnist"),
                        data_dir=args.data_dir, input_size=args.input_size, model=model,
                        origin=f"checkpoint {args.checkpoint}" if args.checkpoint else None)


def run_calib(args: argparse.Namespace) -> int:
    from ..artifacts import read_manifest
    from .calibration import build_calibration_set

    apply_threads(resolve_threads(args))
    path = build_calibration_set(_calib_spec(args), args.calibration_images, args.seed, args.out)
    manifest = read_manifest(path)
    folder = manifest.get("dataset_spec", {}).get("folder")
    print(f"calibration set {path}: {manifest['num_images']} images of {manifest['dataset']}/{manifest['split']}"
          f"{f' ({folder})' if folder else ''} (seed {manifest['seed']}), per class {manifest['class_counts']}; "
          f"manifest {path}.json")
    return 0


def _eval_spec(args: argparse.Namespace):
    """The validation data: --dataset/--data-dir, else the calibration set's, else what the ONNX file records."""
    from ..data import recorded_spec, resolve_spec

    if args.dataset:
        return resolve_spec({}, dataset=args.dataset, data_dir=args.data_dir, origin=str(args.onnx))
    if args.calibration is not None:
        from ..artifacts import read_manifest

        meta, origin = read_manifest(args.calibration), f"calibration set {args.calibration}"
    else:
        from ..onnx_io import read_metadata

        meta, origin = read_metadata(args.onnx), str(args.onnx)
    if recorded_spec(meta, origin) is None:
        return None
    return resolve_spec(meta, data_dir=args.data_dir, origin=origin)


def run_quantize(args: argparse.Namespace) -> int:
    from ..data import load_split
    from ..errors import UserError
    from .fp16 import convert_fp16
    from .int8 import AccuracyBudget, quantize_onnx

    apply_threads(resolve_threads(args))

    if not args.onnx.is_file():
        raise UserError(f"ONNX file {args.onnx} does not exist: check the path or run `rexnet-deploy export`")
    if args.precision == "int8" and args.calibration is None:
        raise UserError("--calibration is required for int8: build a set with `rexnet-deploy calib --dataset <name>`")
    eval_set = None
    if not args.no_eval:
        spec = _eval_spec(args)
        if spec is None:
            print("note: accuracy not measured: pass --dataset to name the validation dataset")
        else:
            eval_set = load_split(spec, "val")
    stem = args.onnx.with_suffix("")
    if args.precision == "fp16":
        out = convert_fp16(args.onnx, args.out or Path(f"{stem}-fp16.onnx"), eval_set=eval_set,
                           eval_images=args.eval_images, progress=show_progress(args))
    else:
        budget = None if eval_set is None else AccuracyBudget(eval_set, args.eval_images, args.max_drop,
                                                              args.max_float_units)
        out_path = args.out or Path(f"{stem}-int8-{args.target}-{args.method}.onnx")
        out = quantize_onnx(args.onnx, args.calibration, out_path, method=args.method, target=args.target,
                            budget=budget, progress=show_progress(args))
    return _report(out, args.precision)


def _report(out: Path, precision: str) -> int:
    """One table row from the artifact's manifest; exit 1 when the INT8 accuracy budget did not hold."""
    from ..artifacts import read_manifest
    from ..errors import CheckFailed
    from ..report import format_table

    manifest = read_manifest(out)
    acc = manifest.get("accuracy")
    row = {"artifact": str(out), "precision": precision, "target": manifest.get("target", "—"),
           "method": manifest.get("method", "—"), "MB": manifest["size_bytes"] / 1e6}
    if acc:
        row.update({"images": acc["num_images"], "fp32 top-1": acc["fp32"]["top1"],
                    f"{precision} top-1": acc[precision]["top1"], "drop": acc["top1_drop"]})
    print(format_table([row]))
    if precision == "int8":
        units = [u["unit"] for u in manifest["float_units"]]
        print(f"kept in float: {', '.join(units) if units else 'nothing'}; layout: {manifest['layout']['activations']}"
              f" activations, {manifest['layout']['weights']} weights; manifest {out}.json")
        if acc and not acc["within_budget"]:
            raise CheckFailed(f"INT8 top-1 drop {acc['top1_drop']:.2f} points exceeds --max-drop {acc['max_drop']} "
                               f"even with {len(units)} units in float; {out} was written: try --method entropy, "
                               f"a larger --max-float-units or --max-drop")
    return 0
