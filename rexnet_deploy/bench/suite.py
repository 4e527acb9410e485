"""Benchmark suites: which artifacts to run, grouped by model, and how to measure them.

A suite is a YAML file (schema in rexnet_deploy/bench/suites/README.md)::

    name: fmnist-cpu                # default: the file's stem
    dataset: fashion_mnist          # evaluation data, preprocessed as in training
    split: test
    eval_images: null               # null: the whole split
    batches: [1, 8, 32, 64]         # batch sweep for the speed measurements
    threads: 2                      # CPU threads for every runtime, recorded in the results
    timing: {warmup_steps: 5, warmup_seconds: 0.2, steps: 200, min_steps: 10, max_seconds: 5, rounds: 5}
    vars: {bundle: export/rexnet_tiny_cifar-0.5}   # ${bundle} in paths; --set bundle=... overrides
    models:
      - name: tiny-cifar-0.5
        reference: torch-fp32       # default: the group's torch eager (no compile, NCHW) row
        artifacts:
          - {name: torch-fp32, checkpoint: runs/tiny/best.pt}
          - {name: ort-fp32, onnx: "${bundle}/model.onnx"}
          - {name: trt-int8, engine: "${bundle}/model.int8.engine", optional: true}
          - {name: openvino-bf16, engine: "${bundle}/model.fp32.openvino.xml", mode: bf16}

A row's ``mode`` is a runner mode its backend declares in ``RUNNER_MODES`` (OpenVINO: ``bf16``,
``defaults``; torch: ``bf16``). A group's ``preprocess`` (size, mean, std) makes it a speed-only group: its
rows see ``eval_images`` (default 64) of the suite's images resized to that size and normalised that way,
so a 224×224 model can be timed beside 32×32 ones (its top-1 on those images means nothing).

Relative paths are taken from the folder the command runs in (the project root).
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..backends import BACKENDS, ROLES, Backend, backend_for
from ..data import ImageDataset, Preprocess
from ..errors import UserError
from .timing import Timing

KINDS = ROLES  # a suite row names its file by role: checkpoint (torch), onnx (run as it is) or engine
ROW_TAGS = {"checkpoint": "torch", "onnx": "onnx", "engine": "engine"}  # default row names: TAG:FILE_STEM
SUITES_DIR = Path(__file__).parent / "suites"  # package data, found from any folder

_ARTIFACT_KEYS = {"name", *KINDS, "device", "precision", "compile", "channels_last", "optional", "mode"}
_GROUP_KEYS = {"name", "reference", "artifacts", "preprocess", "eval_images"}
SPEED_ONLY_IMAGES = 64  # images a speed-only group is evaluated on and times with (repeated to fill a batch)
_SUITE_KEYS = {"name", "description", "dataset", "split", "data_dir", "eval_images", "eval_batch", "batches",
               "headline_batch", "threads", "timing", "vars", "models"}


@dataclass(frozen=True)
class ArtifactSpec:
    """One row of the benchmark: a file and the runtime that runs it."""

    name: str
    kind: str  # one of KINDS; the backend is found by the file's suffix in the backend table
    path: Path
    device: str = "cpu"  # one of the backend's devices
    precision: str | None = None  # None: read from the artifact (manifest, ONNX graph)
    compile: bool = False
    channels_last: bool = False
    optional: bool = False  # a missing file gives a "skipped" row instead of an error
    mode: str | None = None  # a runner mode of the backend (RUNNER_MODES): bf16, defaults (the peer rows)

    @property
    def is_torch_eager(self) -> bool:
        return self.kind == "checkpoint" and not self.compile and not self.channels_last and not self.mode

    @property
    def backend(self) -> str:
        return backend_for(self.path, self.kind).name

    @property
    def format(self) -> str:
        """What runs it, in words for the table."""
        mode = f" [{self.mode}]" if self.mode else ""
        if self.kind == "checkpoint":
            how = "compile" if self.compile else "eager"
            return f"{self.backend} {how}{' channels-last' if self.channels_last else ''} ({self.device}){mode}"
        if self.kind == "onnx":
            return f"{self.backend} ({self.device}){mode}"
        return self.backend + mode  # an engine runs where it was built for


@dataclass(frozen=True)
class ModelGroup:
    """Artifacts of one model; ratios are taken against the group's reference row."""

    name: str
    artifacts: tuple[ArtifactSpec, ...]
    reference: str | None = None
    preprocess: Preprocess | None = None  # set: a speed-only group, see the module docstring
    eval_images: int | None = None  # a speed-only group's image count (default SPEED_ONLY_IMAGES)

    def reference_name(self) -> str:
        """The explicit reference, else the torch eager FP32 row, else the first row."""
        if self.reference:
            return self.reference
        eager = [a for a in self.artifacts if a.is_torch_eager]
        return (eager or list(self.artifacts))[0].name


@dataclass(frozen=True)
class Suite:
    groups: tuple[ModelGroup, ...]
    name: str = "bench"
    dataset: str = "fashion_mnist"
    split: str = "test"
    data_dir: str | None = None
    eval_images: int | None = None
    eval_batch: int = 256
    batches: tuple[int, ...] = (1, 8, 32, 64)
    headline_batch: int | None = None
    threads: int = 2
    timing: Timing = field(default_factory=Timing)
    path: str | None = None  # the YAML file it came from

    def __post_init__(self) -> None:
        where = f"suite {self.path or self.name}"
        if not self.groups:
            raise UserError(f"{where} lists no artifacts: add models[].artifacts or pass --checkpoint/--onnx/--engine")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise UserError(f"{where}: batches must be positive integers, got {list(self.batches)}")
        if self.headline_batch is not None and self.headline_batch not in self.batches:
            raise UserError(f"{where}: headline_batch {self.headline_batch} is not in batches {list(self.batches)}")
        if self.threads < 1:
            raise UserError(f"{where}: threads must be ≥ 1, got {self.threads}")
        if self.eval_images is not None and self.eval_images < 1:
            raise UserError(f"{where}: eval_images must be ≥ 1 or null (whole split), got {self.eval_images}")
        group_names = [g.name for g in self.groups]
        if len(set(group_names)) != len(group_names):
            raise UserError(f"{where}: model group names repeat ({group_names}): give each a unique name")
        for g in self.groups:
            if not g.artifacts:
                raise UserError(f"{where}: model group {g.name} lists no artifacts: add some or remove the group")
            names = [a.name for a in g.artifacts]
            if len(set(names)) != len(names):
                raise UserError(f"{where}: artifact names repeat in group {g.name} ({names}): make them unique")
            if g.reference_name() not in names:
                raise UserError(f"{where}: reference {g.reference!r} of group {g.name} is not one of {names}")

    @property
    def table_batch(self) -> int:
        """The batch size the one-row-per-artifact table shows: headline_batch, else 64, else the largest."""
        if self.headline_batch is not None:
            return self.headline_batch
        return 64 if 64 in self.batches else max(self.batches)

    def artifacts(self) -> list[tuple[ModelGroup, ArtifactSpec]]:
        return [(g, a) for g in self.groups for a in g.artifacts]

    def dataset_for(self, group: str, dataset: ImageDataset) -> ImageDataset:
        """The images a group's rows see: the suite's dataset, or a speed-only group's resized copy of part of it."""
        found = next((g for g in self.groups if g.name == group), None)
        if found is None or found.preprocess is None:
            return dataset
        return _resized(dataset, found.preprocess, found.eval_images or SPEED_ONLY_IMAGES)

    def check_files(self) -> None:
        """Refuse a missing required artifact before any time is spent measuring the others."""
        for group, spec in self.artifacts():
            if not spec.optional and not spec.path.exists():
                raise UserError(f"{group.name}/{spec.name}: {spec.path} does not exist: produce it first "
                                f"(train/export/quantize), fix the path, or mark the entry `optional: true`")

    def replace(self, **changes: Any) -> "Suite":
        """A copy with some settings changed (command-line overrides); ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "dataset": self.dataset, "split": self.split,
                "eval_images": self.eval_images, "eval_batch": self.eval_batch, "batches": list(self.batches),
                "table_batch": self.table_batch, "threads": self.threads, "timing": self.timing.to_dict()}


_RESIZED: OrderedDict[tuple, tuple[ImageDataset, ImageDataset]] = OrderedDict()


def _resized(dataset: ImageDataset, preprocess: Preprocess, count: int) -> ImageDataset:
    """The first ``count`` images of ``dataset`` brought to ``preprocess.size`` by that contract's pixel stage (its
    resize rule and interpolation), normalised by it.

    Kept for the few groups of one run (keyed by the dataset object, which the entry holds alive), so each row
    of a group does not resize again.
    """
    import torch

    key = (id(dataset), preprocess, count)
    if key not in _RESIZED:
        pixels = preprocess.pixels_batch(dataset.images[:count].permute(0, 2, 3, 1).numpy())
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        _RESIZED[key] = (dataset, ImageDataset(dataset.name, dataset.split, images, dataset.labels[:count].clone(),
                                               dataset.classes, preprocess))
        while len(_RESIZED) > 4:
            _RESIZED.popitem(last=False)
    return _RESIZED[key][1]


def _check_keys(obj: Any, allowed: set[str], where: str, source: str) -> dict:
    if not isinstance(obj, dict):
        raise UserError(f"{source}: {where} must be a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise UserError(f"{source}: unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})")
    return obj


def _substitute(value: str, variables: dict[str, str], where: str, source: str) -> str:
    try:
        return string.Template(value).substitute(variables)
    except KeyError as exc:
        raise UserError(f"{source}: {where} uses ${{{exc.args[0]}}}, which is not in vars: add it to vars "
                        f"or pass --set {exc.args[0]}=VALUE") from None
    except ValueError:
        raise UserError(f"{source}: {where} has a malformed ${{...}} in {value!r}") from None


def _artifact(entry: Any, variables: dict[str, str], where: str, source: str) -> ArtifactSpec:
    entry = _check_keys(entry, _ARTIFACT_KEYS, where, source)
    kinds = [k for k in KINDS if k in entry]
    if len(kinds) != 1:
        raise UserError(f"{source}: {where} needs exactly one of checkpoint/onnx/engine, got {kinds or 'none'}")
    kind = kinds[0]
    path = Path(_substitute(str(entry[kind]), variables, where, source))
    try:
        backend = backend_for(path, kind)
    except UserError as exc:
        raise UserError(f"{source}: {where}: {exc}") from None
    device = str(entry.get("device", backend.devices[0]))
    if device not in backend.devices:
        raise UserError(f"{source}: {where} has device {device!r}; {backend.name} runs on {', '.join(backend.devices)}")
    if kind != "checkpoint" and (entry.get("compile") or entry.get("channels_last")):
        raise UserError(f"{source}: {where}: compile/channels_last apply to checkpoints (torch) only")
    mode = _mode(entry.get("mode"), backend, where, source)
    name = str(entry.get("name") or f"{ROW_TAGS[kind]}:{path.stem}")
    # a mode that fixes the arithmetic (bf16) names the row's precision, also on a row skipped before it opens
    precision = entry.get("precision") or (backend.runner_modes().get(mode) if mode else None)
    return ArtifactSpec(name=name, kind=kind, path=path, device=device, precision=precision,
                        compile=bool(entry.get("compile")), channels_last=bool(entry.get("channels_last")),
                        optional=bool(entry.get("optional")), mode=mode)


def _mode(value: Any, backend: Backend, where: str, source: str) -> str | None:
    if value is None:
        return None
    modes = backend.runner_modes()
    if str(value) not in modes:
        known = f"modes {', '.join(modes)}" if modes else "no modes"
        raise UserError(f"{source}: {where} has mode {value!r}; {backend.name} runners take {known}: fix or drop it")
    return str(value)


def _group_preprocess(group: dict, where: str, source: str) -> tuple[Preprocess | None, int | None]:
    """A speed-only group's ``preprocess`` and ``eval_images``, checked."""
    raw, count = group.get("preprocess"), group.get("eval_images")
    if raw is None:
        if count is not None:
            raise UserError(f"{source}: {where} sets eval_images without preprocess: eval_images of a group applies "
                            f"to speed-only groups (with preprocess); use the suite's eval_images otherwise")
        return None, None
    try:
        _check_keys(raw, set(Preprocess(1, (0, 0, 0), (1, 1, 1)).to_dict()), f"{where}.preprocess", source)
        preprocess = Preprocess.from_dict(raw)
        if preprocess.size < 1 or len(preprocess.mean) != 3 or len(preprocess.std) != 3:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{source}: {where}.preprocess needs size (a positive integer) and mean, std (3 numbers "
                        f"each), got {raw!r}") from None
    if count is not None and (not isinstance(count, int) or count < 1):
        raise UserError(f"{source}: {where}.eval_images must be a positive integer, got {count!r}")
    return preprocess, count


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a suite name looked up as rexnet_deploy/bench/suites/NAME.yaml."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    for candidate in (SUITES_DIR / f"{name_or_path}.yaml", SUITES_DIR / f"{name_or_path}.yml"):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SUITES_DIR.glob("*.y*ml")) if SUITES_DIR.is_dir() else []
    raise UserError(f"suite {name_or_path} not found (neither a file nor {SUITES_DIR}/{name_or_path}.yaml); "
                    f"known suites: {', '.join(known) or 'none here'}")


def load_suite(name_or_path: str | Path, variables: dict[str, str] | None = None) -> Suite:
    """Read and check a suite file; ``variables`` override the file's ``vars``."""
    path = resolve_suite_path(name_or_path)
    source = f"suite {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{source} is not valid YAML{line}: fix the file") from None
    data = _check_keys(data, _SUITE_KEYS, "the top level", source)
    merged = {str(k): str(v) for k, v in (data.get("vars") or {}).items()}
    merged.update(variables or {})
    groups = []
    for i, g in enumerate(data.get("models") or []):
        g = _check_keys(g, _GROUP_KEYS, f"models[{i}]", source)
        arts = tuple(_artifact(a, merged, f"models[{i}].artifacts[{j}]", source)
                     for j, a in enumerate(g.get("artifacts") or []))
        preprocess, count = _group_preprocess(g, f"models[{i}]", source)
        groups.append(ModelGroup(name=str(g.get("name") or f"model{i}"), artifacts=arts, reference=g.get("reference"),
                                 preprocess=preprocess, eval_images=count))
    try:
        timing = Timing(**_check_keys(data.get("timing") or {}, {f.name for f in dataclasses.fields(Timing)},
                                      "timing", source))
        settings = {k: data[k] for k in ("dataset", "split", "data_dir", "eval_images", "eval_batch", "headline_batch",
                                         "threads") if data.get(k) is not None}
        return Suite(groups=tuple(groups), name=str(data.get("name") or path.stem), timing=timing,
                     batches=tuple(int(b) for b in data.get("batches") or Suite.batches), path=str(path), **settings)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: a setting has the wrong type ({exc}): see rexnet_deploy/bench/suites/README.md"
                        ) from None


#: a dot-separated part of a file name that starts its precision (rexnet-0.5.int8-nncf.openvino.xml)
_PRECISION_PART = re.compile(r"^(fp32|fp16|bf16|int8)(\b|_|-|$)")


def model_named_by(path: str | Path) -> str:
    """The model a file's name names: the name up to its precision part (``rexnet-0.5.fp32.pte`` → ``rexnet-0.5``,
    as the bundle names its files), else without its suffix and backend tag (``tiny.openvino.xml`` → ``tiny``)."""
    name = Path(path).name
    parts = name.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if _PRECISION_PART.match(part.lower()):
            return ".".join(parts[:i])
    stem = Path(name).stem
    for backend in BACKENDS.values():
        if backend.file_tag and stem.endswith(backend.file_tag):
            stem = stem[:-len(backend.file_tag)]
    return stem or name


def suite_from_paths(*, checkpoints: list[str] = (), onnx: list[str] = (), engines: list[str] = (),
                     device: str = "cpu", compile: bool = False, channels_last: bool = False,
                     reference: str | None = None, group: str | None = None, **settings: Any) -> Suite:
    """A one-group suite from artifact paths given on the command line (or by a pipeline).

    Rows are named ``torch:STEM``, ``onnx:STEM`` and ``engine:STEM``; ``reference`` picks one by name. ``group``
    (the model the rows belong to) defaults to the model the first file names (:func:`model_named_by`).
    ``device`` is any backend's device; each row runs on it where its backend can, else on the GPU for a GPU
    device, else on its backend's own (an engine bound to one device runs there).
    """
    known = list(dict.fromkeys(d for b in BACKENDS.values() for d in b.devices))
    if device not in known:
        raise UserError(f"unknown --device {device!r}: choose {', '.join(known)}")
    specs: list[ArtifactSpec] = []
    for kind, paths in (("checkpoint", checkpoints), ("onnx", onnx), ("engine", engines)):
        for p in paths:
            dev = backend_for(p, kind).device_for(device)
            name = base = f"{ROW_TAGS[kind]}:{Path(p).stem}"
            copies = 1
            while name in {s.name for s in specs}:  # the same file twice (e.g. to see run-to-run noise)
                copies += 1
                name = f"{base}#{copies}"
            torch_row = kind == "checkpoint"
            specs.append(ArtifactSpec(name=name, kind=kind, path=Path(p), device=dev, compile=compile and torch_row,
                                      channels_last=channels_last and torch_row))
    if not specs:
        raise UserError("nothing to bench: pass at least one --checkpoint/--onnx/--engine PATH")
    group = group or model_named_by(specs[0].path)
    return Suite(groups=(ModelGroup(group, tuple(specs), reference),), name=group,
                 **{k: v for k, v in settings.items() if v is not None})
