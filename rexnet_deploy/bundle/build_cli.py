"""``rexnet-deploy build``: an ONNX file → an engine of any backend that builds one, checked against ONNX Runtime."""

from __future__ import annotations

import argparse
import sys

from ..cli_args import add_calibration_arg, add_threads_arg, show_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..backends import builders

    names = [b.name for b in builders()]
    p = sub.add_parser("build", help=f"build an engine ({', '.join(names)}) from an exported ONNX file",
                       description="Build an engine from an FP32, FP16 or Q/DQ-INT8 ONNX written by "
                                   "`rexnet-deploy export`. TensorRT: strongly typed network, one optimization "
                                   "profile, workspace limit, a timing cache reused across builds. OpenVINO: IR "
                                   "(.xml/.bin) plus a warmed compile cache. The engine's output is compared with "
                                   "ONNX Runtime before it is written; a manifest goes beside it.")
    p.add_argument("onnx", help="the ONNX file")
    p.add_argument("--backend", choices=names,
                   help="the runtime to build for (default: the first of these this machine can build, in table "
                        "order; a GPU one only where a GPU is)")
    p.add_argument("--out", help="engine path (default: beside the ONNX, named by the backend)")
    p.add_argument("--min-batch", type=int, help="TensorRT profile: smallest batch (default 1)")
    p.add_argument("--opt-batch", type=int, help="TensorRT profile: batch tuned for (default 64, within min…max)")
    p.add_argument("--max-batch", type=int, help="TensorRT profile: largest batch (default 256)")
    p.add_argument("--workspace-mib", type=int, help="TensorRT workspace memory-pool limit (default 1024)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file, read and updated (default: one per TensorRT "
                                          "version and GPU under ~/.cache/rexnet-deploy/)")
    p.add_argument("--tf32", action="store_true", default=None,
                   help="TensorRT: let float32 layers use TF32 (faster on Ampere and newer, ~1e-3 relative error; "
                        "checked against a TF32 parity limit and recorded). Default off, so an FP32 engine computes "
                        "in FP32")
    p.add_argument("--precision", choices=["int8"],
                   help="OpenVINO: quantize the FP32 ONNX itself (NNCF, preset MIXED, SE gates kept in float) instead "
                        "of converting the file as it is; needs --calibration (default: the ONNX file's own "
                        "precision)")
    p.add_argument("--int8-scope", choices=["all", "pointwise"],
                   help="OpenVINO --precision int8: what NNCF quantizes: all (every convolution, the default) or "
                        "pointwise (the 1×1 convolutions only; depthwise, SE pooling/gates and activations left in "
                        "float); recorded in the manifest")
    p.add_argument("--untrained-int8", action="store_true",
                   help="allow --precision int8 of an ONNX exported from random weights (a speed-only study); the "
                        "engine's manifest says untrained")
    add_calibration_arg(p, "what --precision int8 calibrates on, the same file every runtime's INT8 is calibrated "
                           "on (required with it; no default)")
    p.add_argument("--parity-images", type=int, default=128,
                   help="inputs the ONNX Runtime comparison uses (default 128)")
    p.add_argument("--data-dir", help="folder holding the dataset the ONNX names, for real parity images (default: "
                                      "the folder the ONNX records)")
    add_threads_arg(p)
    p.set_defaults(func=run)


def _calibration(path: str, onnx_path: str) -> dict:
    """The calibration images for the backend's own INT8, checked against the ONNX file's preprocessing."""
    from ..quant import CalibrationSet, onnx_preprocess

    calib = CalibrationSet.load(path)
    recorded = onnx_preprocess(onnx_path, required=False)
    if recorded:
        calib.check_usable_for(recorded, onnx_path)
    return {"calibration": calib.images.numpy(), "calibration_source": str(calib.path)}


def run(args: argparse.Namespace) -> int:
    from ..cli_args import apply_threads, resolve_threads

    apply_threads(resolve_threads(args))
    from ..artifacts import read_manifest
    from ..backends import RuntimeUnavailable, read_artifact
    from ..errors import UserError, require_file
    from ..export.parity import onnx_parity_batch
    from ..report import format_table
    from .build import build_engine, builder

    if args.backend is None:  # never a GPU builder on a machine that cannot run it
        from ..backends import builders

        reasons = {b.name: b.unavailable_reason() for b in builders()}
        here = [name for name, reason in reasons.items() if reason is None]
        if not here:
            raise UserError("no engine backend can build on this machine: " +
                            "; ".join(f"{name}: {reason}" for name, reason in reasons.items()))
        args.backend = here[0]
        print(f"note: no --backend given: building for {args.backend}, the first backend this machine can build",
              file=sys.stderr)
    spec = builder(args.backend)
    # unset flags stay out, so a backend is refused only for options it was actually given
    options = {k: getattr(args, k) for k in ("min_batch", "opt_batch", "max_batch", "workspace_mib", "timing_cache",
                                             "tf32") if getattr(args, k) is not None}
    reason = spec.unavailable_reason()
    if reason:  # say what is missing before reading any data
        raise RuntimeUnavailable(reason)
    require_file(args.onnx, "ONNX file", "export one with `rexnet-deploy export`")
    if args.precision:
        options["precision"] = args.precision
        if read_artifact(args.onnx, "onnx").untrained and not args.untrained_int8:
            raise UserError(f"{args.onnx} holds random weights (exported without --checkpoint): INT8 of them means "
                            f"nothing for accuracy; pass --untrained-int8 for a speed-only study")
    if args.int8_scope:
        options["int8_scope"] = args.int8_scope
    if args.calibration:
        options.update(_calibration(args.calibration, args.onnx))
    batch = onnx_parity_batch(args.onnx, args.parity_images, args.data_dir)
    engine = build_engine(args.onnx, args.out, args.backend, images=batch.images, parity_source=batch.source,
                          progress=show_progress(args), **options)
    m = read_manifest(engine)
    p = m["parity"]
    row = {"engine": str(engine), "backend": m["backend"], "precision": m["precision"],
           "size (MB)": round((m["size_bytes"] + m.get("weights", {}).get("size_bytes", 0)) / 1e6, 2),
           "parity vs ONNX Runtime": f"ok, max diff {p['max_abs_diff']:.1e}, top-1 {100 * p['top1_agreement']:.0f} %"}
    print(format_table([row]))
    print(f"parity inputs: {batch.source}")
    if m.get("gpu_name"):
        print(f"built for {m['gpu_name']} (compute {m['compute_capability']}) with TensorRT {m['tensorrt_version']}; "
              f"profile batch {m['profile']['min'][0]}/{m['profile']['opt'][0]}/{m['profile']['max'][0]}; "
              f"TF32 {'on' if m.get('tf32') else 'off'}")
    return 0
