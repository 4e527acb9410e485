"""ONNX Runtime: runs the ONNX files themselves (FP32, FP16, INT8 Q/DQ) on the CPU, CUDA or its TensorRT provider.

Its INT8 layout, ``ort-cpu`` (uint8 activations × int8 weights), is the one its x86 kernels run fast.

The GPU providers are shared libraries that ONNX Runtime dlopens when a session starts, and they
find their dependencies only if something loaded them first: torch loads the CUDA/cuDNN wheels'
libraries, and TensorRT's pip wheels put libnvinfer where only ``import tensorrt`` loads it. So the
GPU devices import both first, and a provider that cannot start is reported with the cause found
(no GPU, TensorRT missing or of another major than the provider links), not a guess. The TensorRT
provider gets an explicit batch profile and engine and timing caches (:func:`tensorrt_provider_options`)
and never ``trt_fp16_enable``/``trt_int8_enable``: those switch its network from strongly typed to the
weak typing TensorRT 11 removed, while the precision is already in the ONNX file.

Its per-layer profile (:meth:`OnnxRuntimeRunner.profile_layers`) is ONNX Runtime's own profiler on the graph it
actually runs after fusing (Q/DQ pairs into QLinear* kernels, Conv + activation into FusedConv, NCHWc layouts):
the op tables below name the layer kind of each of its ops, ONNX's and ONNX Runtime's fused ones alike.
"""

from __future__ import annotations

import ctypes
import json
import math
import re
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import sha256_file
from ..errors import RuntimeUnavailable, UserError, first_line, require_file
from ..hardware import physical_cores
from ..onnx_io import onnx_precision
from .base import Runner
from .common import DEFAULT_BATCHES, ORT_CPU_LAYOUT, cache_key, cache_root

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}

#: what a bench row may ask for with ``mode:``, and the precision each computes in (None: settings only).
#: ``defaults``: ONNX Runtime as a user runs it without this tool, the peer: the default SessionOptions (one
#: intra-op thread per physical core, every graph optimization), one request at a time, as its own
#: ``onnxruntime_perf_test`` runs by default
RUNNER_MODES: dict[str, str | None] = {"defaults": None}

#: uint8 activations × int8 weights, what its x86 kernels run fast
INT8_LAYOUT = ORT_CPU_LAYOUT

#: the element type of the input a session is fed (float16 files keep float32 I/O unless exported otherwise; an
#: --embed-preprocess file takes uint8 pixels); float32 for the rest
INPUT_DTYPES = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}

#: convolutions as ONNX and ONNX Runtime's optimized graph name them: a layer kind by their group and kernel
CONV_OPS = {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcConv", "NhwcFusedConv"}
#: the other ops of an optimized graph → profile layer kind (``base.LAYER_KINDS``); an op in neither table is "other"
KIND_OF_OP = {
    "QuantizeLinear": "quantize / dequantize", "DequantizeLinear": "quantize / dequantize",
    "DynamicQuantizeLinear": "quantize / dequantize",
    "Gemm": "classifier", "QGemm": "classifier", "FusedGemm": "classifier", "MatMul": "classifier",
    "MatMulInteger": "classifier", "FusedMatMul": "classifier",
    "ReduceMean": "pooling (SE, head)", "GlobalAveragePool": "pooling (SE, head)",
    "QLinearGlobalAveragePool": "pooling (SE, head)", "QLinearReduceMean": "pooling (SE, head)",
    "Pad": "pad + add (partial residual)", "Add": "pad + add (partial residual)",
    "QLinearAdd": "pad + add (partial residual)",
    "Transpose": "layout changes", "ReorderInput": "layout changes", "ReorderOutput": "layout changes",
    **{op: "activations (SiLU, sigmoid, ReLU6)" for op in (
        "Sigmoid", "QLinearSigmoid", "Mul", "QLinearMul", "Relu", "Clip", "HardSigmoid", "HardSwish", "QuickGelu")},
}
#: the element type of a kernel's first input (the activation it reads), as the profiler names it → its precision
PRECISION_OF_TYPE = {"int8": "int8", "uint8": "int8", "float16": "fp16", "bfloat16": "bf16", "float": "fp32"}


def linked_tensorrt_major(library: bytes) -> int | None:
    """The TensorRT major a provider library was linked against: its ``libnvinfer.so.N`` (``nvinfer_N.dll``) dependency.

    onnxruntime-gpu 1.31.1 (CUDA 13) links ``libnvinfer.so.10``: a TensorRT 11 install does not serve it.
    """
    found = re.search(rb"libnvinfer\.so\.(\d+)|nvinfer_(\d+)\.dll", library)
    return int(found.group(1) or found.group(2)) if found else None


def tensorrt_provider_reason(needed_major: int | None, trt_version: str | None, import_error: str | None,
                             loadable: bool | None, cuda_major: str | None = None) -> str | None:
    """Why ONNX Runtime's TensorRT provider cannot find TensorRT here, or None when it can (or cannot be told).

    ``needed_major``: what the provider links (None: unknown); ``trt_version``: the ``tensorrt`` package
    imported (None: ``import_error``); ``loadable``: whether ``libnvinfer.so.<needed_major>`` loads after
    that import (None: not tried). TensorRT installed outside pip (a tar or JetPack, on LD_LIBRARY_PATH)
    loads without the package, so only a library that does not load is refused.
    """
    if loadable or loadable is None:
        return None
    lib = f"libnvinfer.so.{needed_major}"
    wheel = f"tensorrt-cu{cuda_major}" if cuda_major else "tensorrt"
    fix = f"pip install '{wheel}>={needed_major},<{needed_major + 1}'"
    if trt_version and trt_version.split(".")[0] != str(needed_major):
        return (f"ONNX Runtime's TensorrtExecutionProvider links TensorRT {needed_major} ({lib}) but TensorRT "
                f"{trt_version} is installed: {fix} for it, or an onnxruntime-gpu built for TensorRT "
                f"{trt_version.split('.')[0]}")
    if trt_version:
        return (f"ONNX Runtime's TensorrtExecutionProvider needs {lib}, which TensorRT {trt_version}'s package did not "
                f"load: reinstall it ({fix})")
    return (f"ONNX Runtime's TensorrtExecutionProvider needs TensorRT {needed_major} ({lib}), and neither the "
            f"tensorrt package ({import_error or 'not installed'}) nor LD_LIBRARY_PATH provides it: {fix}")


def _probe_tensorrt(ort: Any) -> dict[str, Any]:
    """Load TensorRT's libraries the way the provider needs them, and what was found (the reason's arguments)."""
    found: dict[str, Any] = {"needed_major": None, "trt_version": None, "import_error": None, "loadable": None,
                             "cuda_major": None}
    capi = Path(ort.__file__).parent / "capi"
    for name in ("libonnxruntime_providers_tensorrt.so", "onnxruntime_providers_tensorrt.dll"):
        if (capi / name).is_file():
            found["needed_major"] = linked_tensorrt_major((capi / name).read_bytes())
            break
    try:
        import tensorrt  # loads the wheel's libnvinfer, which the provider then finds by its soname

        found["trt_version"] = tensorrt.__version__
    except (ImportError, OSError) as exc:
        found["import_error"] = first_line(exc, 100)
    if found["needed_major"] is not None and sys.platform.startswith("linux"):  # the soname is Linux's
        try:
            ctypes.CDLL(f"libnvinfer.so.{found['needed_major']}")
            found["loadable"] = True
        except OSError:
            found["loadable"] = False
    found["cuda_major"] = _ort_cuda_major()
    return found


def _cuda_gpu_visible() -> bool | None:
    """True/False when torch can tell (its CUDA build), None when it cannot (a CPU-only torch)."""
    import torch  # also loads the CUDA/cuDNN libraries the ONNX Runtime GPU providers dlopen

    return torch.cuda.is_available() if torch.version.cuda else None


def unavailable_reason(device: str) -> str | None:
    import onnxruntime as ort

    if device not in PROVIDERS:
        return None  # refused with the known devices when the runner opens
    wanted = PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        return f"ONNX Runtime has no {wanted} in this install: install onnxruntime-gpu on a machine with a CUDA GPU"
    if device == "cpu":
        return None
    if _cuda_gpu_visible() is False:
        return f"ONNX Runtime's {wanted} needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False)"
    if device == "tensorrt":
        return tensorrt_provider_reason(**_probe_tensorrt(ort))
    return None


def tensorrt_provider_options(input_name: str, shape: Sequence[int | str], engine_dir: str | Path,
                              timing_dir: str | Path, batches: Sequence[int] = DEFAULT_BATCHES) -> dict[str, Any]:
    """The TensorRT provider's options for an ONNX input of ``shape`` (batch axis first, a name or 0 = dynamic).

    Without a profile the provider builds for the first batch size it sees and rebuilds for every one
    outside it (evaluation's 256, its last partial batch, then each sweep size); without caches it
    rebuilds on every run. The profile is the one ``build`` gives TensorRT engines (min/opt/max of
    ``batches``); a static batch or dynamic image size gets none (the provider then takes what it sees).
    """
    options: dict[str, Any] = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_dir),
                               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(timing_dir)}
    batch, dims = shape[0], list(shape[1:])
    if not (isinstance(batch, int) and batch > 0) and all(isinstance(d, int) and d > 0 for d in dims):
        for key, b in zip(("min", "opt", "max"), batches):
            options[f"trt_profile_{key}_shapes"] = f"{input_name}:" + "x".join(str(v) for v in (b, *dims))
    return options


def _tensorrt_cache_dirs(path: Path, ort_version: str, probe: dict[str, Any]) -> tuple[Path, Path]:
    """(engine cache, timing cache) folders for one ONNX file on this GPU, TensorRT and ONNX Runtime.

    The provider names its engine files by the graph and not by its weights, so two exports of one
    architecture would share (and run) a stale engine: engines get a folder per ONNX file content. The
    timing cache depends only on the layers, so it is shared per TensorRT version and GPU model.
    """
    import torch

    facts = {"tensorrt_version": probe["trt_version"] or f"{probe['needed_major'] or 'system'}",
             "gpu_name": "unknown-gpu", "compute_capability": "unknown"}
    if torch.cuda.is_available():  # a CPU-only torch beside onnxruntime-gpu cannot name the GPU
        major, minor = torch.cuda.get_device_capability(0)
        facts.update(gpu_name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")
    timing = cache_root() / "ort-tensorrt" / f"onnxruntime-{ort_version}-{cache_key(facts)}"
    engines = timing / sha256_file(path)[:16]
    engines.mkdir(parents=True, exist_ok=True)
    return engines, timing


def provider_fallback_reason(wanted: str, started: Sequence[str], ort_version: str, cuda_major: str | None) -> str:
    """One line for a GPU provider that was asked for and not started although its checks passed."""
    libs = f"CUDA {cuda_major} and cuDNN 9" if cuda_major else "CUDA and cuDNN"
    return (f"{wanted} did not start on this GPU (ONNX Runtime {ort_version} runs {', '.join(started)} instead; its "
            f"own error is logged above): check that this machine's driver and {libs} libraries fit onnxruntime-gpu")


def _graph_input(path: Path) -> tuple[str, tuple[int | str, ...]]:
    """The image input's name and shape (a dynamic dimension as its name), read without the weights."""
    import onnx

    graph_input = onnx.load(str(path), load_external_data=False).graph.input[0]
    return graph_input.name, tuple(d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim)


def _ort_cuda_major() -> str | None:
    """The CUDA major this onnxruntime build was made for (onnxruntime-gpu), None for a CPU build."""
    try:
        from onnxruntime.capi import build_and_package_info

        return str(build_and_package_info.cuda_version).split(".")[0] or None
    except (ImportError, AttributeError):
        return None


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _conv_kind(node: Any, kernel: list[int]) -> str:
    if int(_attr(node, "group", 1)) > 1:
        return "depthwise conv"
    return "1×1 conv" if all(k == 1 for k in kernel) else "k×k conv (stem)"


def _conv_kernel(node: Any, shapes: dict[str, list[int]]) -> list[int] | None:
    """The kernel size: its attribute, else the weight's shape (2nd input of Conv, 4th of QLinearConv)."""
    kernel = _attr(node, "kernel_shape")
    if kernel is None:
        weight = shapes.get(node.input[3 if node.op_type == "QLinearConv" else 1])
        kernel = weight[2:] if weight else None
    return None if kernel is None else list(kernel)


def _op_kind(node: Any, shapes: dict[str, list[int]]) -> str:
    """The profile layer kind of one node of an ONNX or optimized ONNX Runtime graph (``base.LAYER_KINDS``)."""
    if node.op_type in CONV_OPS:
        return _conv_kind(node, _conv_kernel(node, shapes) or [1, 1])
    return KIND_OF_OP.get(node.op_type, "other")


def _graph_shapes(model: Any) -> dict[str, list[int]]:
    """Static shapes of every tensor (batch 1) by ONNX shape inference, initializers included."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    return shapes


def _macs_by_kind(model: Any) -> dict[str, list[int]]:
    """MACs per image of each Conv and Gemm of an ONNX graph (float or Q/DQ), by layer kind in graph order."""
    shapes = _graph_shapes(model)
    macs: dict[str, list[int]] = defaultdict(list)
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, inp, kernel = shapes.get(node.output[0]), shapes.get(node.input[0]), _conv_kernel(node, shapes)
            if out is None or inp is None or kernel is None:
                raise UserError(f"shape inference left {node.name} without shapes: re-export the model")
            group = int(_attr(node, "group", 1))
            macs[_conv_kind(node, kernel)].append(math.prod(out[1:]) * inp[1] // group * math.prod(kernel))
        elif node.op_type == "Gemm":
            macs["classifier"].append(math.prod(shapes[node.input[1]]))
    return dict(macs)


def _attach_macs(records: list[dict[str, Any]], macs: dict[str, list[int]]) -> list[dict[str, Any]]:
    """``macs_per_image`` on the records of the optimized graph: the ONNX file's layers of each kind, in order.

    Fusing renames a convolution ("fused X", "X_token_7", a QLinearConv for DQ → Conv → Q) but never merges two,
    so the n-th of a kind in the file is the n-th of that kind ONNX Runtime runs; should the counts differ, the
    rest go to the kind's last record, so each kind's total stays the file's own.
    """
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_kind[record["kind"]].append(record)
    for kind, values in macs.items():
        targets = by_kind.get(kind)
        for i, value in enumerate(values if targets else []):
            target = targets[min(i, len(targets) - 1)]
            target["macs_per_image"] = target.get("macs_per_image", 0) + value
    return records


def _kernel_precision(event: dict[str, Any]) -> str:
    """What a profiled kernel computed in: the element type of its first input (``input_type_shape``)."""
    inputs = event.get("args", {}).get("input_type_shape") or [{}]
    return PRECISION_OF_TYPE.get(next(iter(inputs[0]), ""), "other")


def side_files(path: Path) -> list[Path]:
    return []


def open_runner(path: Path, device: str = "cpu", threads: int | None = None, *,
                mode: str | None = None) -> "OnnxRuntimeRunner":
    require_file(path, "ONNX file", "check the path or run `rexnet-deploy export`")
    return OnnxRuntimeRunner(path, device=device, threads=threads, precision=onnx_precision(path), mode=mode)


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession``, one request at a time (ONNX Runtime's CPU kernels parallelise inside a run).

    ``threads`` sets the intra-op pool (inter-op 1) except in ``mode="defaults"``, the peer, which sets nothing:
    ONNX Runtime then takes one intra-op thread per physical core. ``describe()`` records both and the request count.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 precision: str = "fp32", mode: str | None = None) -> None:
        super().__init__(precision)
        import onnxruntime as ort

        self.path = require_file(path, "ONNX file", "check the path or run `rexnet-deploy export`")
        if device not in PROVIDERS:
            raise UserError(f"unknown device {device!r} for ONNX Runtime: choose {', '.join(PROVIDERS)}")
        if mode is not None and mode not in RUNNER_MODES:
            raise UserError(f"unknown ONNX Runtime mode {mode!r}: choose {', '.join(RUNNER_MODES)} (or none)")
        reason = unavailable_reason(device)
        if reason:
            raise RuntimeUnavailable(reason)
        wanted = PROVIDERS[device][0]
        self.device, self.mode = device, mode
        self.threads_requested = int(threads) if threads else None
        opts = self._session_options(ort)
        self.threads = opts.intra_op_num_threads or physical_cores()
        providers: list[Any] = list(PROVIDERS[device])
        self.provider_options: dict[str, Any] = {}
        probe: dict[str, Any] = {}
        if device == "tensorrt":
            probe = _probe_tensorrt(ort)  # imports tensorrt, so its libnvinfer is loaded before the session
            engine_dir, timing_dir = _tensorrt_cache_dirs(self.path, ort.__version__, probe)
            name, shape = _graph_input(self.path)
            self.provider_options = tensorrt_provider_options(name, shape, engine_dir, timing_dir)
            providers[0] = (wanted, self.provider_options)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph types for a foreign file
            raise UserError(f"{self.path} cannot be loaded by ONNX Runtime ({type(exc).__name__}: "
                            f"{first_line(exc)}): re-export it") from None
        started = self.session.get_providers()
        if device != "cpu" and started[0] != wanted:
            # onnxruntime-gpu falls back to the next provider (at last the CPU) instead of failing
            cuda_major = probe.get("cuda_major") or _ort_cuda_major()
            raise RuntimeUnavailable(provider_fallback_reason(wanted, started, ort.__version__, cuda_major))
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type

    def _session_options(self, ort: Any) -> Any:
        """This runner's SessionOptions: ``threads`` for the intra-op pool (inter-op 1), none in ``defaults`` mode."""
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # logging only: the peer's settings are otherwise ONNX Runtime's own
        if self.threads_requested and self.mode != "defaults":
            opts.intra_op_num_threads = self.threads_requested
            opts.inter_op_num_threads = 1
        return opts

    def infer(self, batch: np.ndarray) -> np.ndarray:
        dtype = INPUT_DTYPES.get(self.input_type, np.float32)
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=dtype)})[0]
        return out.astype(np.float32, copy=False)

    def profile_layers(self, batch: int, runs: int, warmup: int = 5) -> list[dict[str, Any]]:
        """ONNX Runtime's profiler at ``batch`` on the CPU: one record per node of the graph it runs after fusing.

        A second session of this runner's settings with profiling on (the runner's own stays unprofiled for
        timing) that also writes its optimized graph: the profile names that graph's nodes, whose ops give each
        record its kind; the precision is the type of the kernel's first input. Shape inference does not know
        ONNX Runtime's fused ops, so MACs per image come from the ONNX file's own Conv and Gemm nodes, each on
        the optimized node of its kind in its place (:func:`_attach_macs`).
        """
        import onnx
        import onnxruntime as ort

        if self.device != "cpu":
            raise UserError(f"the ONNX Runtime profile times CPU kernels: profile {self.path.name} on the cpu device")
        with tempfile.TemporaryDirectory(prefix="rexnet-profile-") as tmp:
            opts = self._session_options(ort)
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "profile")
            opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            session = ort.InferenceSession(str(self.path), opts, providers=PROVIDERS["cpu"])
            inp = session.get_inputs()[0]
            shape = [batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
            x = np.random.default_rng(0).standard_normal(shape).astype(INPUT_DTYPES.get(inp.type, np.float32))
            for _ in range(warmup + runs):
                session.run(None, {inp.name: x})
            events = json.loads(Path(session.end_profiling()).read_text())
            optimized = onnx.load(opts.optimized_model_filepath)
        shapes = _graph_shapes(optimized)
        nodes = {n.name: n for n in optimized.graph.node}
        # in execution order, which follows the graph's as the file's own layers do
        records = [_layer_record(name, timed[-runs:], runs, nodes.get(name), shapes)
                   for name, timed in _kernel_events(events).items()]
        return _attach_macs(records, _macs_by_kind(onnx.load(str(self.path))))

    def describe(self) -> dict:
        extra = {"provider_options": self.provider_options} if self.provider_options else {}
        options = self.session.get_session_options()
        return {**super().describe(), "path": str(self.path), "providers": self.session.get_providers(),
                "mode": self.mode or "tool", "requests": 1, "threads": self.threads,
                "threads_requested": self.threads_requested,
                "intra_op_threads": options.intra_op_num_threads or "default (one per physical core)",
                "inter_op_threads": options.inter_op_num_threads or "default", **extra}


def _kernel_events(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each node's kernel-time events of an ONNX Runtime profile, in run order (warm-up runs first)."""
    per_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e)
    return per_node


def _layer_record(name: str, timed: list[dict[str, Any]], runs: int, node: Any,
                  shapes: dict[str, list[int]]) -> dict[str, Any]:
    """One ``profile_layers`` record from a node's events of the last ``runs`` runs and its optimized-graph node."""
    args = timed[-1].get("args", {})
    op = args.get("op_name", "?")
    return {"name": name, "layer_type": f"{node.domain}.{node.op_type}" if node is not None and node.domain else op,
            "kernel": f"{op} ({args.get('provider', '?').removesuffix('ExecutionProvider')})",
            "kind": _op_kind(node, shapes) if node is not None else "other",
            "precision": _kernel_precision(timed[-1]), "ms": sum(e["dur"] for e in timed) / 1000.0 / runs}


#: ``metadata_props`` the export stage stores as JSON text (the rest are plain strings)
_JSON_METADATA = ("width", "input_size", "preprocess", "classes", "num_classes", "dataset_spec", "untrained",
                  "checkpoint_metrics", "tool_versions")


def recorded_metadata(path: Path) -> dict:
    """What an ONNX file records in its ``metadata_props``, JSON values decoded."""
    import json

    from ..onnx_io import read_metadata

    found: dict = {}
    for key, value in read_metadata(path).items():
        try:
            found[key] = json.loads(value) if key in _JSON_METADATA and value else value
        except ValueError:
            found[key] = value
    return found
