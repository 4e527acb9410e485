"""Deployable bundles: a model's ONNX files (FP32, FP16, INT8), the engines this machine can build, a
manifest beside every file and ``bundle.json`` + ``bundle.md`` summing them up. The layer above export,
quantization and the backends: it calls them all.

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

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import (
    atomic_dir,
    ensure_writable_dir,
    manifest_path,
    read_manifest,
    read_manifest_if_any,
    sha256_file,
    tool_versions,
    write_json,
    write_manifest,
)
from ..backends import (
    BACKENDS,
    Backend,
    Runner,
    build_result,
    engine_backends,
    evaluate,
    get_backend,
    open_runner,
    read_artifact,
)
from ..data import (
    DataSplit,
    ImageDataset,
    Preprocess,
    check_num_classes,
    get_format,
    load_split,
    recorded_spec,
    resolve_spec,
)
from ..errors import RuntimeUnavailable, UserError
from ..export import DEFAULT_OPSET, export_onnx
from ..export.parity import check_parity, compare_logits, make_parity_batch, require_parity, torch_logits
from ..report import markdown_table
from .auto import (
    DEFAULT_BUDGET_POINTS,
    CandidateFile,
    auto_summary,
    candidate_files,
    candidates_markdown,
    measure_candidates,
)
from .build import build_engine, judge_parity
from .kit import write_kit

PRECISIONS = ("fp32", "fp16", "int8")
AUTO = "auto"  # --precision auto: every precision, then the fastest file here within the accuracy budget
DEFAULT_DEPLOY_BATCH = 64
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
        """Random weights: no checkpoint, or one that records it holds random weights (a speed study's prune)."""
        return self.checkpoint is None or bool(self.meta.get("untrained"))


def load_source(model_name: str | None, width: float | None, checkpoint: str | Path | None) -> ExportSource:
    """The model from ``checkpoint`` (trained or pruned; name/width checked against it) or random weights."""
    from ..models import create_model, get_model_info, load_model

    preprocess = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        model, meta = load_model(checkpoint, model_name, width)
        sha = sha256_file(checkpoint)
        preprocess = read_artifact(checkpoint).preprocess
    else:
        model_name = model_name or DEFAULT_MODEL
        info = get_model_info(model_name)
        if width is None and info.width is None and model_name == DEFAULT_MODEL:
            width = DEFAULT_WIDTH
        model, meta, sha = create_model(model_name, width=width).eval(), {}, None
    if preprocess is None:  # random weights or a foreign checkpoint: the family's own (timm's pretrained_cfg)
        preprocess = get_model_info(model.model_name).spec.preprocess
    return ExportSource(model, model.model_name, float(model.width), checkpoint, sha, meta,
                        (3, preprocess.size, preprocess.size), preprocess)


def load_eval_split(source: ExportSource, dataset: str | None, data_dir: str | Path | None,
                    ) -> tuple[DataSplit | None, str | None]:
    """The validation split used for parity, calibration and accuracy, preprocessed as the model expects; or
    (None, why not) for an untrained export only.

    A trained checkpoint's data is the one it records (its :class:`~rexnet_deploy.data.DatasetSpec`: dataset,
    folder, classes, preprocessing), or ``dataset``/``data_dir``; a checkpoint that records none takes
    Fashion-MNIST at 32×32. That data must load and fit, else one line (exit 2): a trained model is never
    checked on random inputs. Random weights take the named dataset, else Fashion-MNIST for 32×32 models,
    else random inputs (the reason is recorded in the bundle).
    """
    size = source.input_size[1]
    fits_default = source.input_size[1:] == (32, 32)
    origin = f"checkpoint {source.checkpoint}" if source.checkpoint else source.model_name
    recorded = recorded_spec(source.meta, origin)
    explicit = dataset is not None or not source.untrained
    name = dataset or (recorded.name if recorded else None) or (DEFAULT_DATASET_32PX if fits_default else None)
    if name is None:
        if source.untrained:
            return None, f"untrained export: no dataset for {size}×{size} inputs (pass --dataset)"
        raise UserError(f"{origin} records no dataset and takes {size}×{size} inputs: pass --dataset (and "
                        f"--data-dir) naming the data it was trained on, for parity, INT8 calibration and accuracy")
    try:
        spec = resolve_spec(source.meta if recorded is not None and recorded.name == name else {}, dataset=name,
                            data_dir=data_dir, input_size=size if get_format(name).user_tree else None,
                            model=source.model_name, origin=origin)
        split = load_split(spec, "val")
    except UserError as exc:
        if explicit:
            raise
        return None, f"untrained export: {name} is not available ({exc})"
    if (3, split.preprocess.size, split.preprocess.size) != source.input_size:
        if explicit:
            raise UserError(f"dataset {name} has {split.preprocess.size}×{split.preprocess.size} images but "
                            f"{source.model_name} takes {source.input_size}: pick a dataset of that size with "
                            f"--dataset")
        return None, f"untrained export: {name} images are {split.preprocess.size}×{split.preprocess.size}, the " \
                     f"model takes {source.input_size}"
    if not source.untrained:
        check_num_classes(split, source.model.num_classes, origin)
    if source.untrained:
        # random weights have no preprocessing of their own: they take the dataset's
        source.preprocess = split.preprocess
    source.meta["dataset_spec"] = split.spec.to_dict()  # where the data is now: into every file's metadata
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
        "dataset_spec": json.dumps(source.meta.get("dataset_spec") if dataset else None),
        "untrained": json.dumps(source.untrained),
        "source_checkpoint_sha256": source.checkpoint_sha256 or "",
        "checkpoint_metrics": json.dumps(source.meta.get("metrics")),
        "tool_versions": json.dumps(tool_versions()),
    }


def _class_names(source: ExportSource, split: DataSplit | None) -> list[str]:
    """The checkpoint's class names, else the data's when it has as many, else ``0 … N-1``."""
    n = source.model.num_classes
    recorded = read_artifact(source.checkpoint).classes if source.checkpoint else None
    if recorded and len(recorded) == n:
        return recorded
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


def _file_entry(path: Path, backend: str, variant: str, parity: dict, accuracy: dict | None) -> dict[str, Any]:
    """``variant``: the precision, or ``int8-<layout>`` for an engine backend's own Q/DQ layout; the backend's
    ``note`` (its build's one line about the file) when it has one."""
    manifest = read_manifest(path)
    size = manifest["size_bytes"] + manifest.get("weights", {}).get("size_bytes", 0)  # OpenVINO's .bin too
    return {"file": path.name, "backend": backend, "kind": "onnx" if path.suffix == ".onnx" else "engine",
            "precision": manifest["precision"], "variant": variant,
            "size_bytes": size,
            "sha256": manifest["sha256"], "manifest": manifest_path(path).name, "parity": parity,
            "accuracy": accuracy, **({"note": manifest["note"]} if manifest.get("note") else {})}


def engines_available() -> tuple[list[str], dict[str, str]]:
    """The engine backends this machine can build, and why each other one cannot."""
    ok, skipped = [], {}
    for backend in engine_backends():
        reason = backend.unavailable_reason()
        if reason:
            skipped[backend.name] = reason
        else:
            ok.append(backend.name)
    return ok, skipped


@dataclasses.dataclass
class BundleRequest:
    """What to export: the model, the precisions and engines, the data parity/INT8/accuracy use, where to."""

    model_name: str | None = None
    width: float | None = None
    checkpoint: str | Path | None = None
    precisions: Sequence[str] = ("fp32",)  # any of PRECISIONS; FP32 is always written (the others derive from it)
    out_dir: str | Path | None = None  # default: export/<model>-<width>/
    opset: int = DEFAULT_OPSET
    dataset: str | None = None  # default: the checkpoint's, else Fashion-MNIST for 32×32 models
    data_dir: str | Path | None = None
    calibration: str | Path | None = None  # default: calib/<dataset>-512-s0.pt, built if missing
    engines: Sequence[str] | None = None  # backends to build (None: every one this machine can)
    parity_images: int = 128
    eval_images: int = 2000  # test images each file's accuracy is measured on (0: skip)
    int8_max_drop: float = 0.5  # top-1 points INT8 may lose before sensitive units stay in float
    deploy_batch: int = DEFAULT_DEPLOY_BATCH  # the batch --precision auto times every candidate at
    budget_points: float = DEFAULT_BUDGET_POINTS  # top-1 points the recommended file may lose against FP32
    embed_preprocess: bool = False  # also an FP32 ONNX that takes uint8 NHWC pixels and normalises in its graph
    threads: int = 2  # CPU threads of torch and every runtime --precision auto times
    # INT8 of random weights, for a speed-only study: calibrated on real images all the same, marked untrained in
    # every manifest like the rest of such a bundle, never recommended (--precision auto refuses random weights)
    untrained_int8: bool = False
    progress: bool = True

    @property
    def recommend(self) -> bool:
        """``--precision auto``: measure every file here and record the fastest within the budget."""
        return AUTO in self.precisions


@dataclasses.dataclass
class _Plan:
    """The request resolved against the model, the data and this machine."""

    request: BundleRequest
    source: ExportSource
    out_dir: Path
    precisions: list[str]
    engines: list[str]
    split: ImageDataset | None
    batch: Any  # ParityBatch
    skipped: list[dict[str, str]]
    common: dict[str, Any]  # the model's facts, in every manifest

    @property
    def base(self) -> str:
        return f"{self.source.model_name}-{self.source.width:g}"

    def int8_layouts(self) -> list[str]:
        """One INT8 file per Q/DQ layout: ONNX Runtime's, plus each engine backend's own."""
        layouts = [get_backend(name).int8_layout for name in [*_ONNX_RUNNERS, *self.engines]]
        return list(dict.fromkeys(layout for layout in layouts if layout))


_ONNX_RUNNERS = [b.name for b in BACKENDS.values() if b.role == "onnx"]


def _checkpoint_precisions(plan: _Plan, backend: Backend) -> list[str]:
    """The precisions a backend that builds from the torch model makes for this bundle: the asked ones it takes."""
    return [p for p in plan.precisions if p in backend.precisions]


def _builds_own_int8(plan: _Plan, backend: Backend) -> bool:
    """A backend's own INT8 (OpenVINO: NNCF, in each of its scopes) is more candidates of --precision auto, built
    when auto asks, and part of an untrained speed study's INT8 (``untrained_int8``)."""
    return bool(backend.own_int8) and "int8" in plan.precisions and (plan.request.recommend or plan.source.untrained)


def _variant_key(layout: str) -> str:
    """``int8`` for ONNX Runtime's layout (the one the ONNX files themselves run in), ``int8-<layout>`` else."""
    return "int8" if layout == get_backend(_ONNX_RUNNERS[0]).int8_layout else f"int8-{layout}"


def _default_calibration(split: DataSplit) -> Path:
    """The INT8 calibration set of an export without ``--calibration``: 512 training images of the model's data
    (all of them when its training split is smaller), in :func:`~rexnet_deploy.quant.default_calibration_path`,
    drawn now unless that file is there already."""
    from ..quant import DEFAULT_NUM_IMAGES, MIN_CALIBRATION_IMAGES, build_calibration_set, default_calibration_path

    count = DEFAULT_NUM_IMAGES
    if split.spec.is_folder:
        available = len(load_split(split.spec, "train"))
        if available < MIN_CALIBRATION_IMAGES:
            raise UserError(f"{split.spec.folder}/train has {available} images, fewer than the "
                            f"{MIN_CALIBRATION_IMAGES} INT8 calibration needs: add images or drop int8 from "
                            f"--precision")
        count = min(count, available)
    path = default_calibration_path(split.spec, count, 0)
    return path if path.is_file() else build_calibration_set(split.spec, count, 0, out=path)


def _resolve(request: BundleRequest) -> _Plan:
    unknown = [p for p in request.precisions if p not in (*PRECISIONS, AUTO)]
    if unknown:
        raise UserError(f"unknown precision {unknown[0]!r}: choose from {', '.join(PRECISIONS)}, or {AUTO}")
    asked = PRECISIONS if request.recommend else {"fp32", *request.precisions}
    precisions = [p for p in PRECISIONS if p in asked]
    if request.deploy_batch < 1:
        raise UserError(f"--batch {request.deploy_batch} must be at least 1")
    if request.parity_images < 1:
        raise UserError(f"--parity-images {request.parity_images} must be at least 1")
    source = load_source(request.model_name, request.width, request.checkpoint)
    out_dir = Path(request.out_dir) if request.out_dir else default_out_dir(source.model_name, source.width)
    _check_out_dir(out_dir)
    buildable, skipped_engines = engines_available()
    if request.engines is not None:
        known = [b.name for b in engine_backends()]
        unknown = [e for e in request.engines if e not in known]
        if unknown:
            raise UserError(f"unknown engine {unknown[0]!r}: choose {', '.join(known)} or none")
        skipped_engines = {e: r for e, r in skipped_engines.items() if e in request.engines}
        buildable = [e for e in buildable if e in request.engines]
    split, why_random = load_eval_split(source, request.dataset, request.data_dir)
    batch = make_parity_batch(split, source.input_size, request.parity_images, why_random)
    skipped = [{"what": f"{e} engines", "reason": r} for e, r in skipped_engines.items()]
    if request.untrained_int8 and not source.untrained:
        raise UserError(f"--untrained-int8 is for random weights (no --checkpoint, or one marked untrained); "
                        f"{source.checkpoint} is trained: drop the flag")
    if "int8" in precisions and (split is None or (source.untrained and not request.untrained_int8)):
        reason = (f"no calibration data: {why_random}" if split is None else
                  "the weights are random (untrained): calibration and accuracy would mean nothing (pass "
                  "--untrained-int8 to build it anyway for a speed-only study)")
        skipped.append({"what": "int8", "reason": reason})
        precisions.remove("int8")
    if request.recommend and (source.untrained or split is None):
        raise UserError("--precision auto picks by accuracy as well as speed: it needs a trained --checkpoint "
                        "and its test images")
    if "int8" in precisions and request.calibration is None:
        request = dataclasses.replace(request, calibration=_default_calibration(split))
    dataset_name = split.name if split is not None else None
    common = {
        "model_name": source.model_name, "width": source.width, "input_size": list(source.input_size),
        "preprocess": source.preprocess.to_dict(), "classes": _class_names(source, split),
        "num_classes": source.model.num_classes, "untrained": source.untrained,
        "checkpoint": str(source.checkpoint) if source.checkpoint else None,
        "source_checkpoint_sha256": source.checkpoint_sha256, "checkpoint_metrics": source.meta.get("metrics"),
        "dataset": dataset_name, "dataset_spec": split.spec.to_dict() if split is not None else None,
        "parity_inputs": batch.source, "channel_plan": source.model.plan.to_dict(),
    }
    return _Plan(request, source, out_dir, precisions, buildable, split, batch, skipped, common)


class _Writer:
    """Writes one bundle's files into the temporary folder, each checked and given its manifest."""

    def __init__(self, plan: _Plan, tmp: Path, bar: tqdm) -> None:
        self.plan, self.tmp, self.bar = plan, tmp, bar
        self.reference = torch_logits(plan.source.model, plan.batch.images)
        self.files: list[dict[str, Any]] = []
        self.onnx_files: dict[str, Path] = {}
        self._calibration: Path | None = None

    def calibration_file(self) -> Path:
        """The calibration set every INT8 file is calibrated on (``--calibration``, else the default, built once)."""
        if self._calibration is None:
            from ..quant import build_calibration_set, default_calibration_path

            request, dataset = self.plan.request, self.plan.common["dataset"]
            calib = Path(request.calibration) if request.calibration else default_calibration_path(dataset, 512, 0)
            if not request.calibration and not calib.is_file():
                calib = build_calibration_set(dataset, num_images=512, seed=0, out=calib, data_dir=request.data_dir)
            self._calibration = calib
        return self._calibration

    def _accuracy(self, path: Path, runner: Runner | None = None) -> dict | None:
        """Top-1/top-5 of ``path`` on the evaluation images (through ``runner`` when given, else its own)."""
        split, limit = self.plan.split, self.plan.request.eval_images
        if split is None or limit <= 0:
            return None
        if runner is not None:
            result = evaluate(runner, split, limit=limit, progress=self.plan.request.progress)
        else:
            with open_runner(path) as own:
                result = evaluate(own, split, limit=limit, progress=self.plan.request.progress)
        return {**result, "split": f"{split.name}/{split.split}"}

    def _keep(self, path: Path, backend: str, variant: str, fields: dict[str, Any], accuracy: dict | None) -> None:
        """The tail every file of the bundle shares, checked already: its manifest (the model's facts, under the
        file's own fields where both have one, such as the embedded file's preprocessing; its parity and accuracy),
        its bundle entry, the progress bar."""
        write_manifest(path, {**self.plan.common, **fields, "accuracy": accuracy})
        self.files.append(_file_entry(path, backend, variant, fields["parity"], accuracy))
        self.bar.update()

    def add_onnx(self, key: str, path: Path, extra: dict[str, Any]) -> Path:
        plan, precision = self.plan, key.split("-")[0]
        parity = judge_parity(check_parity(plan.source.model, path, plan.batch.images, precision, self.reference),
                              path.name, f"nothing was written; drop {precision} from --precision to export the rest"
                              if precision != "fp32" else "nothing was written; report it with the ONNX file",
                              untrained=plan.source.untrained)
        parity["inputs"] = plan.batch.source
        kept = _housekeeping_removed(read_manifest_if_any(path))
        if kept.get("accuracy"):  # the quantize stage's FP32-vs-INT8 comparison (and its fallbacks)
            kept["quantization_accuracy"] = kept.pop("accuracy")
        measured = kept.get("quantization_accuracy") or {}
        if precision in measured:
            accuracy = {**measured[precision], "num_images": measured["num_images"], "split": measured["split"]}
        else:
            accuracy = self._accuracy(path)
        # the quantize stage's record, the model's facts over it
        self._keep(path, _ONNX_RUNNERS[0], key, {"kind": "onnx", **kept, **plan.common, "precision": precision,
                                                 "opset": plan.request.opset, **extra, "parity": parity}, accuracy)
        self.onnx_files[key] = path
        return path

    def write_onnx_variants(self) -> None:
        from ..models import count_macs, count_params
        from ..quant import AccuracyBudget, convert_fp16, quantize_onnx

        plan, source, request = self.plan, self.plan.source, self.plan.request
        self.bar.set_postfix_str("fp32 onnx")
        metadata = {**onnx_metadata(source, plan.common["classes"], plan.common["dataset"]), "precision": "fp32"}
        fp32 = export_onnx(source.model, self.tmp / f"{plan.base}.fp32.onnx", source.input_size, opset=request.opset,
                           metadata=metadata)
        self.add_onnx("fp32", fp32, {"params": count_params(source.model),
                                     "macs": count_macs(source.model, source.input_size)})
        derived = {"source_onnx": fp32.name, "source_onnx_sha256": sha256_file(fp32)}
        if request.embed_preprocess:
            self.add_embedded(fp32, derived)
        if "fp16" in plan.precisions:
            self.bar.set_postfix_str("fp16 onnx")
            self.add_onnx("fp16", convert_fp16(fp32, self.tmp / f"{plan.base}.fp16.onnx", keep_io_types=True), derived)
        if "int8" in plan.precisions:
            self.bar.set_postfix_str("int8 onnx")
            calib = self.calibration_file()
            # random weights' top-1 is noise: no accuracy-driven fallback to float for them
            budget = AccuracyBudget(plan.split, request.eval_images, request.int8_max_drop) \
                if request.eval_images > 0 and not plan.source.untrained else None
            for layout in plan.int8_layouts():
                key = _variant_key(layout)
                path = quantize_onnx(fp32, calib, self.tmp / f"{plan.base}.{key}.onnx", target=layout,
                                     budget=budget, progress=request.progress)
                self.add_onnx(key, path, derived)

    def add_embedded(self, fp32: Path, derived: dict[str, Any]) -> None:
        """``--embed-preprocess``: the FP32 file taking uint8 NHWC pixels, checked against the FP32 file fed by the
        host contract on the same images (FP32 parity limits), its top-1 measured from the same pixels."""
        from ..export.embed import embed_preprocess, pixels_of

        plan = self.plan
        contract = plan.source.preprocess
        pixels = pixels_of(plan.batch.images, contract)
        if pixels is None:
            plan.skipped.append({"what": "fp32-uint8 (--embed-preprocess)",
                                 "reason": f"its parity needs real images, not {plan.batch.source}"})
            return
        self.bar.set_postfix_str("fp32 uint8 onnx")
        path = embed_preprocess(fp32, self.tmp / f"{plan.base}.fp32.uint8.onnx", contract)
        with open_runner(fp32, role="onnx") as runner:
            reference = runner.infer(plan.batch.images)
        with open_runner(path, role="onnx") as runner:
            parity = {**compare_logits(reference, runner.infer(pixels), "fp32"), "reference": fp32.name,
                      "runtime": runner.backend, "inputs": plan.batch.source}
            require_parity(parity, path.name, "nothing was written; drop --embed-preprocess to export the rest")
            accuracy = self._accuracy(path, _PixelRunner(runner, contract))
        self._keep(path, _ONNX_RUNNERS[0], "fp32-uint8", {
            "kind": "onnx", "preprocess": contract.with_embedded().to_dict(), "precision": "fp32",
            "embedded_preprocess": True, "opset": plan.request.opset, **derived, "parity": parity}, accuracy)
        self.files[-1]["embedded_preprocess"] = True

    def build_engines(self) -> None:
        plan = self.plan
        for name in plan.engines:
            backend = get_backend(name)
            if backend.builds_from_checkpoint:
                self.build_from_checkpoint(backend)
                continue
            for key, onnx_path in self.onnx_files.items():
                # an INT8 file is built only by the backend whose Q/DQ layout it is in
                if key.startswith("int8") and key != _variant_key(backend.int8_layout or ""):
                    continue
                self.bar.set_postfix_str(f"{key} {name}")
                engine = build_engine(onnx_path, backend.default_path(onnx_path), name, images=plan.batch.images,
                                      parity_source=plan.batch.source, progress=plan.request.progress)
                self._keep_engine(engine, name, key)
            if _builds_own_int8(plan, backend):
                self.build_own_int8(backend)

    def _keep_engine(self, engine: Path, backend: str, variant: str) -> None:
        """An engine :func:`build_engine` wrote (its build's fields and parity in its manifest), kept."""
        self._keep(engine, backend, variant, _housekeeping_removed(read_manifest(engine)), self._accuracy(engine))

    def build_own_int8(self, backend: Backend) -> None:
        """The backend's own INT8 (OpenVINO: NNCF) from the FP32 ONNX, one file per scope it quantizes in
        (``int8-nncf``: every convolution, ``int8-nncf-pointwise``: the 1×1 ones), on the calibration set the
        Q/DQ files use."""
        from ..quant import CalibrationSet

        plan = self.plan
        calib = CalibrationSet.load(self.calibration_file())
        calib.check_usable_for(plan.source.preprocess, plan.source.checkpoint or plan.source.model_name)
        fp32 = self.onnx_files["fp32"]
        for key, scope in backend.own_int8_variants().items():
            self.bar.set_postfix_str(f"{key} {backend.name}")
            try:
                engine = build_engine(fp32, backend.default_path(fp32.with_name(f"{plan.base}.{key}.onnx")),
                                      backend.name, images=plan.batch.images, parity_source=plan.batch.source,
                                      precision="int8", calibration=calib.images.numpy(),
                                      calibration_source=str(calib.path), int8_scope=scope,
                                      progress=plan.request.progress)
            except RuntimeUnavailable as exc:  # the quantizer is an extra of its own (NNCF): the rest still ships
                plan.skipped.append({"what": f"{backend.name} {key}", "reason": str(exc)})
                return
            self._keep_engine(engine, backend.name, key)

    def candidates(self) -> list[CandidateFile]:
        """What ``--precision auto`` times: :func:`~rexnet_deploy.bundle.auto.candidate_files` of this bundle."""
        return candidate_files(self.files, self.tmp)

    def time_candidates(self) -> dict[str, Any]:
        """``--precision auto``: every candidate timed at the deploy batch here; the fastest within the budget."""
        plan, request = self.plan, self.plan.request
        self.bar.set_postfix_str(f"timing candidates at batch {request.deploy_batch}")
        rows = measure_candidates(self.candidates(), plan.split, request.deploy_batch, threads=request.threads,
                                  eval_images=request.eval_images or None, progress=request.progress)
        for row in rows:  # paths as the bundle will hold them, not in the temporary folder
            row["path"] = Path(row["path"]).name
        return auto_summary(rows, request.deploy_batch, request.budget_points)

    def build_from_checkpoint(self, backend: Backend) -> None:
        """A backend's engines exported from the torch model (not from ONNX), each checked against torch.

        INT8 is calibrated on the same calibration set file as the ONNX INT8 files. Parity failures raise
        :class:`CheckFailed` like every other file's.
        """
        plan = self.plan
        source = plan.source
        for precision in plan.precisions:
            if precision not in backend.precisions:
                plan.skipped.append({"what": f"{backend.name} {precision}",
                                     "reason": f"{backend.name} builds {', '.join(backend.precisions)} only"})
        fp32_top1 = None
        for precision in _checkpoint_precisions(plan, backend):
            self.bar.set_postfix_str(f"{precision} {backend.name}")
            path = backend.default_path(self.tmp / f"{plan.base}.{precision}.onnx")  # named as its ONNX sibling
            calibration, extra = None, {}
            if precision == "int8":
                from ..quant import CalibrationSet

                calib = CalibrationSet.load(self.calibration_file())
                calib.check_usable_for(source.preprocess, source.checkpoint or source.model_name)
                calibration = calib.images
                # the record quantize_onnx writes for the ONNX INT8 files, so the two can be compared
                extra["calibration"] = {"path": str(calib.path), "manifest_sha256": calib.manifest_sha256,
                                        "dataset": calib.dataset, "num_images": len(calib)}
            fields = build_result(backend.name, backend.impl().build_from_model(
                source.model, path, input_size=source.input_size, precision=precision, calibration=calibration))
            fields = {**fields, **extra}
            write_manifest(path, {**plan.common, **fields})  # the runner reads its batch and input size
            with open_runner(path) as runner:
                candidate = runner.infer(plan.batch.images)
            parity = {**compare_logits(self.reference, candidate, precision), "reference": "torch",
                      "runtime": backend.name, "inputs": plan.batch.source}
            parity = judge_parity(parity, path.name, f"nothing was written; drop {backend.name} from --engines to "
                                                     f"export the rest", untrained=source.untrained)
            accuracy = self._accuracy(path)
            if accuracy and precision == "fp32":
                fp32_top1 = accuracy["top1"]
            elif accuracy and fp32_top1 is not None:
                drop = fp32_top1 - accuracy["top1"]
                accuracy = {**accuracy, "top1_drop_vs_fp32": drop,
                            "within_int8_max_drop": drop <= plan.request.int8_max_drop}
            self._keep(path, backend.name, precision, {**fields, "parity": parity}, accuracy)

    def write_summary(self) -> None:
        plan = self.plan
        split = plan.split
        bundle = {
            "kind": "bundle", **{k: plan.common[k] for k in (
                "model_name", "width", "input_size", "untrained", "checkpoint", "source_checkpoint_sha256",
                "checkpoint_metrics", "dataset", "parity_inputs", "preprocess", "classes")},
            "opset": plan.request.opset, "precisions": plan.precisions, "engines": plan.engines,
            "eval_images": min(plan.request.eval_images, len(split)) if split is not None else 0,
            "files": self.files, "skipped": plan.skipped, "tool_versions": tool_versions(),
            "calibration": str(self._calibration) if self._calibration else None,
        }
        if plan.request.recommend:
            bundle["precision_auto"] = self.time_candidates()
            bundle["recommended"] = next((c for c in bundle["precision_auto"]["candidates"]
                                          if c["name"] == bundle["precision_auto"]["recommended"]), None)
        write_json(self.tmp / BUNDLE_JSON, bundle)
        (self.tmp / "bundle.md").write_text(bundle_markdown(bundle))
        write_kit(self.tmp, bundle)


class _PixelRunner(Runner):
    """A uint8-input file evaluated on a split's normalised images: fed the pixels they came from."""

    def __init__(self, inner: Runner, contract: Preprocess) -> None:
        super().__init__(inner.precision)
        self.inner, self.contract, self.backend = inner, contract, inner.backend

    def infer(self, batch: np.ndarray) -> np.ndarray:
        from ..export.embed import pixels_of

        pixels = pixels_of(batch, self.contract)
        if pixels is None:
            raise UserError("the evaluation images are not pixels of the model's contract: drop --embed-preprocess")
        return self.inner.infer(pixels)


def export_bundle(request: BundleRequest) -> Path:
    """Export a ReXNet into a bundle folder; returns the folder (``bundle.json`` inside).

    INT8 needs trained weights and a dataset to calibrate on; it is skipped with a reason otherwise.
    When its top-1 falls more than ``int8_max_drop`` points below FP32, the quantize stage keeps the
    most sensitive units in float until it holds. Parity failures raise :class:`CheckFailed`.
    """
    plan = _resolve(request)
    onnx_count = len(plan.precisions) - ("int8" in plan.precisions) + (
        len(plan.int8_layouts()) if "int8" in plan.precisions else 0)
    own_int8 = sum(len(b.own_int8_variants()) for b in map(get_backend, plan.engines) if _builds_own_int8(plan, b))
    # an engine from ONNX takes one ONNX per precision; from the model, its precisions
    steps = onnx_count + own_int8 + sum(
        len(_checkpoint_precisions(plan, b)) if b.builds_from_checkpoint else len(plan.precisions)
        for b in map(get_backend, plan.engines))
    _remove_abandoned_tmp(plan.out_dir)
    with atomic_dir(plan.out_dir) as tmp, tqdm(total=steps, desc=f"export {plan.base}", unit="file",
                                               disable=not request.progress) as bar:
        (tmp / _PID_FILE).write_text(str(os.getpid()))
        writer = _Writer(plan, tmp, bar)
        writer.write_onnx_variants()
        writer.build_engines()
        writer.write_summary()
        (tmp / _PID_FILE).unlink()
    return plan.out_dir


def summary_rows(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per file (and per skipped item) for the terminal and Markdown tables."""
    rows = []
    for f in bundle["files"]:
        p = f["parity"]
        # every file in a bundle passed its check (a failure stops the export), but INT8 of random weights
        state = "ok" if p["passed"] else "not required (INT8 of random weights)"
        parity = f"{state}, max diff {p['max_abs_diff']:.1e}, top-1 {100 * p['top1_agreement']:.0f} %"
        if f.get("note"):  # what its backend says about the file (ExecuTorch: what XNNPACK took)
            parity += f"; {f['note']}"
        acc = f["accuracy"]
        rows.append({"file": f["file"], "format": f["backend"], "precision": f["variant"],
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
             f"- accuracy: top-1 on the first {bundle['eval_images']} images of {bundle['dataset'] or '—'} test"
             if bundle["eval_images"] else "- per-file accuracy: not measured (--eval-images 0)",
             "", markdown_table(summary_rows(bundle))]
    if bundle.get("precision_auto"):
        lines += ["", "## --precision auto", "", candidates_markdown(bundle["precision_auto"])]
    return "\n".join(lines)


def read_bundle(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / BUNDLE_JSON
    if not path.is_file():
        raise UserError(f"{out_dir} is not a bundle (no {BUNDLE_JSON}): run rexnet-deploy export")
    return json.loads(path.read_text())


__all__ = ["AUTO", "DEFAULT_DEPLOY_BATCH", "DEFAULT_MODEL", "DEFAULT_WIDTH", "PRECISIONS", "BundleRequest",
           "ExportSource", "bundle_markdown",
           "engines_available", "export_bundle", "load_source", "read_bundle", "summary_rows"]

