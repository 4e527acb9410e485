"""What more than one runtime module uses, so that no runtime module imports another.

The tool-wide cache folder and the key of a TensorRT timing cache (TensorRT's builds and ONNX Runtime's TensorRT
provider share both), the batch profile a GPU engine is built for by default, how a batch is split into chunks a
fixed profile takes, and ONNX Runtime's CPU Q/DQ layout (OpenVINO runs those files as they are). A runtime module
imports ``base`` and this module, never a sibling (tests/test_architecture.py).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from .base import TargetLayout

#: min, opt, max batch of the one optimization profile a GPU engine gets by default (opt clamped into min…max):
#: TensorRT's build and ONNX Runtime's TensorRT provider
DEFAULT_BATCHES = (1, 64, 256)

#: the Q/DQ layout of ONNX Runtime's CPU kernels; OpenVINO runs these files as they are
ORT_CPU_LAYOUT = TargetLayout(
    "ort-cpu", "uint8", False, True,
    "ONNX Runtime's x86 (VNNI) kernels run uint8 activations × int8 weights fast; int8 activations "
    "ran 2.9× slower than FP32 on this CPU")


def cache_root() -> Path:
    """Where rexnet-deploy keeps its caches: ``$XDG_CACHE_HOME/rexnet-deploy`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rexnet-deploy"


def gpu_slug(name: str) -> str:
    """A GPU name as a file-name part: ``NVIDIA H100 80GB HBM3`` → ``nvidia-h100-80gb-hbm3``."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "gpu"


def cache_key(facts: dict[str, str]) -> str:
    """TensorRT version, compute capability and GPU model: what a timing cache is valid for.

    The GPU name is part of it because GPUs of one capability (H100 PCIe/SXM, H200: all sm_90) refuse
    each other's caches, and with a shared key each build would overwrite the other GPU's file.
    """
    cc = facts["compute_capability"].replace(".", "")
    return f"tensorrt-{facts['tensorrt_version']}-sm{cc}-{gpu_slug(facts['gpu_name'])}"


def plan_chunks(n: int, min_batch: int, max_batch: int | None) -> list[tuple[int, int, int]]:
    """How a batch of ``n`` runs on a profile of ``min_batch``…``max_batch``: ``(start, stop, pad)`` per enqueue.

    Chunks of at most ``max_batch`` images; a chunk smaller than ``min_batch`` is padded with ``pad``
    images whose outputs are dropped. Callers (parity's 128 images, evaluation's 256) need not know
    the profile an engine was built with.
    """
    if n < 1:
        raise UserError("an empty batch: pass at least one image")
    step = max_batch or n
    return [(start, min(start + step, n), max(0, min_batch - (min(start + step, n) - start)))
            for start in range(0, n, step)]


def run_chunked(x: Any, min_batch: int, max_batch: int | None, enqueue: Any) -> Any:
    """``enqueue`` over the chunks :func:`plan_chunks` makes of tensor ``x``; padding's outputs dropped, rest joined.

    Padding is zeros: the network is in inference mode, so each image's logits depend on that image only.
    """
    import torch

    plan = plan_chunks(x.shape[0], min_batch, max_batch)
    if len(plan) == 1 and not plan[0][2]:
        return enqueue(x)
    parts = []
    for start, stop, pad in plan:
        part = x[start:stop]
        if pad:
            part = torch.cat([part, part.new_zeros((pad, *part.shape[1:]))])
        parts.append(enqueue(part)[:stop - start])
    return torch.cat(parts)
