"""Deployable bundles: a model's ONNX files (FP32, FP16, INT8), the engines this machine can build,
a manifest beside every file and ``bundle.json`` + ``bundle.md`` summing them up.

Everything is written into a temporary folder beside the destination and renamed into place at
the end, so an interrupted export leaves the previous bundle as it was. Every file is checked
against the torch model on real test images (engines against the ONNX they were built from); a
failed check fails the export and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..artifacts import (
    atomic_dir,
    ensure_writable_dir,
    manifest_path,
    read_manifest,
    sha256_file,
    tool_versions,
    write_json,
    write_manifest,
)
from ..data import ImageDataset, Preprocess, load_dataset
from ..errors import UserError
from ..report import markdown_table
from .onnx_export import DEFAULT_OPSET, export_onnx
from .parity import check_parity, make_parity_batch, require_parity, torch_logits

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MODEL = "rexnet_tiny_cifar"
DEFAULT_WIDTH = 0.5  # tiny-cifar-0.5, the project's compressed deployment model
DEFAULT_DATASET_32PX = "fashion_mnist"
BUNDLE_JSON = "bundle.json"
_PID_FILE = ".export-pid"  # inside the temporary folder: lets a later export remove it if its writer died


@dataclasses.dataclass
class ExportSource:
    """The model to export and what is known about it."""

    model: Any  # ReXNet in eval mode
    model_name: str
    width: float
    checkpoint: Path | None
    checkpoint_sha256: str | None
    meta: dict[str, Any]
    input_size: tuple[int, int, int]
    preprocess: Preprocess

    @property
    def untrained(self) -> bool:
        return self.checkpoint is None


def load_source(model_name: str | None, width: float | None, checkpoint: str | Path | None) -> ExportSource:
    """The model from ``checkpoint`` (trained or pruned; name/width checked against it) or random weights."""
    from ..models import create_model, get_model_info, load_model

    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        model, meta = load_model(checkpoint, model_name, width)
        sha = sha256_file(checkpoint)
    else:
        model_name = model_name or DEFAULT_MODEL
        info = get_model_info(model_name)
        if width is None and info.width is None and model_name == DEFAULT_MODEL:
            width = DEFAULT_WIDTH
        model, meta, sha = create_model(model_name, width=width).eval(), {}, None
    family = get_model_info(model.model_name).spec
    if isinstance(meta.get("preprocess"), dict):
        preprocess = Preprocess.from_dict(meta["preprocess"])
    else:
        preprocess = Preprocess(family.input_size[1], family.mean, family.std)
    return ExportSource(model, model.model_name, float(model.width), checkpoint, sha, meta,
                        (3, preprocess.size, preprocess.size), preprocess)


def load_eval_split(source: ExportSource, dataset: str | None, data_dir: str | Path | None,
                    ) -> tuple[ImageDataset | None, str | None]:
    """The test split used for parity and accuracy, preprocessed as the model expects; or (None, why not).

    An explicitly named dataset must load and fit; the default (the checkpoint's dataset, else
    Fashion-MNIST for 32×32 models) falls back to random inputs with the reason recorded.
    """
    explicit = dataset is not None
    name = dataset or source.meta.get("dataset") or (DEFAULT_DATASET_32PX if source.input_size[1:] == (32, 32)
                                                       else None)
    if name is None:
        return None, f"no dataset for {source.input_size[1]}×{source.input_size[2]} inputs (pass --dataset)"
    try:
        split = load_dataset(name, "test", data_dir)
    except UserError as exc:
        if explicit:
            raise
        return None, f"{name} is not available ({exc})"
    if tuple(split.images.shape[1:]) != source.input_size:
        if explicit:
            raise UserError(f"dataset {name} has {tuple(split.images.shape[1:])} images but {source.model_name} "
                            f"takes {source.input_size}: pick a dataset of that size with --dataset")
        return None, f"{name} images are {tuple(split.images.shape[1:])}, the model takes {source.input_size}"
    if source.untrained:
        # random weights have no preprocessing of their own: they take the dataset's
        source.preprocess = split.preprocess
    return dataclasses.replace(split, preprocess=source.preprocess), None


def onnx_metadata(source: ExportSource, classes: Sequence[str], dataset: str | None) -> dict[str, str]:
    """``metadata_props`` of every ONNX file: what a deployment needs to feed and read the model."""
    return {
        "model_name": source.model_name,
        "width": f"{source.width:g}",
        "input_size": json.dumps(list(source.input_size)),
        "preprocess": json.dumps(source.preprocess.to_dict()),
        "classes": json.dumps(list(classes)),
        "num_classes": str(source.model.num_classes),
        "dataset": dataset or "",
        "untrained": json.dumps(source.untrained),
        "source_checkpoint_sha256": source.checkpoint_sha256 or "",
        "checkpoint_metrics": json.dumps(source.meta.get("metrics")),
        "tool_versions": json.dumps(tool_versions()),
    }


def _class_names(source: ExportSource, split: ImageDataset | None) -> list[str]:
    n = source.model.num_classes
    if isinstance(source.meta.get("classes"), (list, tuple)) and len(source.meta["classes"]) == n:
        return [str(c) for c in source.meta["classes"]]
    if split is not None and split.num_classes == n:
        return list(split.classes)
    return [str(i) for i in range(n)]


def default_out_dir(model_name: str, width: float) -> Path:
    return Path("export") / f"{model_name}-{width:g}"


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an unwritable place, or to replace something that is not a bundle (a file, the user's own files)."""
    ensure_writable_dir(out_dir.parent)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"--out {out_dir} exists and is not a folder: choose a folder for the bundle")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / BUNDLE_JSON).is_file():
        raise UserError(f"--out {out_dir} holds files that are not a rexnet-deploy bundle (no {BUNDLE_JSON}): "
                        f"choose an empty or new folder; the export replaces the whole folder")


def _remove_abandoned_tmp(out_dir: Path) -> None:
    """Remove temporary folders of earlier exports to ``out_dir`` whose process was killed."""
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        try:
            pid = int((tmp / _PID_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _housekeeping_removed(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest's own fields, without what ``write_manifest`` recomputes."""
    return {k: v for k, v in manifest.items() if k not in ("artifact", "sha256", "size_bytes", "created",
                                                           "tool_versions")}


def _file_entry(path: Path, kind: str, variant: str, parity: dict, accuracy: dict | None) -> dict[str, Any]:
    """``variant``: the precision, or ``int8-tensorrt`` for the TensorRT Q/DQ layout (one name per file kind)."""
    manifest = read_manifest(path)
    size = manifest["size_bytes"] + manifest.get("weights", {}).get("size_bytes", 0)  # OpenVINO's .bin too
    return {"file": path.name, "kind": kind, "precision": manifest["precision"], "variant": variant,
            "size_bytes": size,
            "sha256": manifest["sha256"], "manifest": manifest_path(path).name, "parity": parity,
            "accuracy": accuracy}


def _accuracy(path: Path, split: ImageDataset | None, eval_images: int, progress: bool) -> dict | None:
    if split is None or eval_images <= 0:
        return None
    from ..runtime import evaluate, open_runner

    with open_runner(path) as runner:
        result = evaluate(runner, split, limit=eval_images, progress=progress)
    return {**result, "split": f"{split.name}/{split.split}"}


def engines_available() -> tuple[list[str], dict[str, str]]:
    """The engine backends this machine can build, and why each other one cannot."""
    from ..engines.tensorrt import tensorrt_unavailable_reason

    ok, skipped = [], {}
    try:
        import openvino  # noqa: F401

        ok.append("openvino")
    except ImportError as exc:
        skipped["openvino"] = f"OpenVINO is not installed ({exc}): pip install 'rexnet-deploy[openvino]'"
    reason = tensorrt_unavailable_reason()
    if reason:
        skipped["tensorrt"] = reason
    else:
        ok.append("tensorrt")
    return ok, skipped


def export_bundle(model_name: str | None = None, width: float | None = None, checkpoint: str | Path | None = None,
                  precisions: Sequence[str] = ("fp32",), out_dir: str | Path | None = None, *,
                  opset: int = DEFAULT_OPSET, dataset: str | None = None, data_dir: str | Path | None = None,
                  calibration: str | Path | None = None, engines: Sequence[str] | None = None,
                  parity_images: int = 128, eval_images: int = 2000, int8_max_drop: float = 0.5,
                  progress: bool = True) -> Path:
    """Export a ReXNet into a bundle folder; returns the folder (``bundle.json`` inside).

    ``precisions``: any of fp32/fp16/int8 (FP32 is always written: the others derive from it).
    INT8 needs trained weights and a dataset to calibrate on; it is skipped with a reason otherwise. When
    its top-1 falls more than ``int8_max_drop`` points below FP32 on the ``eval_images``, the quantize
    stage keeps the most sensitive units in float until it holds.
    ``engines``: backends to build (None: every one this machine can). ``eval_images`` test images
    measure each file's accuracy (0: skip). Parity failures raise :class:`CheckFailed`.
    """
    from ..models import count_macs, count_params

    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise UserError(f"unknown precision {unknown[0]!r}: choose from {', '.join(PRECISIONS)}")
    precisions = [p for p in PRECISIONS if p in {"fp32", *precisions}]
    if parity_images < 1:
        raise UserError(f"--parity-images {parity_images} must be at least 1")
    source = load_source(model_name, width, checkpoint)
    out_dir = Path(out_dir) if out_dir else default_out_dir(source.model_name, source.width)
    _check_out_dir(out_dir)
    buildable, skipped_engines = engines_available()
    if engines is not None:
        unknown = [e for e in engines if e not in ("openvino", "tensorrt")]
        if unknown:
            raise UserError(f"unknown engine {unknown[0]!r}: choose openvino, tensorrt or none")
        skipped_engines = {e: r for e, r in skipped_engines.items() if e in engines}
        buildable = [e for e in buildable if e in engines]
    split, why_random = load_eval_split(source, dataset, data_dir)
    batch = make_parity_batch(split, source.input_size, parity_images, why_random)
    dataset_name = split.name if split is not None else None
    classes = _class_names(source, split)
    skipped: list[dict[str, str]] = [{"what": f"{e} engines", "reason": r} for e, r in skipped_engines.items()]
    if "int8" in precisions and (source.untrained or split is None):
        reason = ("the weights are random (no --checkpoint): calibration and accuracy would mean nothing"
                  if source.untrained else f"no calibration data: {why_random}")
        skipped.append({"what": "int8", "reason": reason})
        precisions.remove("int8")

    common = {
        "model_name": source.model_name, "width": source.width, "input_size": list(source.input_size),
        "preprocess": source.preprocess.to_dict(), "classes": classes, "num_classes": source.model.num_classes,
        "untrained": source.untrained,
        "checkpoint": str(source.checkpoint) if source.checkpoint else None,
        "source_checkpoint_sha256": source.checkpoint_sha256, "checkpoint_metrics": source.meta.get("metrics"),
        "dataset": dataset_name, "parity_inputs": batch.source,
        "channel_plan": source.model.plan.to_dict(),
    }
    base = f"{source.model_name}-{source.width:g}"
    onnx_count = len(precisions) + ("tensorrt" in buildable and "int8" in precisions)
    steps = onnx_count + len(precisions) * len(buildable)  # each engine backend takes one ONNX per precision
    _remove_abandoned_tmp(out_dir)
    with atomic_dir(out_dir) as tmp, tqdm(total=steps, desc=f"export {base}", unit="file",
                                          disable=not progress) as bar:
        (tmp / _PID_FILE).write_text(str(os.getpid()))
        reference = torch_logits(source.model, batch.images)
        files: list[dict[str, Any]] = []
        onnx_files: dict[str, Path] = {}

        def add_onnx(key: str, path: Path, extra: dict[str, Any]) -> Path:
            precision = key.split("-")[0]
            parity = require_parity(check_parity(source.model, path, batch.images, precision, reference), path.name,
                                    f"nothing was written; drop {precision} from --precision to export the rest"
                                    if precision != "fp32" else "nothing was written; report it with the ONNX file")
            parity["inputs"] = batch.source
            kept = _housekeeping_removed(read_manifest(path)) if manifest_path(path).is_file() else {}
            if kept.get("accuracy"):  # the quantize stage's FP32-vs-INT8 comparison (and its fallbacks)
                kept["quantization_accuracy"] = kept.pop("accuracy")
            measured = kept.get("quantization_accuracy") or {}
            if precision in measured:
                accuracy = {**measured[precision], "num_images": measured["num_images"], "split": measured["split"]}
            else:
                accuracy = _accuracy(path, split, eval_images, progress)
            write_manifest(path, {"kind": "onnx", **kept, **common, "precision": precision, "opset": opset,
                                  **extra, "parity": parity, "accuracy": accuracy})
            files.append(_file_entry(path, "onnx", key, parity, accuracy))
            onnx_files[key] = path
            bar.update()
            return path

        bar.set_postfix_str("fp32 onnx")
        fp32 = export_onnx(source.model, tmp / f"{base}.fp32.onnx", source.input_size, opset=opset,
                           metadata={**onnx_metadata(source, classes, dataset_name), "precision": "fp32"})
        add_onnx("fp32", fp32, {"params": count_params(source.model),
                                "macs": count_macs(source.model, source.input_size)})
        if "fp16" in precisions:
            from ..quant import convert_fp16

            bar.set_postfix_str("fp16 onnx")
            add_onnx("fp16", convert_fp16(fp32, tmp / f"{base}.fp16.onnx", keep_io_types=True),
                     {"source_onnx": fp32.name, "source_onnx_sha256": sha256_file(fp32)})
        if "int8" in precisions:
            from ..quant import build_calibration_set, default_calibration_path, quantize_onnx

            bar.set_postfix_str("int8 onnx")
            calib = Path(calibration) if calibration else default_calibration_path(dataset_name, 512, 0)
            if not calibration and not calib.is_file():
                calib = build_calibration_set(dataset_name, num_images=512, seed=0, out=calib, data_dir=data_dir)
            targets = ["ort-cpu"] + (["tensorrt"] if "tensorrt" in buildable else [])
            for target in targets:
                key = "int8" if target == "ort-cpu" else "int8-tensorrt"
                measure = {"eval_set": split, "eval_images": eval_images} if eval_images > 0 else {}
                path = quantize_onnx(fp32, calib, tmp / f"{base}.{key}.onnx", target=target, max_drop=int8_max_drop,
                                     progress=progress, **measure)
                add_onnx(key, path, {"source_onnx": fp32.name, "source_onnx_sha256": sha256_file(fp32)})

        from ..engines import build_engine, default_engine_path

        for backend in buildable:
            for key, onnx_path in onnx_files.items():
                # the ORT-CPU Q/DQ layout cannot build in TensorRT; its TensorRT twin is for TensorRT only
                if (key == "int8" and backend == "tensorrt") or (key == "int8-tensorrt" and backend != "tensorrt"):
                    continue
                bar.set_postfix_str(f"{key} {backend}")
                engine = build_engine(onnx_path, default_engine_path(onnx_path, backend), backend,
                                      images=batch.images, parity_source=batch.source)
                manifest = _housekeeping_removed(read_manifest(engine))
                write_manifest(engine, {**manifest, **common})  # the model's facts travel with the engine too
                files.append(_file_entry(engine, backend, key, manifest["parity"],
                                         _accuracy(engine, split, eval_images, progress)))
                bar.update()

        bundle = {
            "kind": "bundle", **{k: common[k] for k in ("model_name", "width", "input_size", "untrained", "checkpoint",
                                                        "source_checkpoint_sha256", "checkpoint_metrics", "dataset",
                                                        "parity_inputs", "preprocess", "classes")},
            "opset": opset, "precisions": precisions, "engines": buildable,
            "eval_images": min(eval_images, len(split)) if split is not None else 0,
            "files": files, "skipped": skipped, "tool_versions": tool_versions(),
        }
        write_json(tmp / BUNDLE_JSON, bundle)
        (tmp / "bundle.md").write_text(bundle_markdown(bundle))
        (tmp / _PID_FILE).unlink()
    return out_dir


def summary_rows(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per file (and per skipped item) for the terminal and Markdown tables."""
    rows = []
    for f in bundle["files"]:
        p = f["parity"]
        # every file in a bundle passed its check (a failure stops the export)
        parity = f"ok, max diff {p['max_abs_diff']:.1e}, top-1 {100 * p['top1_agreement']:.0f} %"
        acc = f["accuracy"]
        rows.append({"file": f["file"], "format": f["kind"], "precision": f["variant"],
                     "size (MB)": round(f["size_bytes"] / 1e6, 2), "parity / note": parity,
                     "top-1 %": round(acc["top1"], 2) if acc else None})
    for s in bundle["skipped"]:
        rows.append({"file": f"({s['what']})", "format": "skipped", "precision": None, "size (MB)": None,
                     "parity / note": s["reason"], "top-1 %": None})
    return rows


def bundle_markdown(bundle: dict[str, Any]) -> str:
    untrained = " — **untrained (random weights)**" if bundle["untrained"] else ""
    lines = [f"# {bundle['model_name']} width {bundle['width']:g}{untrained}", "",
             f"- checkpoint: {bundle['checkpoint'] or 'none'} (sha256 {bundle['source_checkpoint_sha256'] or '—'})",
             f"- parity inputs: {bundle['parity_inputs']}",
             f"- accuracy: top-1 on the first {bundle['eval_images']} images of {bundle['dataset'] or '—'} test",
             "", markdown_table(summary_rows(bundle))]
    return "\n".join(lines)


def read_bundle(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / BUNDLE_JSON
    if not path.is_file():
        raise UserError(f"{out_dir} is not a bundle (no {BUNDLE_JSON}): run rexnet-deploy export")
    return json.loads(path.read_text())


__all__ = ["DEFAULT_MODEL", "DEFAULT_WIDTH", "PRECISIONS", "ExportSource", "bundle_markdown", "export_bundle",
           "load_source", "make_parity_batch", "read_bundle", "summary_rows"]

