"""Classify the user's image files with any exported artifact: :func:`predict_images`.

The artifact's own record (:func:`~rexnet_deploy.backends.read_artifact`) gives the preprocessing contract
and the class names; its backend's runner (the one bench and parity use) computes the logits. An image that
does not decode becomes that file's error row and the others are still classified.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..artifacts import atomic_path
from ..backends import open_runner, read_artifact
from ..errors import UserError, first_line
from ..preprocess import IMAGE_EXTENSIONS, Preprocess, find_image_files

DEFAULT_BATCH = 32
DEFAULT_TOP_K = 5
OUT_FORMATS = (".json", ".csv")


@dataclass
class PredictRequest:
    """Which artifact classifies which images, and how."""

    artifact: str | Path
    inputs: Sequence[str]  # image files, folders (searched recursively) or glob patterns
    top_k: int = DEFAULT_TOP_K
    batch_size: int = DEFAULT_BATCH
    threads: int | None = None
    device: str | None = None
    progress: bool = True


@dataclass
class Predictions:
    """One row per image: ``image``, ``top1``, ``probability``, ``topk`` [(class, probability)], ``error``."""

    artifact: Path
    backend: str
    preprocess: Preprocess
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r["error"])


def find_images(inputs: Sequence[str]) -> list[Path]:
    """The image files ``inputs`` name (:func:`~rexnet_deploy.preprocess.find_image_files`); one line when an input
    is missing or no image is found."""
    try:
        found = find_image_files(inputs)
    except FileNotFoundError as exc:
        raise UserError(f"{exc}: pass image files, folders or glob patterns") from None
    if not found:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(inputs)}: pass image files, "
                        f"folders holding them or a glob pattern")
    return found


def _decoded(paths: Sequence[Path], preprocess: Preprocess) -> Iterator[tuple[Path, np.ndarray | None, str | None]]:
    for path in paths:
        try:
            yield path, preprocess.pixels(Preprocess.load_image(str(path))), None
        except Exception as exc:  # Pillow raises many types for a file that is not an image
            yield path, None, f"cannot be decoded ({first_line(exc, 100)})"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predict_images(request: PredictRequest) -> Predictions:
    """Top-k classes with probabilities for every image ``request.inputs`` names."""
    if request.top_k < 1 or request.batch_size < 1:
        raise UserError("--top-k and --batch-size must be at least 1")
    record = read_artifact(request.artifact)
    preprocess = record.require_preprocess()
    classes = record.class_names()
    paths = find_images(request.inputs)
    result = Predictions(Path(request.artifact), record.backend.name, preprocess)
    with open_runner(request.artifact, device=request.device, threads=request.threads) as runner, \
            tqdm(total=len(paths), desc="predict", unit="img", disable=not request.progress) as bar:
        pending: list[tuple[Path, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            batch = preprocess.to_input(np.stack([pixels for _, pixels in pending]))
            probs = softmax(runner.infer(batch).astype(np.float64))
            for (path, _), p in zip(pending, probs):
                order = np.argsort(-p)[:request.top_k]
                top = [(classes[i] if i < len(classes) else str(i), float(p[i])) for i in order]
                result.rows.append({"image": str(path), "top1": top[0][0], "probability": top[0][1], "topk": top,
                                    "error": None})
            bar.update(len(pending))
            pending.clear()

        for path, pixels, error in _decoded(paths, preprocess):
            if error:
                result.rows.append({"image": str(path), "top1": None, "probability": None, "topk": [],
                                    "error": error})
                bar.update()
                continue
            pending.append((path, pixels))
            if len(pending) == request.batch_size:
                flush()
        flush()
    order = {str(p): i for i, p in enumerate(paths)}
    result.rows.sort(key=lambda r: order[r["image"]])
    return result


def write_predictions(predictions: Predictions, out: str | Path) -> Path:
    """``--out``: JSON (the artifact, its contract and every row) or CSV (one row per image), by suffix."""
    out = Path(out)
    if out.suffix.lower() not in OUT_FORMATS:
        raise UserError(f"--out {out} must end in {' or '.join(OUT_FORMATS)}")
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".json":
            tmp.write_text(json.dumps({"artifact": str(predictions.artifact), "backend": predictions.backend,
                                       "preprocess": predictions.preprocess.to_dict(), "rows": predictions.rows},
                                      indent=2) + "\n")
        else:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                k = max((len(r["topk"]) for r in predictions.rows), default=0)
                writer.writerow(["image", "top1", "probability", *[f"top{i + 1}" for i in range(1, k)], "error"])
                for r in predictions.rows:
                    rest = [f"{c}:{p:.6f}" for c, p in r["topk"][1:]]
                    writer.writerow([r["image"], r["top1"] or "", "" if r["probability"] is None else
                                     f"{r['probability']:.6f}", *rest, *[""] * (k - 1 - len(rest)), r["error"] or ""])
    return out
