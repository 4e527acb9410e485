"""Build an engine from an ONNX file with any backend of the table, checked against ONNX Runtime, written atomically."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ensure_writable_dir, write_manifest
from ..backends import RuntimeUnavailable, build_result, builders, get_backend, open_runner, read_artifact
from ..errors import UserError
from ..export.parity import compare_logits, require_parity


def builder(name: str):
    """The table row of an engine backend, or one line naming the ones that build from ONNX."""
    backend = get_backend(name)
    if not backend.builds_from_onnx:
        raise UserError(f"{name} runs files as they are and builds nothing: choose "
                        f"{' or '.join(b.name for b in builders())}")
    return backend


#: why INT8 of random weights is not held to parity: a fresh ReXNet's logits are all but constant (about 1e-9 for
#: rexnet_100, every input the same class), so a quantized file's agreement with them means nothing
UNTRAINED_INT8_PARITY = ("random weights: their logits are all but constant, so an INT8 file's agreement with them "
                         "means nothing; recorded, not required (a speed-only file)")


def judge_parity(parity: dict, what: str | Path, fix: str, *, untrained: bool) -> dict:
    """``require_parity`` (one line and exit 1 when it failed), except for INT8 made from random weights (a speed
    study's, ``--untrained-int8``): recorded with ``required: false`` and why."""
    if untrained and parity.get("precision") == "int8":
        return {**parity, "required": False, "why_not_required": UNTRAINED_INT8_PARITY}
    return require_parity(parity, what, fix)


def engine_parity(engine_path: Path, onnx_path: Path, images: np.ndarray, precision: str) -> dict:
    """The engine's logits vs ONNX Runtime (CPU) on the ONNX it was built from."""
    with open_runner(onnx_path) as reference_runner:
        reference = reference_runner.infer(images)
    with open_runner(engine_path) as runner:
        candidate = runner.infer(images)
    return {**compare_logits(reference, candidate, precision), "reference": onnx_path.name,
            "runtime": runner.backend}


def _check_request(onnx_path: Path, out_path: Path, backend, options: dict[str, Any]) -> None:
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise UserError(f"{onnx_path} is not an ONNX file: pass one written by rexnet-deploy export")
    if out_path.suffix not in backend.suffixes:
        raise UserError(f"{out_path}: a {backend.name} engine is written as *{backend.suffixes[0]}; rename --out")
    taken = {option.name for option in backend.build_options()}
    unknown = [k for k in options if k not in taken]
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        takers = [b.name for b in builders() if unknown[0] in {option.name for option in b.build_options()}]
        raise UserError(f"{flags} apply to {' and '.join(takers) or 'no'} builds only, not {backend.name}: drop them")
    reason = backend.unavailable_reason()
    if reason:  # fail in one line before touching the output folder
        raise RuntimeUnavailable(reason)


def _move_into_place(staging: Path, folder: Path) -> None:
    """Every staged file into ``folder``, the manifest last (its presence means the engine is complete)."""
    manifests = {p for p in staging.iterdir() if p.name.endswith(".json")}
    for item in sorted(staging.iterdir(), key=lambda p: p in manifests):
        target = folder / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)


def build_engine(onnx_path: str | Path, out_path: str | Path | None, backend: str, *,
                 images: np.ndarray | None = None, parity_source: str | None = None, progress: bool = True,
                 **options: Any) -> Path:
    """Build ``onnx_path`` into an engine for ``backend``; returns the engine path (manifest beside it).

    ``out_path`` None: beside the ONNX, named by the backend's table row.

    With ``images`` the engine's output is compared with ONNX Runtime's before anything is put in
    place, and a failed comparison raises :class:`CheckFailed` (INT8 of random weights: recorded, not required,
    :func:`judge_parity`). The engine, its side files and its
    manifest are staged in a temporary folder beside ``out_path`` and moved in manifest-last.
    ``options``: keywords the backend's ``BUILD_OPTIONS`` name (TensorRT: batch profile, workspace, timing
    cache); one it does not name is refused in one line.
    ``progress`` False keeps the progress bars a backend's own tool draws on stdout (NNCF's) out of the output.
    """
    spec = builder(backend)
    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else spec.default_path(onnx_path)
    _check_request(onnx_path, out_path, spec, options)
    ensure_writable_dir(out_path.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    try:
        staged = staging / out_path.name
        # NNCF draws its bars with rich on whatever sys.stdout is when it draws; its log lines keep their own stream
        with contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO()):
            fields = build_result(spec.name, spec.impl().build(onnx_path, staged, **options))
        if read_artifact(onnx_path, "onnx").untrained:  # random weights: every file made from them says so
            fields["untrained"] = True
        write_manifest(staged, fields)  # runners check it before loading
        if images is not None:
            # a TF32 build of an FP32 file is judged by TF32's own tolerance, not FP32's 1e-4
            limit = "tf32" if fields.get("tf32") and fields["precision"] == "fp32" else fields["precision"]
            parity = {**engine_parity(staged, onnx_path, images, limit), "inputs": parity_source}
            fields["parity"] = judge_parity(parity, out_path.name, "the engine was not written",
                                            untrained=bool(fields.get("untrained")))
            write_manifest(staged, fields)
        _move_into_place(staging, out_path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path
