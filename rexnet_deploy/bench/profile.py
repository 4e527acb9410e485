"""Where the time goes: a runtime's per-layer profile of a model, summed by kind of layer.

A ReXNet spends its MACs in 1×1 convolutions, but a depthwise 3×3 convolution reads and writes as many
activations as a 1×1 one for 1/C of its arithmetic, so on a CPU its time is set by memory traffic
rather than MACs. This module puts the two side by side for each layer kind: share of the MACs (from
the ONNX graph's shapes) and share of the measured kernel time (ONNX Runtime's profiler, on the
graph it actually runs after fusing Q/DQ pairs into QLinear* kernels), or OpenVINO's per-layer
counters for an IR (``.xml``), in the arithmetic of a bench row's mode, with the precision each kind's
kernels computed in. ``rexnet-deploy profile``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..artifacts import atomic_dir
from ..backends import backend_for, open_runner
from ..backends.base import LAYER_KINDS
from ..errors import UserError, require_file
from ..report import markdown_table

CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv"}
KIND_OF_OP = {
    "QuantizeLinear": "quantize / dequantize", "DequantizeLinear": "quantize / dequantize",
    "DynamicQuantizeLinear": "quantize / dequantize",
    "Gemm": "classifier", "QGemm": "classifier", "MatMul": "classifier", "MatMulInteger": "classifier",
    "ReduceMean": "pooling (SE, head)", "GlobalAveragePool": "pooling (SE, head)",
    "QLinearGlobalAveragePool": "pooling (SE, head)", "QLinearReduceMean": "pooling (SE, head)",
    "Pad": "pad + add (partial residual)", "Add": "pad + add (partial residual)",
    "QLinearAdd": "pad + add (partial residual)",
    "Transpose": "layout changes", "ReorderInput": "layout changes", "ReorderOutput": "layout changes",
}


def _attr(node, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv_kind(node, kernel: list[int]) -> str:
    if int(_attr(node, "group", 1)) > 1:
        return "depthwise conv"
    return "1×1 conv" if all(k == 1 for k in kernel) else "k×k conv (stem)"


def _conv_kernel(node, shapes: dict[str, list[int]]) -> list[int] | None:
    """The kernel size: its attribute, else the weight's shape (2nd input of Conv, 4th of QLinearConv)."""
    kernel = _attr(node, "kernel_shape")
    if kernel is None:
        weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        kernel = weight[2:] if weight else None
    return None if kernel is None else list(kernel)


def _kind(node, shapes: dict[str, list[int]]) -> str:
    if node.op_type in CONV_OPS:
        return _conv_kind(node, _conv_kernel(node, shapes) or [1, 1])
    if node.op_type in KIND_OF_OP:
        return KIND_OF_OP[node.op_type]
    if node.op_type in {"Sigmoid", "QLinearSigmoid", "Mul", "QLinearMul", "Relu", "Clip", "HardSigmoid",
                        "HardSwish", "QuickGelu"}:
        return "activations (SiLU, sigmoid, ReLU6)"
    return "other"


def _shapes(model) -> dict[str, list[int]]:
    """Static shapes of every tensor (batch 1) by ONNX shape inference, initializers included."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    return shapes


def macs_by_kind(model) -> dict[str, int]:
    """MACs per image of each conv/classifier kind in an ONNX graph (float or Q/DQ), from its shapes."""
    shapes = _shapes(model)
    macs: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, inp, kernel = shapes.get(node.output[0]), shapes.get(node.input[0]), _conv_kernel(node, shapes)
            if out is None or inp is None or kernel is None:
                raise UserError(f"shape inference left {node.name} without shapes: re-export the model")
            group = int(_attr(node, "group", 1))
            macs[_conv_kind(node, kernel)] += math.prod(out[1:]) * inp[1] // group * math.prod(kernel)
        elif node.op_type == "Gemm":
            macs["classifier"] += math.prod(shapes[node.input[1]])
    return dict(macs)


def profile_onnx(path: str | Path, batch: int = 64, threads: int = 2, runs: int = 20,
                 warmup: int = 5) -> dict[str, Any]:
    """Kernel time of each layer kind at ``batch`` in ONNX Runtime CPU (mean over ``runs``), and its MAC share."""
    import onnxruntime as ort

    path = require_file(path, "ONNX file", "check the path or run `rexnet-deploy export`")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}): re-export it") from None
    with tempfile.TemporaryDirectory(prefix="rexnet-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        # the graph ORT runs (fused, layout-transformed): its node names are the profile's
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(
            np.float16 if inp.type == "tensor(float16)" else np.float32)
        for _ in range(warmup + runs):
            session.run(None, {inp.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(opts.optimized_model_filepath)
    shapes = _shapes(optimized)
    kind_of_node = {n.name: _kind(n, shapes) for n in optimized.graph.node}
    # per node, the warm-up runs are dropped: keep each node's last `runs` kernel timings
    per_node: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1000.0)
    ms: dict[str, float] = defaultdict(float)
    for name, durations in per_node.items():
        ms[kind_of_node.get(name, "other")] += sum(durations[-runs:]) / runs
    macs = macs_by_kind(model)
    return {"model": str(path), "runtime": backend_for(path).name, "batch": batch, "threads": threads, "runs": runs,
            "kernel_ms_per_batch": round(sum(ms.values()), 3), "macs_per_image": sum(macs.values()),
            "rows": _kind_rows(ms, macs)}


def _kind_rows(ms: dict[str, float], macs: dict[str, int],
               ms_by_precision: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """One row per layer kind with time or MACs: its time and MAC shares, and (given) its kernels' precisions."""
    total_ms, total_macs = sum(ms.values()), sum(macs.values())
    rows = []
    for k in LAYER_KINDS:
        if not (ms.get(k) or macs.get(k)):
            continue
        row = {"layer kind": k, "ms / batch": round(ms.get(k, 0.0), 3),
               "time %": round(100 * ms.get(k, 0.0) / total_ms, 1),
               "MMACs / image": round(macs[k] / 1e6, 2) if k in macs else None,
               "MACs %": round(100 * macs[k] / total_macs, 1) if k in macs else None}
        if ms_by_precision is not None:
            row["kernels in"] = ", ".join(f"{p} {100 * t / ms[k]:.0f} %" for p, t in
                                          sorted(ms_by_precision[k].items(), key=lambda item: -item[1]))
        rows.append(row)
    return rows


def profile_file(path: str | Path, batch: int = 64, threads: int = 2, runs: int = 20,
                 mode: str | None = None) -> dict[str, Any]:
    """``profile_onnx`` for an ONNX file (``mode`` must be None), ``profile_engine`` for an engine file."""
    if backend_for(path).role == "onnx":
        if mode:
            raise UserError(f"--mode {mode} is an engine runner's mode: {path} is profiled in ONNX Runtime as it is")
        return profile_onnx(path, batch, threads, runs)
    return profile_engine(path, batch, threads, runs, mode=mode)


def profile_engine(path: str | Path, batch: int = 64, threads: int = 2, runs: int = 20, warmup: int = 5,
                   mode: str | None = None) -> dict[str, Any]:
    """Layer time by kind for an engine file whose runner has a per-layer profiler (OpenVINO IR), in ``mode``.

    Beside each kind's time and MAC share: the precisions its kernels computed in, by share of its time.
    MACs count the layers that kept their model name through fusing (OpenVINO keeps the convolution's).
    """
    with open_runner(path, threads=threads, **({"mode": mode} if mode else {})) as runner:
        layers = runner.profile_layers(batch, runs, warmup)
        described = runner.describe()
    ms: dict[str, float] = defaultdict(float)
    ms_in: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    macs: dict[str, int] = defaultdict(int)
    for layer in layers:
        kind = layer["kind"]
        ms[kind] += layer["ms"]
        ms_in[kind][layer["precision"]] += layer["ms"]
        if "macs_per_image" in layer:
            macs[kind] += layer["macs_per_image"]
    return {"model": str(path), "runtime": described["backend"], "mode": mode, "batch": batch, "threads": threads,
            "runs": runs, "inference_precision": described.get("inference_precision"),
            "kernel_ms_per_batch": round(sum(ms.values()), 3), "macs_per_image": sum(macs.values()),
            "rows": _kind_rows(ms, macs, ms_in)}


def write_profiles(profiles: list[dict[str, Any]], out_dir: str | Path, command: str) -> Path:
    """profile.json, profile.md and profile.png (time and MAC share per layer kind, one bar per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "profile.json").write_text(json.dumps({"command": command, "profiles": profiles}, indent=2) + "\n")
        md = [f"# Where the time goes (per-layer profiles)\n\n`{command}`\n"]
        for p in profiles:
            runtime = p["runtime"] + (f", mode {p['mode']}" if p.get("mode") else "")
            md.append(f"## `{p['model']}` ({runtime})\n\nbatch {p['batch']}, {p['threads']} threads, mean of "
                      f"{p['runs']} runs: {p['kernel_ms_per_batch']:.2f} ms of kernel time per batch, "
                      f"{p['macs_per_image'] / 1e6:.2f} MMACs per image.\n")
            md.append(markdown_table(p["rows"]))
        md.append("![time and MAC share per layer kind](profile.png)\n")
        (tmp / "profile.md").write_text("\n".join(md))
        fig, ax = plt.subplots(figsize=(12, 1.5 + 0.9 * len(profiles)))
        colors = dict(zip(LAYER_KINDS, plt.get_cmap("tab10").colors))
        labels = []
        for i, p in enumerate(profiles):
            for j, (share_key, label) in enumerate((("time %", "time"), ("MACs %", "MACs"))):
                left = 0.0
                y = i * 2.5 + j
                for r in p["rows"]:
                    width = r[share_key] or 0.0
                    ax.barh(y, width, left=left, color=colors[r["layer kind"]])
                    left += width
                labels.append((y, f"{p['model']} — {label}"))
        ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=8)
        ax.set_xlabel("share (%)")
        ax.invert_yaxis()
        present = [k for k in LAYER_KINDS if any(r["layer kind"] == k for p in profiles for r in p["rows"])]
        ax.legend(handles=[Patch(color=colors[k], label=k) for k in present], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.25), ncol=4)
        fig.tight_layout()
        fig.savefig(tmp / "profile.png", dpi=120)
        plt.close(fig)
    return out_dir
