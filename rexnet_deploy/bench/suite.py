"""Benchmark suites: which artifacts to run, grouped by model, and how to measure them.

A suite is a YAML file (schema in bench/suites/README.md)::

    name: fmnist-cpu                # default: the file's stem
    dataset: fashion_mnist          # evaluation data, preprocessed as in training
    split: test
    eval_images: null               # null: the whole split
    batches: [1, 8, 32, 64]         # batch sweep for the speed measurements
    threads: 2                      # CPU threads for every runtime, recorded in the results
    timing: {warmup_steps: 5, warmup_seconds: 0.2, steps: 200, min_steps: 10, max_seconds: 5}
    vars: {bundle: export/rexnet_tiny_cifar-0.5}   # ${bundle} in paths; --set bundle=... overrides
    models:
      - name: tiny-cifar-0.5
        reference: torch-fp32       # default: the group's torch eager (no compile, NCHW) row
        artifacts:
          - {name: torch-fp32, checkpoint: runs/tiny/best.pt}
          - {name: ort-fp32, onnx: "${bundle}/model.onnx"}
          - {name: trt-int8, engine: "${bundle}/model.int8.engine", optional: true}

Relative paths are taken from the folder the command runs in (the project root).
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from .timing import Timing

KINDS = ("checkpoint", "onnx", "engine")
ROW_TAGS = {"checkpoint": "torch", "onnx": "onnx", "engine": "engine"}  # default row names: TAG:FILE_STEM
DEVICES = {"checkpoint": ("cpu", "cuda"), "onnx": ("cpu", "cuda", "tensorrt"), "engine": ("cpu", "cuda")}
SUITES_DIR = Path("bench/suites")

_ARTIFACT_KEYS = {"name", *KINDS, "device", "precision", "compile", "channels_last", "optional"}
_GROUP_KEYS = {"name", "reference", "artifacts"}
_SUITE_KEYS = {"name", "description", "dataset", "split", "data_dir", "eval_images", "eval_batch", "batches",
               "headline_batch", "threads", "timing", "vars", "models"}


@dataclass(frozen=True)
class ArtifactSpec:
    """One row of the benchmark: a file and the runtime that runs it."""

    name: str
    kind: str  # "checkpoint" (torch), "onnx" (ONNX Runtime) or "engine" (runtime.open_runner)
    path: Path
    device: str = "cpu"
    precision: str | None = None  # None: read from the artifact (manifest, ONNX graph)
    compile: bool = False
    channels_last: bool = False
    optional: bool = False  # a missing file gives a "skipped" row instead of an error

    @property
    def is_torch_eager(self) -> bool:
        return self.kind == "checkpoint" and not self.compile and not self.channels_last

    @property
    def format(self) -> str:
        """What runs it, in words for the table."""
        if self.kind == "checkpoint":
            mode = "torch compile" if self.compile else "torch eager"
            return f"{mode}{' channels-last' if self.channels_last else ''} ({self.device})"
        if self.kind == "onnx":
            return f"onnxruntime ({self.device})"
        suffix = self.path.suffix.lower()
        if suffix == ".xml":
            return "openvino"
        if suffix in (".engine", ".plan"):
            return "tensorrt"
        return "engine"


@dataclass(frozen=True)
class ModelGroup:
    """Artifacts of one model; ratios are taken against the group's reference row."""

    name: str
    artifacts: tuple[ArtifactSpec, ...]
    reference: str | None = None

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
    device = str(entry.get("device", "cpu"))
    if device not in DEVICES[kind]:
        raise UserError(f"{source}: {where} has device {device!r}; a {kind} runs on {', '.join(DEVICES[kind])}")
    if kind != "checkpoint" and (entry.get("compile") or entry.get("channels_last")):
        raise UserError(f"{source}: {where}: compile/channels_last apply to checkpoints (torch) only")
    name = str(entry.get("name") or f"{ROW_TAGS[kind]}:{path.stem}")
    return ArtifactSpec(name=name, kind=kind, path=path, device=device, precision=entry.get("precision"),
                        compile=bool(entry.get("compile")), channels_last=bool(entry.get("channels_last")),
                        optional=bool(entry.get("optional")))


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or a suite name looked up as bench/suites/NAME.yaml."""
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
        groups.append(ModelGroup(name=str(g.get("name") or f"model{i}"), artifacts=arts, reference=g.get("reference")))
    try:
        timing = Timing(**_check_keys(data.get("timing") or {}, {f.name for f in dataclasses.fields(Timing)},
                                      "timing", source))
        settings = {k: data[k] for k in ("dataset", "split", "data_dir", "eval_images", "eval_batch", "headline_batch",
                                         "threads") if data.get(k) is not None}
        return Suite(groups=tuple(groups), name=str(data.get("name") or path.stem), timing=timing,
                     batches=tuple(int(b) for b in data.get("batches") or Suite.batches), path=str(path), **settings)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: a setting has the wrong type ({exc}): see bench/suites/README.md") from None


def suite_from_paths(*, checkpoints: list[str] = (), onnx: list[str] = (), engines: list[str] = (),
                     device: str = "cpu", compile: bool = False, channels_last: bool = False,
                     reference: str | None = None, group: str = "cli", **settings: Any) -> Suite:
    """A one-group suite from artifact paths given on the command line (or by a pipeline).

    Rows are named ``torch:STEM``, ``onnx:STEM`` and ``engine:STEM``; ``reference`` picks one by name.
    """
    if device not in DEVICES["onnx"]:
        raise UserError(f"unknown --device {device!r}: choose cpu, cuda or tensorrt")
    specs: list[ArtifactSpec] = []
    for kind, paths in (("checkpoint", checkpoints), ("onnx", onnx), ("engine", engines)):
        for p in paths:
            # ONNX Runtime takes the provider as given; torch and engines run on the GPU for cuda/tensorrt
            dev = device if kind == "onnx" or device == "cpu" else "cuda"
            name = base = f"{ROW_TAGS[kind]}:{Path(p).stem}"
            copies = 1
            while name in {s.name for s in specs}:  # the same file twice (e.g. to see run-to-run noise)
                copies += 1
                name = f"{base}#{copies}"
            torch_row = kind == "checkpoint"
            specs.append(ArtifactSpec(name=name, kind=kind, path=Path(p), device=dev, compile=compile and torch_row,
                                      channels_last=channels_last and torch_row))
    return Suite(groups=(ModelGroup(group, tuple(specs), reference),), name=group,
                 **{k: v for k, v in settings.items() if v is not None})
