"""``rexnet-deploy export``: a ReXNet → a deployable bundle (ONNX FP32/FP16/INT8, engines, manifests)."""

from __future__ import annotations

import argparse
import sys

from ..cli_args import (
    add_batch_arg,
    add_calibration_arg,
    add_checkpoint_arg,
    add_deprecated_alias,
    add_eval_images_arg,
    add_max_drop_arg,
    add_threads_arg,
    apply_threads,
    comma_list,
    engines_arg,
    positive_int,
    resolve_threads,
    show_progress,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..backends import engine_backends

    p = sub.add_parser("export", help="export a ReXNet to a bundle: ONNX (fp32/fp16/int8) + engines, parity-checked",
                       description="Export a ReXNet (default: rexnet_tiny_cifar width 0.5) into a bundle folder: "
                                   "ONNX files checked against torch on real test images, the engines this "
                                   "machine can build (CPU engines here, GPU ones where a GPU is), a manifest beside "
                                   "every file, bundle.json and bundle.md.")
    p.add_argument("--model", help="registry name (default: the checkpoint's, else rexnet_tiny_cifar)")
    p.add_argument("--width", type=float, help="width multiplier (default: the checkpoint's, else 0.5 for "
                                               "rexnet_tiny_cifar)")
    add_checkpoint_arg(p, "trained or pruned checkpoint (default: none: random weights of --model, "
                          "rexnet_tiny_cifar width 0.5 unless given, for speed studies; marked untrained, INT8 "
                          "skipped, and said when the export ends)")
    p.add_argument("--precision", default="fp32,fp16,int8",
                   help="comma-separated subset of fp32,fp16,int8 (default: all; fp32 is always written), or auto: "
                        "all, then every file (and FP32 in BF16 where the CPU has it) timed at --batch "
                        "here, and the fastest within --max-drop top-1 points of FP32 recorded as recommended")
    add_batch_arg(p, "what --precision auto times each candidate at", 64)
    add_deprecated_alias(p, "--deploy-batch", "--batch", "batch", type=positive_int)
    add_max_drop_arg(p, "INT8 keeps its most sensitive layers in float until it holds, and --precision auto picks "
                        "only within it")
    add_deprecated_alias(p, "--budget", "--max-drop", "max_drop", type=float)
    add_deprecated_alias(p, "--int8-max-drop", "--max-drop", "max_drop", type=float)
    p.add_argument("--out", help="bundle folder (default: export/<model>-<width>/); replaced whole, atomically")
    p.add_argument("--dataset", help="test images for parity/accuracy and calibration (default: the checkpoint's, "
                                     "else fashion_mnist for 32×32 models)")
    p.add_argument("--data-dir", help="folder holding the dataset files (default: the one the checkpoint records)")
    add_calibration_arg(p, "what INT8 calibrates on (default: calib/<dataset>-512-s0.pt under the current folder, "
                           "drawn if missing; its path is printed)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--engines", default="auto",
                   help=f"engines to build: auto (all this machine can), none, or a list of "
                        f"{','.join(b.name for b in engine_backends())} (default auto)")
    p.add_argument("--parity-images", type=int, default=128, help="test images the parity checks use (default 128)")
    add_eval_images_arg(p, 2000, zero_skips=True)
    p.add_argument("--embed-preprocess", action="store_true",
                   help="also write <model>.fp32.uint8.onnx: takes uint8 NHWC pixels at the model's size and scales "
                        "and normalises inside its graph (resize/crop/pad stay on the host); OpenVINO runs the same "
                        "ONNX (default: off)")
    p.add_argument("--untrained-int8", action="store_true",
                   help="without --checkpoint: build INT8 of the random weights anyway (ONNX Runtime Q/DQ, OpenVINO "
                        "NNCF in every scope, ExecuTorch), calibrated on --dataset's real images, for a speed-only "
                        "study; every file stays marked untrained and is never recommended (default: INT8 skipped)")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import DEFAULT_OPSET
    from ..report import format_table
    from .bundle import BundleRequest, export_bundle, read_bundle, summary_rows

    apply_threads(resolve_threads(args))
    out = export_bundle(BundleRequest(
        args.model, args.width, args.checkpoint, comma_list(args.precision), args.out,
        opset=args.opset or DEFAULT_OPSET, dataset=args.dataset, data_dir=args.data_dir,
        calibration=args.calibration, engines=engines_arg(args.engines), parity_images=args.parity_images,
        eval_images=args.eval_images, int8_max_drop=args.max_drop, deploy_batch=args.batch,
        budget_points=args.max_drop, embed_preprocess=args.embed_preprocess, untrained_int8=args.untrained_int8,
        threads=resolve_threads(args), progress=show_progress(args)))
    bundle = read_bundle(out)
    if bundle["untrained"]:
        print(f"note: {bundle['model_name']} width {bundle['width']:g} with randomly initialised weights (no "
              f"--checkpoint, or one marked untrained): for speed studies only; the bundle is marked untrained",
              file=sys.stderr)
    print(format_table(summary_rows(bundle)))
    print(f"bundle: {out}/ (bundle.json, bundle.md; parity inputs: {bundle['parity_inputs']})")
    if bundle.get("calibration"):  # built in ./calib/ when not given: say where it went
        print(f"INT8 calibration set: {bundle['calibration']} (reused by later exports of the same data)")
    if bundle.get("precision_auto"):
        print(f"--precision auto: {bundle['precision_auto']['why']}")
    return 0
