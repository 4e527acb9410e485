"""``rexnet-deploy build``: an ONNX file → an engine of any backend that builds one, checked against ONNX Runtime."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..cli_args import add_calibration_arg, add_threads_arg, show_progress

if TYPE_CHECKING:
    from ..backends import BuildOption


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
    _add_build_option_flags(p)
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


def _flag_options() -> list[BuildOption]:
    """The flag options of every backend that builds from ONNX, in table order; a name two backends share is one
    flag (each backend that takes it reads it)."""
    from ..backends import builders

    found: dict[str, BuildOption] = {}
    for backend in builders():
        for option in backend.build_options():
            if option.cli:
                found.setdefault(option.name, option)
    return list(found.values())


def _add_build_option_flags(p: argparse.ArgumentParser) -> None:
    """Each backend's flag options as flags, made from its module's specs: adding a backend adds its flags."""
    for option in _flag_options():
        if option.type is bool:  # a switch: None when not given, so it stays out of the options
            p.add_argument(option.flag, action="store_true", default=None, help=option.flag_help)
        else:
            p.add_argument(option.flag, type=option.type, choices=option.choices, metavar=option.metavar,
                           help=option.flag_help)


def _given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The build options whose flags were given: an unset flag stays out, so a backend is refused only for
    options it was actually given."""
    return {option.name: getattr(args, option.name) for option in _flag_options()
            if getattr(args, option.name) is not None}


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
    options = _given_options(args)
    reason = spec.unavailable_reason()
    if reason:  # say what is missing before reading any data
        raise RuntimeUnavailable(reason)
    require_file(args.onnx, "ONNX file", "export one with `rexnet-deploy export`")
    # a backend's own INT8 (OpenVINO's --precision int8) of random weights only on request
    if options.get("precision") == "int8" and read_artifact(args.onnx, "onnx").untrained and not args.untrained_int8:
        raise UserError(f"{args.onnx} holds random weights (exported without --checkpoint): INT8 of them means "
                        f"nothing for accuracy; pass --untrained-int8 for a speed-only study")
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
    if m.get("note"):  # what the backend says about its engine (TensorRT: the GPU and profile it is bound to)
        print(m["note"])
    return 0
