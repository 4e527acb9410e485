"""What an artifact records, read one way for every kind of file: :func:`read_artifact`.

A checkpoint, an ONNX file, an OpenVINO IR, an ExecuTorch program or a TensorRT engine records the model,
its width, its classes, the preprocessing contract (:class:`~rexnet_deploy.preprocess.Preprocess`), its
precision, its measured accuracy and its provenance. Some of that lives inside the file (a checkpoint's
metadata, ONNX ``metadata_props``: the backend module's ``recorded_metadata(path)``), all of it in the JSON
manifest beside the file; the manifest wins where both say something. ``inspect``, ``predict``, bench, the
quantize stage and the bundle read artifacts through this module only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import manifest_path, read_manifest_if_any
from ..errors import UserError, first_line
from ..preprocess import Preprocess
from .base import Backend

if TYPE_CHECKING:
    from ..data import DatasetSpec

_FIX = "re-export it with `rexnet-deploy export --checkpoint CKPT`"


@dataclass
class ArtifactRecord:
    """Everything one artifact file records; ``meta`` is the merged raw record (manifest over in-file)."""

    path: Path
    backend: Backend
    meta: dict[str, Any] = field(default_factory=dict)
    has_manifest: bool = False

    @property
    def model_name(self) -> str | None:
        return self.meta.get("model_name")

    @property
    def width(self) -> float | None:
        width = self.meta.get("width")
        return float(width) if width not in (None, "") else None

    @property
    def num_classes(self) -> int | None:
        n = self.meta.get("num_classes")
        if n in (None, ""):
            return len(self.classes) if self.classes else None
        return int(n)

    @property
    def classes(self) -> list[str] | None:
        classes = self.meta.get("classes")
        return [str(c) for c in classes] if isinstance(classes, (list, tuple)) and classes else None

    @property
    def precision(self) -> str:
        if self.meta.get("precision"):
            return str(self.meta["precision"])
        return "fp32" if self.backend.role == "checkpoint" else "unknown"

    @property
    def accuracy(self) -> dict[str, Any] | None:
        found = self.meta.get("accuracy")
        return found if isinstance(found, dict) else None

    @property
    def untrained(self) -> bool:
        return bool(self.meta.get("untrained"))

    @property
    def dataset_spec(self) -> DatasetSpec | None:
        from ..data import recorded_spec  # the data layer imports torch: not for a bare read of a manifest

        try:
            return recorded_spec(self.meta, str(self.path))
        except UserError:
            return None

    @property
    def preprocess(self) -> Preprocess | None:
        """The preprocessing contract the file records (None when it records none); an unreadable one is refused."""
        raw = self.meta.get("preprocess")
        if not isinstance(raw, dict) or "contract_version" not in raw:
            # none, or a record older than the contract: a built-in dataset's preprocessing is fixed by its name,
            # and an older ImageFolder record kept crop_pct/interpolation beside it
            spec = self.dataset_spec
            if spec is not None and (raw is None or not spec.is_folder):
                return spec.preprocess
            if isinstance(raw, dict):
                raw = {"crop_pct": self.meta.get("crop_pct", 0.875),
                       "interpolation": self.meta.get("interpolation", "bicubic"), **raw}
        if raw is None:
            return None
        try:
            return Preprocess.from_dict(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{self.path} records an unreadable preprocessing ({first_line(exc, 80)}): {_FIX}") \
                from None

    def require_preprocess(self) -> Preprocess:
        """The contract, or one line naming the file and the fix when it records none."""
        found = self.preprocess
        if found is None:
            raise UserError(f"{self.path} records no preprocessing (no `preprocess` in {manifest_path(self.path).name}"
                            f" or in the file): {_FIX}, or pass a file rexnet-deploy wrote")
        return found

    def class_names(self) -> list[str]:
        """The class names, else ``0 … N-1`` when the file records only a count (a foreign checkpoint)."""
        if self.classes:
            return self.classes
        return [str(i) for i in range(self.num_classes or 0)]

    def summary(self) -> dict[str, Any]:
        """The facts ``inspect`` prints, in one flat record."""
        pre = self.preprocess
        acc = self.accuracy or (self.meta.get("metrics") if isinstance(self.meta.get("metrics"), dict) else None)
        spec = self.dataset_spec
        return {
            "file": str(self.path), "backend": self.backend.name, "model": self.model_name, "width": self.width,
            "precision": self.precision, "num_classes": self.num_classes,
            "classes": ", ".join(self.classes) if self.classes else None,
            "preprocess": pre.describe() if pre is not None else None,
            "dataset": spec.describe() if spec is not None else self.meta.get("dataset"),
            "accuracy": _accuracy_words(acc), "untrained": self.untrained,
            "source checkpoint sha256": self.meta.get("source_checkpoint_sha256") or None,
            "built on": (self.meta.get("built_on") or {}).get("cpu") if isinstance(
                self.meta.get("built_on"), dict) else None,
            "manifest": manifest_path(self.path).name if self.has_manifest else None,
        }


def _accuracy_words(acc: dict[str, Any] | None) -> str | None:
    if not acc:
        return None
    top1 = acc.get("top1", acc.get("val_top1", acc.get("best_val_top1")))
    if top1 is None:
        return None
    where = f" on {acc['num_images']} images of {acc['split']}" if acc.get("num_images") and acc.get("split") else ""
    return f"top-1 {float(top1):.2f} %{where}"


def read_artifact(path: str | Path, role: str | None = None) -> ArtifactRecord:
    """What ``path`` records: its backend (by suffix, through the table), in-file metadata and manifest.

    A missing file or an unknown suffix is one line, and so is a file whose backend cannot read it when no
    manifest stands beside it; with a manifest, that is what the file records (its runner reports the file
    itself when it is opened).
    """
    from . import backend_for

    path = Path(path)
    backend = backend_for(path, role)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the path")
    manifest = read_manifest_if_any(path)
    inside: dict[str, Any] = {}
    reader = getattr(backend.impl(), "recorded_metadata", None)
    if reader is not None:
        try:
            inside = reader(path)
        except Exception as exc:  # libraries raise many types for a foreign or truncated file
            if not manifest:
                raise UserError(f"{path} is not a readable {backend.name} file ({first_line(exc, 100)}): pass a "
                                f"file rexnet-deploy wrote") from None
    return ArtifactRecord(path, backend, {**inside, **manifest}, has_manifest=bool(manifest))
