"""What every runtime module provides, and the row type of the backend table.

A backend module (``backends/<runtime>.py``, as Polygraphy keeps ``backend/<rt>/``) owns everything
one runtime knows. It defines:

- ``unavailable_reason(device) -> str | None``: why it cannot run (or build) here, None when it can;
- ``open_runner(path, device, threads, **options) -> Runner``: its runner for one artifact file;
- ``side_files(path) -> list[Path]``: files that travel with the artifact (OpenVINO's ``.bin``, a cache);
- ``build(onnx_path, out_path, **options) -> dict`` and ``BUILD_OPTIONS`` where it builds its artifact
  from an ONNX file (the fields it returns go into the artifact's manifest);
- ``build_from_model(model, out_path, *, input_size, precision, calibration, **options) -> dict`` and
  ``BUILD_OPTIONS`` where it builds from the torch model instead (row ``builds_from="checkpoint"``, e.g.
  ExecuTorch); ``calibration`` is the calibration set's images for INT8, loaded by the caller;
- what either build returns: the artifact's manifest fields, always with :data:`BUILD_FIELDS` and, where the
  backend has something to say about the file (TensorRT's GPU and profile, ExecuTorch's delegation), ``note``:
  one line the ``build`` command prints and the bundle table shows (:func:`build_result` checks the shape);
- ``BUILD_OPTIONS``: a tuple of :class:`BuildOption`, every keyword its build takes beyond the paths.
  ``rexnet-deploy build`` makes each flag option of a backend that builds from ONNX a flag and passes it
  when given; a code option (``cli=False``: calibration arrays) is passed by the calling code only;
- ``INT8_LAYOUT``: the Q/DQ layout its INT8 files take, where it runs Q/DQ ONNX files.

Heavy libraries are imported inside those functions, so reading the table costs nothing.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import UserError

#: what a suite row names a file by, and what the backend takes: a torch checkpoint, an ONNX file run as
#: it is, or an engine (built from an ONNX file or from the torch model, see BUILD_SOURCES)
ROLES = ("checkpoint", "onnx", "engine")
#: what an engine is built from: an ONNX file of the bundle, or the torch model (checkpoint) the bundle exports
BUILD_SOURCES = ("onnx", "checkpoint")
#: the kinds of layer a per-layer profile sums time and MACs by, whatever the runtime calls its layers
LAYER_KINDS = ("depthwise conv", "1×1 conv", "k×k conv (stem)", "activations (SiLU, sigmoid, ReLU6)",
               "pooling (SE, head)", "pad + add (partial residual)", "quantize / dequantize", "layout changes",
               "classifier", "other")

#: the fields every build returns (``build``, ``build_from_model``): what the build command, the bundle and the
#: runners read alike; ``note`` (a string) is optional
BUILD_FIELDS = ("kind", "backend", "precision")


def build_result(backend: str, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as a backend's build returned them, checked for the shape every reader expects."""
    missing = [k for k in BUILD_FIELDS if k not in fields]
    if missing or not isinstance(fields.get("note", ""), str):
        raise TypeError(f"the {backend} build returned {sorted(fields)}: a build returns {', '.join(BUILD_FIELDS)} "
                        f"and optionally a note string (backends/base.py)")
    return fields


@dataclass(frozen=True)
class TargetLayout:
    """How one runtime wants its Q/DQ: activation/weight types and which ranges are symmetric."""

    name: str
    activations: str  # "uint8" | "int8"
    symmetric_activations: bool
    quantize_bias: bool
    why: str

    def quantize_options(self) -> dict[str, Any]:
        """``onnxruntime.quantization.quantize_static`` keyword arguments for this layout."""
        from onnxruntime.quantization import QuantType

        act = QuantType.QUInt8 if self.activations == "uint8" else QuantType.QInt8
        return {"activation_type": act, "weight_type": QuantType.QInt8, "per_channel": True, "reduce_range": False,
                "extra_options": {"ActivationSymmetric": self.symmetric_activations, "WeightSymmetric": True,
                                  "QuantizeBias": self.quantize_bias}}

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.name, "activations": f"{self.activations} "
                f"{'symmetric' if self.symmetric_activations else 'asymmetric'} per-tensor",
                "weights": "int8 symmetric per-channel", "bias": "int32" if self.quantize_bias else "float32",
                "format": "QDQ", "why": self.why}


@dataclass(frozen=True)
class BuildOption:
    """One keyword a backend's build takes, declared once in its module's ``BUILD_OPTIONS``.

    A flag option (``cli`` True) is what ``rexnet-deploy build`` offers as ``--<name with dashes>``: the command
    makes the flag from this spec and passes the value only when the flag is given. A code option (``cli``
    False) is a value only a caller has (calibration images, a validation set): no flag, passed by code.
    """

    name: str  # the build's keyword
    help: str  # what it does, without the default (the flag's help adds it)
    default: Any = None  # what the build does without it, as a user reads it ("1", "off")
    type: Callable[[str], Any] | None = None  # how a flag's text is parsed; bool: a switch (given: True)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def flag_help(self) -> str:
        """The flag's help: what it does and what happens without it."""
        return f"{self.help} (default: {self.default})"


@dataclass(frozen=True)
class Backend:
    """One row of the backend table (like Ultralytics' ``export_formats()``)."""

    name: str  # what tables, manifests and ``--backend`` call it
    module: str  # the module that implements it, imported on first use
    role: str  # one of ROLES
    suffixes: tuple[str, ...]  # files it runs; the first is what it writes
    devices: tuple[str, ...]  # where it runs; the first is the default
    precisions: tuple[str, ...]
    needs_gpu: bool
    extra: str | None  # pip extra that installs it (None: a core dependency)
    packages: tuple[str, ...]  # distributions whose versions go into manifests
    row_tag: str  # short prefix of its rows in the pipeline's table ("ort-int8")
    file_tag: str = ""  # inserted before the suffix of a file it builds: model.fp16.openvino.xml
    int8_layout: str | None = None  # the Q/DQ layout (a TargetLayout name) its INT8 files take
    builds_from: str = "onnx"  # an engine's source, one of BUILD_SOURCES: an ONNX file or the torch model
    # the INT8 it quantizes itself from the FP32 ONNX on the calibration set (its build takes precision="int8"
    # and calibration images), named in the file's variant: int8-<own_int8>. OpenVINO: NNCF
    own_int8: str | None = None
    # the pip distribution an application installs to run its files without rexnet-deploy (the bundle kit's
    # README); None: the kit does not run them
    kit_package: str | None = None

    @property
    def builds_from_onnx(self) -> bool:
        return self.role == "engine" and self.builds_from == "onnx"

    @property
    def builds_from_checkpoint(self) -> bool:
        """An engine exported from the torch model itself (its module has ``build_from_model``), not from ONNX."""
        return self.role == "engine" and self.builds_from == "checkpoint"

    def impl(self) -> ModuleType:
        return importlib.import_module(self.module)

    def build_options(self) -> tuple[BuildOption, ...]:
        """What its build takes beyond the paths (its module's ``BUILD_OPTIONS``; none for a runner only)."""
        return tuple(getattr(self.impl(), "BUILD_OPTIONS", ()))

    def runner_modes(self) -> dict[str, str | None]:
        """Its runner's modes (``RUNNER_MODES``): mode → the precision it computes in, None for settings only."""
        return dict(getattr(self.impl(), "RUNNER_MODES", {}))

    def own_int8_modes(self) -> dict[str, str]:
        """The runner modes that also apply to its own INT8 files (``OWN_INT8_MODES``): mode → the precision
        the parts left in float compute in."""
        return dict(getattr(self.impl(), "OWN_INT8_MODES", {})) if self.own_int8 else {}

    def own_int8_variants(self) -> dict[str, str]:
        """Its own INT8 files by variant (``int8-nncf``, ``int8-nncf-pointwise``) → the scope each is quantized in
        (its module's ``INT8_SCOPES``; the first, the default, names the unsuffixed variant); {} without own INT8."""
        if not self.own_int8:
            return {}
        scopes = list(getattr(self.impl(), "INT8_SCOPES", {"all": ""}))
        return {f"int8-{self.own_int8}" + (f"-{scope}" if i else ""): scope for i, scope in enumerate(scopes)}

    def unavailable_reason(self, device: str | None = None) -> str | None:
        return self.impl().unavailable_reason(device or self.devices[0])

    def default_path(self, onnx_path: str | Path) -> Path:
        """Where a file built from ``onnx_path`` goes: ``model.fp16.onnx`` → ``model.fp16<file_tag><suffix>``."""
        onnx_path = Path(onnx_path)
        return onnx_path.with_name(onnx_path.stem + self.file_tag + self.suffixes[0])

    def device_for(self, requested: str) -> str:
        """The device a row asked to run on ``requested`` uses: that one, else the GPU for any GPU request."""
        if requested in self.devices:
            return requested
        if requested != "cpu" and "cuda" in self.devices:
            return "cuda"
        return self.devices[0]


class Runner(abc.ABC):
    """Runs one artifact on normalised float32 NCHW numpy batches. Use as a context manager or call close()."""

    #: the backend's name in the table
    backend: str = ""

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision
        self.meta: dict[str, Any] = {}  # what the artifact records: a checkpoint's metadata or its manifest

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for one batch (float32 NCHW in, float32 [N, classes] out)."""

    def infer_tensor(self, batch: Any) -> Any:
        """Logits for a tensor already on the runner's device; GPU runners override it (what GPU timing needs)."""
        raise NotImplementedError(f"{type(self).__name__} takes numpy batches only")

    def submit(self, batch: np.ndarray) -> None:
        """Start inference of one batch for throughput timing, its logits unread; the caller keeps ``batch``
        unchanged until :meth:`wait_all`.

        A runner with an asynchronous queue (OpenVINO's ``AsyncInferQueue``) returns as soon as a request is
        free, so several batches are in flight, as the runtime's own benchmark runs them; this default runs the
        batch to completion (one request).
        """
        self.infer(batch)

    def wait_all(self) -> None:
        """Wait until every batch :meth:`submit` started has finished (nothing to wait for by default)."""

    def requests_in_flight(self, batch_size: int) -> int:
        """How many batches :meth:`submit` keeps in flight at once at this batch size (1: each runs to completion)."""
        return 1

    @property
    def on_gpu(self) -> bool:
        """True when inputs can stay on a CUDA device between steps (``infer_tensor`` works)."""
        return False

    def profile_layers(self, batch: int, runs: int, warmup: int = 5) -> list[dict[str, Any]]:
        """Time of each layer the runtime runs, at one ``batch`` size: runners with a per-layer profiler override it.

        Each record: ``name``, ``layer_type`` and ``kernel`` (the runtime's words), ``kind`` (one of
        ``LAYER_KINDS``), ``precision`` (what the kernel computed in: fp32, bf16, fp16, int8 or other) and
        ``ms`` (mean of ``runs``); optionally ``macs_per_image`` (a convolution's or the classifier's, where the
        runtime can tell): ``bench/profile.py`` sums the records by kind and reads nothing else.
        """
        raise UserError(f"{self.backend} has no per-layer profiler in rexnet-deploy: profile the ONNX file instead")

    def release(self) -> None:
        """Drop what was built for the batch sizes run so far (compiled models and their requests); the next call
        builds what it needs again. A bench keeps every row of a group open at once, so each holds only the batch
        size being timed (a runner that builds nothing per batch size holds nothing to drop)."""

    def close(self) -> None:
        """Free the runtime's resources."""

    def describe(self) -> dict:
        """Facts recorded beside results (provider, threads, device)."""
        return {"backend": self.backend, "precision": self.precision}

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
