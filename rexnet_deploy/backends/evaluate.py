"""Top-1/top-5 of any runner on a dataset split (the same preprocessing as training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .base import Runner

if TYPE_CHECKING:
    from ..data import DataSplit


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many rows have their label among the k highest logits, for each k."""
    order = np.argsort(-logits, axis=1)
    return {k: int((order[:, :k] == labels[:, None]).any(axis=1).sum()) for k in ks}


def evaluate(runner: Runner, dataset: DataSplit, batch_size: int = 256, limit: int | None = None,
             progress: bool = True) -> dict[str, float]:
    """``{"top1", "top5", "num_images"}`` in percent, over the first ``limit`` images (all by default)."""
    correct = {1: 0, 5: 0}
    seen = 0
    total = len(dataset) if limit is None else min(limit, len(dataset))
    with tqdm(total=total, desc=f"eval {runner.backend}", unit="img", disable=not progress, leave=False) as bar:
        for images, labels in dataset.batches(batch_size, limit):
            logits = runner.infer(images.numpy())
            for k, v in topk_correct(logits, labels.numpy(), (1, min(5, logits.shape[1]))).items():
                correct[1 if k == 1 else 5] += v
            seen += len(labels)
            bar.update(len(labels))
    return {"top1": 100.0 * correct[1] / seen, "top5": 100.0 * correct[5] / seen, "num_images": seen}
