"""Engines built from ONNX files: TensorRT (GPU) and OpenVINO (CPU), each checked against ONNX Runtime."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import ensure_writable_dir, manifest_path, write_manifest
from ..errors import UserError

BACKENDS = ("tensorrt", "openvino")
ENGINE_SUFFIX = {"tensorrt": ".engine", "openvino": ".xml"}


def default_engine_path(onnx_path: str | Path, backend: str) -> Path:
    """``model.fp16.onnx`` → ``model.fp16.engine`` (TensorRT) or ``model.fp16.openvino.xml``."""
    onnx_path = Path(onnx_path)
    tag = "" if backend == "tensorrt" else ".openvino"
    return onnx_path.with_name(onnx_path.stem + tag + ENGINE_SUFFIX[backend])


def engine_parity(engine_path: Path, onnx_path: Path, images: np.ndarray, precision: str) -> dict:
    """The engine's logits vs ONNX Runtime (CPU) on the ONNX it was built from."""
    from ..export.parity import compare_logits
    from ..runtime import open_runner

    with open_runner(onnx_path) as ort_runner:
        reference = ort_runner.infer(images)
    with open_runner(engine_path) as runner:
        candidate = runner.infer(images)
    return {**compare_logits(reference, candidate, precision), "reference": onnx_path.name,
            "runtime": runner.backend}


def build_engine(onnx_path: str | Path, out_path: str | Path | None = None, backend: str = "tensorrt", *,
                 images: np.ndarray | None = None, parity_source: str | None = None,
                 **tensorrt_options: Any) -> Path:
    """Build ``onnx_path`` into an engine for ``backend``; returns the engine path (manifest beside it).

    With ``images`` the engine's output is compared with ONNX Runtime's before anything is put in
    place, and a failed comparison raises :class:`CheckFailed`. The engine, its side files and
    its manifest are staged in a temporary folder beside ``out_path`` and moved in manifest-last.
    ``tensorrt_options``: ``min_batch``, ``opt_batch``, ``max_batch``, ``workspace_mib``, ``timing_cache``.
    """
    from ..export.parity import require_parity

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file() or onnx_path.suffix != ".onnx":
        raise UserError(f"{onnx_path} is not an ONNX file: pass one written by rexnet-deploy export")
    out_path = Path(out_path) if out_path else default_engine_path(onnx_path, backend)
    if out_path.suffix != ENGINE_SUFFIX[backend] and not (backend == "tensorrt" and out_path.suffix == ".plan"):
        raise UserError(f"{out_path}: a {backend} engine is written as *{ENGINE_SUFFIX[backend]}; rename --out")
    if backend == "tensorrt":
        from .tensorrt import require_tensorrt

        require_tensorrt()  # fail in one line before touching the output folder
    elif tensorrt_options:
        raise UserError(f"{', '.join(tensorrt_options)} apply to TensorRT builds only")
    ensure_writable_dir(out_path.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    try:
        staged = staging / out_path.name
        if backend == "tensorrt":
            from .tensorrt import build_tensorrt_engine

            fields = build_tensorrt_engine(onnx_path, staged, **tensorrt_options)
        else:
            from .openvino import build_openvino

            fields = build_openvino(onnx_path, staged)
        write_manifest(staged, fields)  # the TensorRT runner checks it before loading
        if images is not None:
            fields["parity"] = {**engine_parity(staged, onnx_path, images, fields["precision"]),
                                "inputs": parity_source}
            write_manifest(staged, fields)
            require_parity(fields["parity"], out_path.name, "the engine was not written")
        manifest = manifest_path(staged)
        for item in sorted(staging.iterdir(), key=lambda p: p == manifest):  # manifest last
            target = out_path.parent / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_path


__all__ = ["BACKENDS", "build_engine", "default_engine_path", "engine_parity"]
