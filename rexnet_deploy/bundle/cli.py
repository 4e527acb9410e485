"""``rexnet-deploy export``: a ReXNet → a deployable bundle (ONNX FP32/FP16/INT8, engines, manifests)."""

from __future__ import annotations

import argparse
import sys

from ..cli_args import comma_list, engines_arg, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..backends import builders

    p = sub.add_parser("export", help="export a ReXNet to a bundle: ONNX (fp32/fp16/int8) + engines, parity-checked",
                       description="Export a ReXNet (default: rexnet_tiny_cifar width 0.5) into a bundle folder: "
                                   "ONNX files checked against torch on real test images, the engines this "
                                   "machine can build (CPU engines here, GPU ones where a GPU is), a manifest beside "
                                   "every file, bundle.json and bundle.md.")
    p.add_argument("--model", help="registry name (default: the checkpoint's, else rexnet_tiny_cifar)")
    p.add_argument("--width", type=float, help="width multiplier (default: the checkpoint's, else 0.5 for "
                                               "rexnet_tiny_cifar)")
    p.add_argument("--checkpoint", help="trained or pruned checkpoint; without it random weights are exported "
                                        "(marked untrained, INT8 skipped)")
    p.add_argument("--precision", default="fp32,fp16,int8",
                   help="comma-separated subset of fp32,fp16,int8 (default: all; fp32 is always written), or auto: "
                        "all, then every file (and FP32 in BF16 where the CPU has it) timed at --deploy-batch "
                        "here, and the fastest within --budget top-1 points of FP32 recorded as recommended")
    p.add_argument("--deploy-batch", type=positive_int, default=64,
                   help="the batch you will run at: what --precision auto times each candidate at (default 64)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="top-1 points the --precision auto pick may lose against FP32 (default 0.5)")
    p.add_argument("--out", help="bundle folder (default: export/<model>-<width>/); replaced whole, atomically")
    p.add_argument("--dataset", help="test images for parity/accuracy and calibration (default: the checkpoint's, "
                                     "else fashion_mnist for 32×32 models)")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--calibration", help="calibration set for INT8 (default: calib/<dataset>-512-s0.pt, built if "
                                         "missing)")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--engines", default="auto",
                   help=f"engines to build: auto (all this machine can), none, or a list of "
                        f"{','.join(b.name for b in builders())}")
    p.add_argument("--parity-images", type=int, default=128, help="test images the parity checks use")
    p.add_argument("--eval-images", type=int, default=2000,
                   help="test images each file's top-1 is measured on (0: skip)")
    p.add_argument("--int8-max-drop", type=float, default=0.5,
                   help="top-1 points INT8 may lose vs FP32 before sensitive layers are kept in float")
    p.add_argument("--embed-preprocess", action="store_true",
                   help="also write <model>.fp32.uint8.onnx: takes uint8 NHWC pixels at the model's size and scales "
                        "and normalises inside its graph (resize/crop/pad stay on the host); OpenVINO runs the same "
                        "ONNX (default: off)")
    p.add_argument("--untrained-int8", action="store_true",
                   help="without --checkpoint: build INT8 of the random weights anyway (ONNX Runtime Q/DQ, OpenVINO "
                        "NNCF in every scope, ExecuTorch), calibrated on --dataset's real images, for a speed-only "
                        "study; every file stays marked untrained and is never recommended (default: INT8 skipped)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import DEFAULT_OPSET
    from ..report import format_table
    from .bundle import BundleRequest, export_bundle, read_bundle, summary_rows

    out = export_bundle(BundleRequest(
        args.model, args.width, args.checkpoint, comma_list(args.precision), args.out,
        opset=args.opset or DEFAULT_OPSET, dataset=args.dataset, data_dir=args.data_dir,
        calibration=args.calibration, engines=engines_arg(args.engines), parity_images=args.parity_images,
        eval_images=args.eval_images, int8_max_drop=args.int8_max_drop, deploy_batch=args.deploy_batch,
        budget_points=args.budget, embed_preprocess=args.embed_preprocess, untrained_int8=args.untrained_int8))
    bundle = read_bundle(out)
    if bundle["untrained"]:
        print("note: randomly initialised weights (no --checkpoint, or one marked untrained): for speed studies "
              "only; the bundle is marked untrained", file=sys.stderr)
    print(format_table(summary_rows(bundle)))
    print(f"bundle: {out}/ (bundle.json, bundle.md; parity inputs: {bundle['parity_inputs']})")
    if bundle.get("precision_auto"):
        print(f"--precision auto: {bundle['precision_auto']['why']}")
    return 0
