"""TensorRT (10.x and 11.x) on an NVIDIA GPU: engines built from FP32, FP16 or Q/DQ-INT8 ONNX files, and their runner.

The precision lives in the ONNX file and the network is strongly typed: TensorRT 11 removed the
FP16/INT8 builder flags and implicit calibration, and a strongly typed build of a Q/DQ or half
ONNX works the same on 10 and 11. An engine is valid only for the TensorRT version and GPU compute
capability it was built with, so its manifest records both and :func:`engine_mismatch` refuses
anything else ("skipped: rebuild on this GPU", like a missing TensorRT). Engines are built with
TF32 off (TensorRT's default is on, which an "fp32" engine must not be) unless asked for
(``build --tf32``), and the manifest records which.

``tensorrt`` is imported lazily (the ``[trt]`` extra). Every decision around a TensorRT call is a
pure function that takes the ``trt`` module, a builder config or an engine as an argument (profile
shapes, builder flags, timing-cache fallback, the engine's batch bounds, manifest fields, mismatch,
precision), so it runs and is unit-tested on a CPU with stand-ins; how a batch is split into chunks the
profile takes is ``common.run_chunked``, which ExecuTorch's runner shares. Runner buffers are torch CUDA
tensors, so no pycuda/cuda-python is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_path, read_manifest, sha256_file
from ..errors import RuntimeUnavailable, UserError, first_line, require_file
from .base import BuildOption, Runner, TargetLayout
from .common import DEFAULT_BATCHES, cache_key, cache_root, run_chunked

DEFAULT_WORKSPACE_MIB = 1024
BUILD_OPTIONS = (
    BuildOption("min_batch", "TensorRT profile: smallest batch", DEFAULT_BATCHES[0], int),
    BuildOption("opt_batch", "TensorRT profile: batch tuned for", f"{DEFAULT_BATCHES[1]}, within min…max", int),
    BuildOption("max_batch", "TensorRT profile: largest batch", DEFAULT_BATCHES[2], int),
    BuildOption("workspace_mib", "TensorRT workspace memory-pool limit", DEFAULT_WORKSPACE_MIB, int),
    BuildOption("timing_cache", "TensorRT timing cache file, read and updated",
                "one per TensorRT version and GPU under ~/.cache/rexnet-deploy/", str),
    BuildOption("tf32", "TensorRT: let float32 layers use TF32 (faster on Ampere and newer, ~1e-3 relative error; "
                        "checked against a TF32 parity limit and recorded)", "off, so an FP32 engine computes in FP32",
                bool),
)

INT8_LAYOUT = TargetLayout(
    "tensorrt", "int8", True, False,
    "TensorRT explicit quantization takes only symmetric int8 Q/DQ (zero point 0), and its ONNX parser "
    "rejects the DequantizeLinear of an int32 bias (onnx/onnx-tensorrt#850), so biases stay float")


def unavailable_reason(device: str = "cuda") -> str | None:
    """Why TensorRT engines cannot be built or run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return (f"TensorRT is not installed ({first_line(exc, 100)}): pip install 'rexnet-deploy[trt]' "
                f"(wheels from NVIDIA's index) on a machine with a CUDA GPU")
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False): build TensorRT engines on the GPU " \
               "that will run them"
    return None


def side_files(path: Path) -> list[Path]:
    return []


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`RuntimeUnavailable` with the one-line reason."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    import tensorrt

    return tensorrt


def device_facts(device_index: int = 0) -> dict[str, str]:
    """The facts an engine is bound to: TensorRT version, GPU name, compute capability."""
    trt = require_tensorrt()
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    return {"tensorrt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}"}


def profile_shapes(input_shape: tuple[int, ...], min_batch: int | None = None, opt_batch: int | None = None,
                   max_batch: int | None = None) -> dict[str, list]:
    """min/opt/max input shapes of the one optimization profile; ``input_shape`` without the batch axis.

    Unset batches take :data:`DEFAULT_BATCHES`; an unset opt is clamped into the given min…max.
    """
    min_batch = DEFAULT_BATCHES[0] if min_batch is None else min_batch
    max_batch = DEFAULT_BATCHES[2] if max_batch is None else max_batch
    if opt_batch is None and isinstance(min_batch, int) and isinstance(max_batch, int):
        opt_batch = min(max(DEFAULT_BATCHES[1], min_batch), max_batch)
    for name, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} {value} must be a positive integer")
    if not min_batch <= opt_batch <= max_batch:
        raise UserError(f"batch profile {min_batch}/{opt_batch}/{max_batch} must satisfy min ≤ opt ≤ max: "
                        f"fix --min-batch/--opt-batch/--max-batch")
    if any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise UserError(f"the ONNX input has dynamic non-batch dimensions {tuple(input_shape)}: export it with a "
                        f"fixed image size (rexnet-deploy export does)")
    dims = list(input_shape)
    return {"min": [min_batch, *dims], "opt": [opt_batch, *dims], "max": [max_batch, *dims]}


def tensorrt_precision(onnx_path: str | Path) -> str:
    """The precision a strongly typed build of ``onnx_path`` runs in; refuses Q/DQ TensorRT cannot take.

    TensorRT's explicit quantization needs symmetric signed INT8 Q/DQ (zero point 0, int8). The
    ONNX Runtime CPU layout (uint8 activations with zero points) is refused with the fix.
    """
    import onnx  # here, not at the top: `build --help` reads this module's BUILD_OPTIONS and must stay light

    from ..onnx_io import onnx_precision, qdq_layout

    precision = onnx_precision(onnx_path)
    if precision != "int8":
        return precision
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    if ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        raise UserError(f"{onnx_path} uses QOperator INT8 ops, which TensorRT cannot build: quantize it in Q/DQ "
                        f"format for TensorRT (rexnet-deploy quantize --target tensorrt)")
    layout = qdq_layout(onnx_path)
    for kind in ("activations", "weights"):
        found = layout.get(kind, {"types": ["int8"], "nonzero_zero_points": 0})
        if found["types"] != ["int8"] or found["nonzero_zero_points"]:
            raise UserError(f"{onnx_path} has {'/'.join(found['types'])} {kind} Q/DQ"
                            f"{' with nonzero zero points' if found['nonzero_zero_points'] else ''} (the ONNX "
                            f"Runtime CPU layout); TensorRT needs symmetric int8 Q/DQ: quantize with "
                            f"--target tensorrt")
    return precision


def engine_manifest_fields(onnx_path: str | Path, facts: dict[str, str], profile: dict[str, list], precision: str,
                           workspace_mib: int, timing_cache: str | Path | None, tf32: bool = False) -> dict[str, Any]:
    """What an engine's manifest records beside the file hash (written by ``write_manifest``)."""
    onnx_path = Path(onnx_path)
    return {
        "kind": "engine",
        "backend": "tensorrt",
        "precision": precision,
        "strongly_typed": True,
        # float32 convolutions and matrix products may round their inputs to TF32 (10-bit mantissa)
        "tf32": bool(tf32),
        "source_onnx": onnx_path.name,
        "source_onnx_sha256": sha256_file(onnx_path),
        "tensorrt_version": facts["tensorrt_version"],
        "gpu_name": facts["gpu_name"],
        "compute_capability": facts["compute_capability"],
        "profile": profile,
        "workspace_mib": workspace_mib,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "note": f"built for {facts['gpu_name']} (compute {facts['compute_capability']}) with TensorRT "
                f"{facts['tensorrt_version']}; profile batch {profile['min'][0]}/{profile['opt'][0]}/"
                f"{profile['max'][0]}; TF32 {'on' if tf32 else 'off'}",
    }


def engine_mismatch(manifest: dict[str, Any], facts: dict[str, str]) -> str | None:
    """One line saying why an engine built as ``manifest`` says cannot run on ``facts``; None if it can.

    TensorRT engines are bound to the exact TensorRT version and the GPU's compute capability; a
    different GPU name with the same capability runs (recorded, not refused).
    """
    missing = [k for k in ("tensorrt_version", "compute_capability") if not manifest.get(k)]
    name = manifest.get("artifact", "the engine")
    if missing:
        return f"{name}'s manifest lacks {', '.join(missing)}: rebuild on this GPU with rexnet-deploy build"
    built = f"{manifest.get('gpu_name', '?')} (compute {manifest['compute_capability']}) " \
            f"with TensorRT {manifest['tensorrt_version']}"
    here = f"{facts['gpu_name']} (compute {facts['compute_capability']}) with TensorRT {facts['tensorrt_version']}"
    if manifest["compute_capability"] != facts["compute_capability"] or \
            manifest["tensorrt_version"] != facts["tensorrt_version"]:
        return f"{name} was built on {built}, this is {here}: rebuild on this GPU with rexnet-deploy build"
    return None


def default_timing_cache(facts: dict[str, str]) -> Path:
    """One timing cache per TensorRT version, compute capability and GPU model, shared by every build here."""
    return cache_root() / f"{cache_key(facts)}.timing-cache"


def input_profile(input_shape: Sequence[int], min_batch: int | None = None, opt_batch: int | None = None,
                  max_batch: int | None = None) -> dict[str, list]:
    """The profile for the network input's shape as the parser reports it (batch axis first, -1 = dynamic).

    A static batch admits only itself, so its profile is that batch three times; asking for another
    is refused here rather than by TensorRT's builder with a misleading "could not build".
    """
    batch, dims = input_shape[0], tuple(input_shape[1:])
    if isinstance(batch, int) and batch > 0:
        asked = sorted({v for v in (min_batch, opt_batch, max_batch) if v is not None} - {batch})
        if asked:
            raise UserError(f"the ONNX input has a static batch of {batch}, so the profile cannot take {asked[0]}: "
                            f"drop --min-batch/--opt-batch/--max-batch or re-export with a dynamic batch "
                            f"(rexnet-deploy export does)")
        return profile_shapes(dims, batch, batch, batch)
    return profile_shapes(dims, min_batch, opt_batch, max_batch)


def _strongly_typed_flags(trt: Any) -> int:
    # TensorRT 10: STRONGLY_TYPED = 1 must be set; TensorRT 11 keeps it (value 0) only as an ignored, deprecated
    # member because strong typing is always on; a release without the member needs no flag at all
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def apply_math_flags(config: Any, trt: Any, tf32: bool) -> dict[str, bool]:
    """Set or clear ``BuilderFlag.TF32`` on a builder config; returns the manifest field (``{"tf32": …}``).

    TensorRT turns TF32 on by default (10 and 11 alike, strongly typed or not; trtexec clears it only
    on ``--noTF32``), which rounds float32 conv/GEMM inputs to a 10-bit mantissa: an "fp32" engine
    would then miss the FP32 parity limit. So it is off unless asked for, and the state is read back
    from the config rather than assumed.
    """
    flag = getattr(trt.BuilderFlag, "TF32", None)
    if flag is None:  # a TensorRT without the flag computes float32 as float32
        if tf32:
            raise UserError(f"TensorRT {getattr(trt, '__version__', '?')} has no TF32 builder flag: build without "
                            f"--tf32")
        return {"tf32": False}
    if tf32:
        config.set_flag(flag)
    else:
        config.clear_flag(flag)
    return {"tf32": bool(config.get_flag(flag))}


def attach_timing_cache(config: Any, blob: bytes) -> str | None:
    """Give ``config`` the timing cache serialized in ``blob``, or an empty one; returns why ``blob`` was not used.

    ``create_timing_cache`` returns None for a corrupt or truncated file (NVIDIA's own cacheUtils treats
    the nullptr as possible), and ``set_timing_cache(…, ignore_mismatch=False)`` returns False for a
    cache from another TensorRT version or GPU. Either way the build goes on with an empty cache, which
    replaces the file afterwards; the caller prints the returned reason as one warning line. None: the
    file was used (or there was none).
    """
    problem = None
    if blob:
        try:
            cache = config.create_timing_cache(blob)
        except (RuntimeError, TypeError, ValueError):  # a binding that raises instead of returning None
            cache = None
        if cache is None:
            problem = "unreadable (truncated, corrupt or not a TensorRT timing cache)"
        elif config.set_timing_cache(cache, ignore_mismatch=False):
            return None
        else:
            problem = "from another TensorRT version or GPU"
    empty = config.create_timing_cache(b"")
    if empty is None or not config.set_timing_cache(empty, ignore_mismatch=False):
        raise UserError("TensorRT could not create an empty timing cache (see its log above): check the GPU "
                        "with nvidia-smi and rebuild")
    return problem


def build(onnx_path: str | Path, out_path: str | Path, *, min_batch: int | None = None,
          opt_batch: int | None = None, max_batch: int | None = None, workspace_mib: int = DEFAULT_WORKSPACE_MIB,
          timing_cache: str | Path | None = None, tf32: bool = False) -> dict[str, Any]:
    """Build ``onnx_path`` into a serialized engine at ``out_path``; returns its manifest fields.

    The timing cache file (default: :func:`default_timing_cache`) is loaded before and saved after
    the build, so later builds of similar networks skip the kernel timing they share; an unusable
    file gives one warning line and an empty cache. ``tf32``: let float32 layers use TF32 (recorded).
    """
    if not isinstance(workspace_mib, int) or workspace_mib < 1:
        raise UserError(f"--workspace-mib {workspace_mib} must be a positive number of MiB")
    trt = require_tensorrt()
    import torch

    facts = device_facts()
    onnx_path = Path(onnx_path)
    precision = tensorrt_precision(onnx_path)
    with torch.cuda.device(0):  # TensorRT builds on the current CUDA device: make it the one facts describe
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(_strongly_typed_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = first_line(errors[0]) if errors else "unknown error"
            raise UserError(f"TensorRT {trt.__version__} cannot parse {onnx_path} ({first}): re-export it "
                            f"with rexnet-deploy export")
        if network.num_inputs != 1:
            raise UserError(f"{onnx_path} has {network.num_inputs} inputs; a classifier ONNX has one image input")
        image = network.get_input(0)
        shapes = input_profile(tuple(image.shape), min_batch, opt_batch, max_batch)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        math = apply_math_flags(config, trt, tf32)
        profile = builder.create_optimization_profile()
        profile.set_shape(image.name, shapes["min"], shapes["opt"], shapes["max"])
        if config.add_optimization_profile(profile) < 0:
            raise UserError(f"TensorRT {trt.__version__} refused the profile {shapes['min']} / {shapes['opt']} / "
                            f"{shapes['max']} for {onnx_path}: fix --min-batch/--opt-batch/--max-batch")
        cache_path = Path(timing_cache) if timing_cache else default_timing_cache(facts)
        problem = attach_timing_cache(config, cache_path.read_bytes() if cache_path.is_file() else b"")
        if problem:
            print(f"rexnet-deploy: warning: timing cache {cache_path} is {problem}: building with an empty one, "
                  f"which replaces it", file=sys.stderr)

        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UserError(f"TensorRT {trt.__version__} could not build {onnx_path} as {precision} (see its log "
                            f"above): raise --workspace-mib or build the FP32 ONNX")
        with atomic_path(out_path) as tmp:
            tmp.write_bytes(memoryview(serialized))
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return {**engine_manifest_fields(onnx_path, facts, shapes, precision, workspace_mib, cache_path, math["tf32"]),
            "input_name": image.name}


def device_index(device: str) -> int:
    """The CUDA device index a runner device string names: ``cuda`` → 0, ``cuda:1`` → 1."""
    name, _, index = device.partition(":")
    if name != "cuda" or (index and not index.isdigit()):
        raise UserError(f"TensorRT engines run on a CUDA device (cuda or cuda:N), not {device!r}")
    return int(index or 0)


def open_runner(path: Path, device: str = "cuda", threads: int | None = None) -> "TensorRTRunner":
    return TensorRTRunner(path, device_index(device))


def profile_batch_bounds(engine_profile: Sequence[Sequence[int]] | None,
                         manifest_profile: dict[str, list] | None) -> tuple[int, int | None]:
    """(min, max) batch of the engine's profile 0: the engine's own, else the manifest's, else (1, None).

    ``engine_profile`` is ``engine.get_tensor_profile_shape(input, 0)`` (the min/opt/max shapes, in
    TensorRT 10 and 11): the engine is the authority, since a manifest can be edited, copied or old.
    None for the max means "unknown": nothing is split, and TensorRT's shape check has the last word.
    """
    for shapes in (engine_profile, [(manifest_profile or {}).get(k) for k in ("min", "opt", "max")]):
        try:
            low, _, high = (int(shape[0]) for shape in shapes)
        except (TypeError, ValueError, IndexError):
            continue
        if 1 <= low <= high:
            return low, high
    return 1, None


def execution_context(engine: Any, path: Path, max_batch: int | None) -> Any:
    """``engine.create_execution_context()``, or one line: it returns None when it cannot allocate.

    Its device memory is sized for the profile maximum, so a large profile on a small or busy GPU fails here.
    """
    context = engine.create_execution_context()
    if context is None:
        raise UserError(f"TensorRT could not create an execution context for {path} (not enough free GPU memory "
                        f"for its profile's max batch {max_batch}?): free GPU memory or rebuild with a smaller "
                        f"--max-batch")
    return context


def set_input_shape(context: Any, name: str, shape: tuple[int, ...], path: Path,
                    bounds: tuple[int, int | None]) -> None:
    """``context.set_input_shape``, checked: a refused shape (wrong image size) would leave -1 output dims."""
    if not context.set_input_shape(name, shape):
        raise UserError(f"{path} refused input shape {shape} (its profile takes batches {bounds[0]}–"
                        f"{bounds[1] or '?'} of the image size it was built for): pass images of that size, or "
                        f"rebuild from an ONNX of this size")


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT8: torch.int8,
             trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise UserError(f"engine I/O type {dtype} is not supported by this runner: rebuild from rexnet-deploy's ONNX")
    return table[dtype]


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, device_index: int = 0) -> None:
        self.path = require_file(engine_path, "engine", "build it with `rexnet-deploy build`")
        self.manifest = read_manifest(self.path)
        trt = require_tensorrt()
        import torch

        if not 0 <= device_index < torch.cuda.device_count():
            raise UserError(f"cuda:{device_index} is not a GPU here ({torch.cuda.device_count()} visible): pick one "
                            f"of cuda:0…cuda:{torch.cuda.device_count() - 1}")
        facts = device_facts(device_index)
        mismatch = engine_mismatch(self.manifest, facts)
        if mismatch:
            raise RuntimeUnavailable(mismatch)
        super().__init__(self.manifest.get("precision", "fp32"))
        self.facts = facts
        self.device = torch.device("cuda", device_index)
        self.logger = trt.Logger(trt.Logger.WARNING)
        # TensorRT deserializes onto, allocates on and enqueues to the *current* device, whatever
        # self.device says: every call that touches the engine runs with that device current
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise UserError(f"TensorRT could not deserialize {self.path} (truncated or foreign file): rebuild "
                                f"it with rexnet-deploy build")
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if len(inputs) != 1 or len(outputs) != 1:
                raise UserError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; a classifier "
                                f"engine has one of each")
            self.input_name, self.output_name = inputs[0], outputs[0]
            self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
            self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
            try:
                engine_profile = self.engine.get_tensor_profile_shape(self.input_name, 0)
            except (AttributeError, RuntimeError, TypeError):  # not an engine profile API: the manifest's
                engine_profile = None
            self.min_batch, self.max_batch = profile_batch_bounds(engine_profile, self.manifest.get("profile"))
            self.context = execution_context(self.engine, self.path, self.max_batch)
            # a stream of our own: enqueueV3 on the legacy default stream adds synchronisations
            self.stream = torch.cuda.Stream(device=self.device)

    @property
    def on_gpu(self) -> bool:
        return True

    def _enqueue(self, x):
        """One enqueue of a batch the profile takes, ordered after the caller's stream and before its later work."""
        import torch

        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        with torch.cuda.stream(self.stream):
            x = x.contiguous()
            set_input_shape(self.context, self.input_name, tuple(x.shape), self.path,
                            (self.min_batch, self.max_batch))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                              device=self.device)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise UserError(f"TensorRT failed to run {self.path} on a batch of {x.shape[0]}: see its log above")
        caller.wait_stream(self.stream)
        out.record_stream(caller)  # allocated on our stream, consumed on the caller's
        return out

    def infer_tensor(self, batch):
        """Logits for a CUDA tensor; asynchronous on the caller's stream (what GPU timing needs).

        A batch outside the profile is split into chunks of at most its max and a short chunk is
        padded up to its min (:func:`run_chunked`), so the time covers every enqueue it takes.
        """
        import torch

        with torch.cuda.device(self.device):
            return run_chunked(batch.to(self.device, self.input_dtype), self.min_batch, self.max_batch, self._enqueue)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.cuda.device(self.device):
            out = self.infer_tensor(x.to(self.device)).float().cpu()  # .cpu() waits for the copy on the caller's stream
        return out.numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), **self.facts, "device": str(self.device),
                "profile": self.manifest.get("profile"), "profile_batches": [self.min_batch, self.max_batch],
                "tf32": self.manifest.get("tf32")}
