"""Facts about the machine a benchmark ran on, recorded beside every result."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

from ..artifacts import tool_versions
from ..hardware import cpu_facts


def gpu_facts() -> list[dict]:
    """Name, compute capability and memory of each visible CUDA GPU, plus the driver version."""
    import torch

    if not torch.cuda.is_available():
        return []
    driver = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            driver = None
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        gpus.append({"name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gb": round(props.total_memory / 2**30, 1), "driver": driver,
                     "cuda_runtime": torch.version.cuda})
    return gpus


def machine_facts() -> dict:
    """CPU (model, decisive ISA flags and their class), cores, GPUs, OS, library versions, ONNX Runtime providers."""
    import onnxruntime as ort

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {**cpu_facts(), "cpu_cores": os.cpu_count(), "usable_cores": usable,
            "platform": platform.platform(), "gpus": gpu_facts(),
            "onnxruntime_providers": ort.get_available_providers(), "tool_versions": tool_versions()}
