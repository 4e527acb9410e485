"""ExecuTorch with the XNNPACK delegate: ``.pte`` programs built from the torch model (not from ONNX), and their runner.

ExecuTorch is PyTorch's runtime for phones and ARM boards; XNNPACK is its CPU delegate. A program is
made by ``torch.export`` → ``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` →
``to_executorch()``. INT8 is PT2E static quantization with the XNNPACK quantizer (int8 weights
symmetric per channel, int8 activations per tensor) calibrated on the images the caller gives (the
bundle passes the same calibration set file the ONNX INT8 files use). The squeeze-excite modules stay
in float: ReXNet's SE ends in a sigmoid gate that multiplies every activation, and the INT8 advice for
depthwise + SE + SiLU networks (shared/reference/DEPLOY.md, anchors §6) is to keep sigmoid/SE paths out
of INT8; they are 1×1 convolutions on a pooled [N, C, 1, 1] tensor, so keeping them float costs
almost nothing.

The batch dimension is dynamic (1…``max_batch``, memory planned for the maximum) where torch.export
and the lowering keep it so; otherwise the program takes the deploy batch only, and the manifest says
which and why. The manifest also records how many graph nodes XNNPACK took and which ops it left to
ExecuTorch's portable kernels.

``executorch`` is imported lazily (the ``[executorch]`` extra); its import loads the whole compiler
(``executorch.exir``), so availability is told from the installed package without importing it.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..artifacts import atomic_path, read_manifest_if_any
from ..errors import RuntimeUnavailable, UserError, first_line, require_file
from .base import BuildOption, Runner
from .common import run_chunked

PRECISIONS = ("fp32", "int8")
#: the largest batch a dynamic 32×32 program takes: evaluation's batch and the largest bench batch
DEFAULT_MAX_BATCH = 256
#: ExecuTorch plans activation memory for the largest batch, and it grows with the image area: a ReXNet
#: w=0.25 at 32×32 planned for 256 touched 48 MB on its first run. So the default maximum keeps the planned
#: input at most 256 images of 32×32 pixels (a 224×224 model gets 5; larger batches are split).
MAX_PLANNED_PIXELS = DEFAULT_MAX_BATCH * 32 * 32
#: the batch a program takes when its batch cannot be dynamic (the bench's headline batch)
DEFAULT_STATIC_BATCH = 64
CALIBRATION_BATCH = 64
#: what build_from_model takes beyond the model, its precision and calibration: code options (the bundle builds
#: ExecuTorch programs from the torch model; no command offers a flag for them)
BUILD_OPTIONS = (
    BuildOption("max_batch", "largest batch of a dynamic-batch program",
                f"{DEFAULT_MAX_BATCH} at 32×32, fewer for larger images", cli=False),
    BuildOption("static_batch", "the batch of a program whose batch could not stay dynamic",
                f"{DEFAULT_STATIC_BATCH}, or max_batch when smaller", cli=False),
)
DELEGATE = "XnnpackBackend"  # the name ExecuTorch's runtime registers XNNPACK under
METHOD = "forward"
_FLOAT32 = 6  # ExecuTorch's ScalarType::Float, what TensorInfo.dtype() returns for a float32 tensor
_INSTALL = "pip install 'rexnet-deploy[executorch]'"
_ENGINES_FLAG = "--engines executorch"
_FIX = f"re-export it with `rexnet-deploy export {_ENGINES_FLAG}`"


def unavailable_reason(device: str = "cpu") -> str | None:
    # find_spec, not import: importing executorch loads its compiler (seconds), and every export asks this
    try:
        found = importlib.util.find_spec("executorch.runtime") is not None
    except (ImportError, ValueError) as exc:
        return f"ExecuTorch is not installed ({first_line(exc, 100)}): {_INSTALL}"
    if not found:
        return f"ExecuTorch is not installed (no module named 'executorch.runtime'): {_INSTALL}"
    return None


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Silence what importing ExecuTorch prints on every start and the user cannot act on.

    Its pybindings warn that the Python API is experimental, and torchao 0.18 registers an Enum as a pytree
    constant, which torch 2.14 logs as deprecated (a warning for torchao's authors, not for a user).
    """
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This API is experimental")
            yield
    finally:
        pytree_log.setLevel(level)


def _runtime() -> Any:
    """ExecuTorch's ``Runtime`` singleton, or :class:`RuntimeUnavailable` with the install line."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeUnavailable(reason)
    try:
        with _quiet_import():
            from executorch.runtime import Runtime
    except ImportError as exc:  # installed, but its native module or a dependency does not load
        raise RuntimeUnavailable(f"ExecuTorch does not load here ({first_line(exc, 120)}): reinstall it "
                                 f"({_INSTALL})") from None
    return Runtime.get()


#: what ExecuTorch's runtime logs that nobody can act on: cpuinfo's probing of /sys files on the first use of the
#: thread pool (five lines), the pool's "Resetting threadpool to N threads"
_CHATTER = re.compile(r"cpuinfo|threadpool", re.IGNORECASE)


@contextlib.contextmanager
def _fd2_into(file: IO[bytes]) -> Iterator[None]:
    """File descriptor 2 points at ``file`` while the block runs: native code writes there, not to ``sys.stderr``."""
    try:
        saved = os.dup(2)
    except OSError:  # a process without fd 2: nothing reaches a terminal anyway
        yield
        return
    sys.__stderr__.flush()  # what Python wrote before goes out first, not into the file
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _runtime_log() -> Iterator[Callable[[], list[str]]]:
    """Keep ExecuTorch's runtime log out of the terminal while the block runs; yields ``said()``, its lines so far.

    Its loader explains a refused file only in its log ("Program identifier 'ageg' != expected 'ET12'") while
    Python gets "error: 0x23": the block puts that line into its one-line error. The pybindings write the C++
    runtime's log through Python's ``sys.stderr`` and native libraries (cpuinfo) write to file descriptor 2, so both
    are caught. Chatter is dropped; when the block ends without an error, every other line is written to stderr
    after all, so a real warning still reaches the user.
    """
    python_side = io.StringIO()
    with tempfile.TemporaryFile() as native:
        def said() -> list[str]:
            # pread: fd 2 shares the file's offset, which must stay where the runtime writes next
            size = os.fstat(native.fileno()).st_size
            text = python_side.getvalue() + os.pread(native.fileno(), size, 0).decode(errors="replace")
            return [line.strip() for line in text.splitlines() if line.strip() and not _CHATTER.search(line)]

        with contextlib.redirect_stderr(python_side), _fd2_into(native):
            yield said
        for line in said():
            print(line, file=sys.stderr)


def _runtime_said(lines: list[str]) -> str:
    """The runtime's own explanation: its last log line without the ``[file.cpp:123]`` prefix."""
    if not lines:
        return ""
    text = lines[-1]
    if text.startswith("[") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return f"; the runtime says: {text[:160]}"


def side_files(path: Path) -> list[Path]:
    return []


def open_runner(path: Path, device: str = "cpu", threads: int | None = None) -> "ExecuTorchRunner":
    return ExecuTorchRunner(path, threads=threads)


# ---------------------------------------------------------------- building


def _versions() -> dict[str, str]:
    found = {}
    for name in ("executorch", "torchao"):
        try:
            found[f"{name}_version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _se_module_types(model: Any) -> list[type]:
    """The squeeze-excite module classes in ``model`` (kept float in INT8); ReXNet's, found by class name so a
    pruned or reloaded model of the zoo is matched too."""
    return list(dict.fromkeys(type(m) for m in model.modules() if type(m).__name__ == "SqueezeExcite"))


def default_max_batch(input_size: tuple[int, int, int]) -> int:
    """The largest batch a program of ``input_size`` images is planned for (see :data:`MAX_PLANNED_PIXELS`)."""
    return max(2, min(DEFAULT_MAX_BATCH, MAX_PLANNED_PIXELS // (input_size[1] * input_size[2])))


def _dynamic_shapes(max_batch: int) -> tuple[dict[int, Any]]:
    import torch

    return ({0: torch.export.Dim("batch", min=1, max=max_batch)},)


@contextlib.contextmanager
def _size_oblivious() -> Iterator[None]:
    """Keep the batch range torch.export was given through the lowering.

    Re-running convolutions on fake tensors (torch's conv backend choice asks ``batch >= 16``) would otherwise
    guard on the example batch and narrow the range, and ExecuTorch then plans memory for batch ≤ 15 only:
    measured with executorch 1.5.1 and torch 2.14.1, a program exported for 1…256 refused batch 16.
    Size-oblivious reasoning answers such questions without guarding.
    """
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(backed_size_oblivious=True):
        yield


@contextlib.contextmanager
def _two_threads_at_least() -> Iterator[None]:
    """Trace with at least two torch threads.

    ATen chooses its CPU convolution kernel by, among others, ``batch >= 16 or threads > 1``; with one thread
    torch.export guards on the example batch there and narrows the range (measured with executorch 1.5.1 and
    torch 2.14.1: exported under ``torch.set_num_threads(1)``, a program for 1…256 was planned for batch ≤ 15).
    """
    import torch

    before = torch.get_num_threads()
    if before < 2:
        torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quantize(module: Any, example: Any, dynamic: Any, calibration: Any, batch: int | None) -> tuple[Any, dict]:
    """PT2E INT8 of an eval-mode module: XNNPACK's quantizer, SE modules float, observers fed ``calibration``.

    ``batch``: the static batch the export takes (calibration goes in chunks of exactly that many, the last
    topped up with the first images), or None for a dynamic export.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    float_types = _se_module_types(module)
    for se_type in float_types:
        quantizer.set_module_type(se_type, None)  # None: no annotation, the module runs in float
    exported = torch.export.export(module, (example,), dynamic_shapes=dynamic)
    prepared = prepare_pt2e(exported.module(), quantizer)
    step = batch or CALIBRATION_BATCH
    with torch.no_grad():
        for start in range(0, len(calibration), step):
            chunk = calibration[start:start + step]
            if batch and len(chunk) < batch:
                chunk = torch.cat([chunk, calibration[:batch - len(chunk)]])
            prepared(chunk)
    converted = convert_pt2e(prepared)
    return converted, {
        "method": "PT2E static post-training quantization, XNNPACKQuantizer",
        "weights": "int8 symmetric per-channel", "activations": "int8 asymmetric per-tensor (histogram observer)",
        "calibration_images": len(calibration),
        "float_modules": [t.__name__ for t in float_types],
        "why_float": "the squeeze-excite sigmoid gate scales every activation; INT8 advice for depthwise + SE "
                     "networks keeps sigmoid/SE paths out of INT8 (their 1×1 convolutions run on a pooled "
                     "[N, C, 1, 1] tensor, so float costs almost nothing)" if float_types else None,
    }


def _delegation(graph_module: Any) -> dict[str, Any]:
    """How many nodes of the lowered graph XNNPACK took, and which ops it left to ExecuTorch's own kernels."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op = {op: {"delegated": b.delegated, "not_delegated": b.non_delegated}
             for op, b in sorted(info.delegation_by_operator.items())}
    return {"delegate": DELEGATE, "subgraphs": info.num_delegated_subgraphs,
            "delegated_nodes": info.num_delegated_nodes, "not_delegated_nodes": info.num_non_delegated_nodes,
            # what runs outside XNNPACK, by op; getitem (unpacking a delegate's outputs) and sym_size (reading
            # the dynamic batch size) are bookkeeping, not kernels
            "not_delegated": {op: b["not_delegated"] for op, b in by_op.items() if b["not_delegated"]},
            "by_op": by_op}


def _lower(module: Any, example: Any, dynamic: Any) -> tuple[bytes, dict[str, Any]]:
    """``module`` exported, lowered to XNNPACK and serialised: the program's bytes and its delegation facts."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    # the export itself stays outside: exported under size-oblivious reasoning, the program again came out
    # planned for batch ≤ 15 (executorch 1.5.1, torch 2.14.1)
    exported = torch.export.export(module, (example,), dynamic_shapes=dynamic)
    with _size_oblivious():
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        delegation = _delegation(edge.exported_program().graph_module)
        program = edge.to_executorch()  # fake-runs the delegated graph once more: inside the same patch
    return bytes(program.buffer), delegation


def _planned_input(runtime: Any, buffer: bytes) -> tuple[int, ...]:
    """The input shape a serialised program planned memory for (its batch upper bound first)."""
    with _runtime_log():
        return tuple(runtime.load_program(buffer).metadata(METHOD).input_tensor_meta(0).sizes())


def build_from_model(model: Any, out_path: str | Path, *, input_size: tuple[int, int, int], precision: str = "fp32",
                     calibration: Any = None, max_batch: int | None = None,
                     static_batch: int | None = None) -> dict[str, Any]:
    """Export the eval-mode torch ``model`` to an ExecuTorch XNNPACK program at ``out_path`` (.pte).

    ``precision``: fp32, or int8 with ``calibration`` (float32 [N, 3, H, W] normalised images, numpy or a
    tensor; the caller loads them from the calibration set file). The batch is dynamic up to ``max_batch``
    (default :func:`default_max_batch`) when export and lowering keep it so, else ``static_batch`` (default
    the deploy batch, 64, or ``max_batch`` when that is smaller).
    Returns the manifest fields; the caller writes the manifest and checks parity.
    """
    runtime = _runtime()
    import torch

    if precision not in PRECISIONS:
        raise UserError(f"ExecuTorch programs are built in {' or '.join(PRECISIONS)}, not {precision!r}")
    max_batch = default_max_batch(input_size) if max_batch is None else max_batch
    static_batch = min(DEFAULT_STATIC_BATCH, max_batch) if static_batch is None else static_batch
    if max_batch < 2 or static_batch < 1:  # a dynamic dimension of at most 1 is no dynamic dimension
        raise UserError(f"max_batch ({max_batch}) must be at least 2 and static_batch ({static_batch}) at least 1")
    out_path = Path(out_path)
    if out_path.suffix != ".pte":
        raise UserError(f"{out_path}: an ExecuTorch program is written as *.pte; rename it")
    images = None
    if precision == "int8":
        if calibration is None or len(calibration) == 0:
            raise UserError("an INT8 ExecuTorch program needs calibration images: pass the calibration set's images")
        images = torch.as_tensor(np.asarray(calibration, dtype=np.float32))
        if tuple(images.shape[1:]) != tuple(input_size):
            raise UserError(f"calibration images are {tuple(images.shape[1:])}, the model takes {tuple(input_size)}: "
                            f"build a calibration set from the model's dataset")
    module = copy.deepcopy(model).eval().cpu()  # eval()/cpu() act in place: the caller's model stays as it was
    fields: dict[str, Any] = {}
    attempts = [("dynamic", max_batch), ("static", static_batch)]
    why_static = None
    for mode, batch in attempts:
        dynamic = _dynamic_shapes(batch) if mode == "dynamic" else None
        # the example batch: 2, not 1, since torch.export specialises a dimension whose example size is 1
        example = torch.zeros(2 if mode == "dynamic" else batch, *input_size)
        try:
            with torch.no_grad(), _two_threads_at_least():
                graph = module
                if images is not None:
                    graph, fields["quantization"] = _quantize(module, example, dynamic, images,
                                                              None if mode == "dynamic" else batch)
                buffer, delegation = _lower(graph, example, dynamic)
            planned = _planned_input(runtime, buffer)
        except Exception as exc:  # torch.export and the lowering raise many types (a guard, an unsupported op)
            if mode == "static":
                raise UserError(f"ExecuTorch could not export {type(model).__name__} ({type(exc).__name__}: "
                                f"{first_line(exc)}){f'; with a dynamic batch: {why_static}' if why_static else ''}"
                                f": report it with the checkpoint") from None
            why_static = f"{type(exc).__name__}: {first_line(exc)}"
            continue
        if mode == "dynamic" and planned[0] != max_batch:
            why_static = f"the lowered program planned memory for batch ≤ {planned[0]}, not {max_batch}"
            continue
        break
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(buffer)
    batch_fields = ({"dynamic": True, "min": 1, "max": max_batch} if mode == "dynamic" else
                    {"dynamic": False, "size": static_batch, "why": f"no dynamic batch: {why_static}"})
    return {
        "kind": "engine", "backend": "executorch", "precision": precision, "built_from": "checkpoint",
        "delegate": DELEGATE, "method": METHOD, "batch": batch_fields,
        "input_shape": [-1 if mode == "dynamic" else static_batch, *input_size],
        "delegation": delegation, **fields, **_versions(), "note": delegation_note(delegation, batch_fields),
    }


def delegation_note(delegation: dict[str, Any], batch: dict[str, Any]) -> str:
    """What the bundle table says about a program: the nodes XNNPACK took, the ops left outside it, its batch."""
    total = delegation["delegated_nodes"] + delegation["not_delegated_nodes"]
    outside = ", ".join(f"{op} ×{n}" for op, n in delegation["not_delegated"].items()) or "none"
    note = f"{delegation['delegate']} took {delegation['delegated_nodes']} of {total} nodes (outside: {outside})"
    return note + f", batch {'1–' + str(batch['max']) if batch['dynamic'] else str(batch['size']) + ' only'}"


# ---------------------------------------------------------------- running


def _describe_shape(sizes: tuple[int, ...], dynamic: bool) -> str:
    return "[" + ", ".join(["N" if dynamic and i == 0 else str(s) for i, s in enumerate(sizes)]) + "]"


# The XNNPACK delegate binds a loaded method to ExecuTorch's (process-wide) thread pool: resizing the pool after
# any method was loaded left XNNPACK with a freed pool ("XNN Runtime invoke failed with code:
# xnn_status_invalid_state", then a segfault; executorch 1.5.1). So the pool is sized only before the first load.
_METHOD_LOADED = False


def _size_thread_pool(threads: int) -> None:
    """Resize ExecuTorch's thread pool to ``threads`` while no method holds it; later requests keep its size
    (the runner records both the requested and the real count)."""
    from executorch.extension.pybindings import portable_lib

    if _METHOD_LOADED:
        return
    # the first look at the pool runs cpuinfo, which logs its probing of /sys files (5 lines nobody can act on);
    # resetting logs "Resetting threadpool to N threads"
    with _runtime_log():
        if int(portable_lib._threadpool_get_thread_count()) != threads:
            portable_lib._unsafe_reset_threadpool(threads)


class ExecuTorchRunner(Runner):
    """Runs a ``.pte`` program's ``forward`` in ExecuTorch's Python runtime (XNNPACK kernels on the CPU).

    The program is checked when it opens: it must load, have a ``forward`` that takes one float32
    [N, 3, H, W] tensor and returns one [N, classes] tensor, and (with a manifest) take the model's input
    size. A batch larger than the program's planned batch is split; a static program gets smaller
    batches padded. ``threads`` sizes ExecuTorch's (process-wide) thread pool, which XNNPACK runs on, when no
    program was loaded in this process before (see :func:`_size_thread_pool`).
    """

    backend = "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        runtime = _runtime()
        self.path = require_file(path, "ExecuTorch program", f"build one with `rexnet-deploy export {_ENGINES_FLAG}`")
        if not runtime.backend_registry.is_available(DELEGATE):
            raise RuntimeUnavailable(f"this ExecuTorch build has no {DELEGATE} (it has "
                                     f"{', '.join(runtime.backend_registry.registered_backend_names) or 'none'}): "
                                     f"{_INSTALL}")
        manifest = read_manifest_if_any(self.path)
        super().__init__(manifest.get("precision") or "unknown")  # a foreign .pte does not say
        self.meta = manifest
        with _runtime_log() as said:
            try:
                program = runtime.load_program(self.path)
            except Exception as exc:  # the pybindings raise RuntimeError("Failed to load program, error: 0x23")
                raise UserError(f"{self.path} is not an ExecuTorch program ({first_line(exc)}"
                                f"{_runtime_said(said())}): {_FIX}") from None
        if METHOD not in program.method_names:
            raise UserError(f"{self.path} has no {METHOD!r} method (it has {', '.join(sorted(program.method_names))}):"
                            f" {_FIX}")
        self.sizes = self._check_signature(program.metadata(METHOD), manifest)
        batch = manifest.get("batch") or {}
        self.dynamic = bool(batch.get("dynamic"))
        # without a manifest the planned batch is taken as static: padding is right for both kinds
        self.min_batch = 1 if self.dynamic else self.sizes[0]
        self.max_batch = self.sizes[0]
        self.threads_requested = int(threads) if threads else None
        if threads:
            _size_thread_pool(int(threads))
        with _runtime_log() as said:
            try:
                self.method = program.load_method(METHOD)
            except Exception as exc:  # an op or delegate this runtime lacks
                raise UserError(f"{self.path} cannot be loaded by this ExecuTorch ({first_line(exc)}"
                                f"{_runtime_said(said())}): {_FIX}") from None
            self.threads = self._thread_count()  # the pool's first use, where no load made one, runs cpuinfo
        global _METHOD_LOADED
        _METHOD_LOADED = True
        self.program = program

    def _check_signature(self, meta: Any, manifest: dict[str, Any]) -> tuple[int, ...]:
        """The program's planned input shape, or one line saying why it does not take an image batch."""
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            raise UserError(f"{self.path}: its {METHOD} takes {meta.num_inputs()} inputs and returns "
                            f"{meta.num_outputs()} outputs; a classifier takes one image batch and returns its "
                            f"logits: {_FIX}")
        tensor = meta.input_tensor_meta(0)
        sizes = tuple(tensor.sizes())
        if tensor.dtype() != _FLOAT32 or len(sizes) != 4 or sizes[1] != 3:
            raise UserError(f"{self.path}: its {METHOD} takes a {_describe_shape(sizes, False)} tensor of "
                            f"ExecuTorch dtype {tensor.dtype()}, not a float32 [N, 3, H, W] image batch: {_FIX}")
        if len(tuple(meta.output_tensor_meta(0).sizes())) != 2:
            raise UserError(f"{self.path}: its {METHOD} returns a {len(meta.output_tensor_meta(0).sizes())}-d "
                            f"tensor, not [N, classes] logits: {_FIX}")
        recorded = manifest.get("input_size")
        if recorded and list(sizes[1:]) != list(recorded):
            raise UserError(f"{self.path}: its {METHOD} takes {list(sizes[1:])} images but its manifest says the "
                            f"model takes {list(recorded)}: {_FIX}")
        return sizes

    @staticmethod
    def _thread_count() -> int | None:
        try:
            from executorch.extension.pybindings import portable_lib

            return int(portable_lib._threadpool_get_thread_count())
        except (ImportError, AttributeError):  # a build without the thread-pool bindings
            return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if tuple(batch.shape[1:]) != self.sizes[1:]:
            raise UserError(f"{self.path} takes {_describe_shape(self.sizes, True)} inputs, not "
                            f"{list(batch.shape)}: bench it on the dataset it was exported for (--dataset)")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        out = run_chunked(x, self.min_batch, self.max_batch, lambda part: self.method.execute((part,))[0])
        return out.numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        self.method = None
        self.program = None

    def describe(self) -> dict:
        # one request: a Method runs one batch at a time on the process-wide pool XNNPACK is bound to
        return {**super().describe(), "path": str(self.path), "device": "CPU", "delegate": DELEGATE, "requests": 1,
                "threads": self.threads, "threads_requested": self.threads_requested,
                "batch": {"dynamic": self.dynamic, "min": self.min_batch, "max": self.max_batch}, **_versions()}
