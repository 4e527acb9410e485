"""``rexnet-deploy build``: an ONNX file → a TensorRT or OpenVINO engine, checked against ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a TensorRT (GPU) or OpenVINO (CPU) engine from an exported ONNX file",
                       description="Build an engine from an FP32, FP16 or Q/DQ-INT8 ONNX written by "
                                   "`rexnet-deploy export`. TensorRT: strongly typed network, one optimization "
                                   "profile, workspace limit, a timing cache reused across builds. OpenVINO: IR "
                                   "(.xml/.bin) plus a warmed compile cache. The engine's output is compared with "
                                   "ONNX Runtime before it is written; a manifest goes beside it.")
    p.add_argument("onnx", help="the ONNX file")
    p.add_argument("--backend", choices=("tensorrt", "openvino"), default="tensorrt")
    p.add_argument("--out", help="engine path (default: beside the ONNX, .engine or .openvino.xml)")
    p.add_argument("--min-batch", type=int, help="TensorRT profile: smallest batch (default 1)")
    p.add_argument("--opt-batch", type=int, help="TensorRT profile: batch tuned for (default 64, within min…max)")
    p.add_argument("--max-batch", type=int, help="TensorRT profile: largest batch (default 256)")
    p.add_argument("--workspace-mib", type=int, help="TensorRT workspace memory-pool limit (default 1024)")
    p.add_argument("--timing-cache", help="TensorRT timing cache file, read and updated (default: one per TensorRT "
                                          "version and GPU under ~/.cache/rexnet-deploy/)")
    p.add_argument("--parity-images", type=int, default=128, help="inputs the ONNX Runtime comparison uses")
    p.add_argument("--data-dir", help="folder holding the dataset the ONNX names (for real parity images)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..artifacts import read_manifest
    from ..export.parity import onnx_parity_batch
    from ..report import format_table
    from . import build_engine

    options = {k: getattr(args, k) for k in ("min_batch", "opt_batch", "max_batch", "workspace_mib", "timing_cache")
               if getattr(args, k) is not None}
    if args.backend == "tensorrt":
        from .tensorrt import require_tensorrt

        require_tensorrt()  # say what is missing before reading any data
    if not Path(args.onnx).is_file():
        raise UserError(f"ONNX file {args.onnx} does not exist: export one with `rexnet-deploy export`")
    batch = onnx_parity_batch(args.onnx, args.parity_images, args.data_dir)
    engine = build_engine(args.onnx, args.out, args.backend, images=batch.images, parity_source=batch.source,
                          **options)
    m = read_manifest(engine)
    p = m["parity"]
    row = {"engine": str(engine), "backend": m["backend"], "precision": m["precision"],
           "size (MB)": round((m["size_bytes"] + m.get("weights", {}).get("size_bytes", 0)) / 1e6, 2),
           "parity vs ONNX Runtime": f"ok, max diff {p['max_abs_diff']:.1e}, top-1 {100 * p['top1_agreement']:.0f} %"}
    print(format_table([row]))
    print(f"parity inputs: {batch.source}")
    if m["backend"] == "tensorrt":
        print(f"built for {m['gpu_name']} (compute {m['compute_capability']}) with TensorRT {m['tensorrt_version']}; "
              f"profile batch {m['profile']['min'][0]}/{m['profile']['opt'][0]}/{m['profile']['max'][0]}")
    return 0
