"""What the CPU this runs on can do fast: its model and the ISA flags that decide INT8/BF16 speed and numerics.

A leaf module (standard library only), read by every manifest and results file: which precision is fastest
depends on these flags (VNNI, AMX, native BF16), so every speed figure names them.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# The flags that change INT8/BF16 speed or INT8 numerics: x86 (as /proc/cpuinfo spells them) and ARM.
X86_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
ARM_FLAGS = ("asimddp", "i8mm", "bf16")  # dotprod is "asimddp" in /proc/cpuinfo


def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.is_file() else ""


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    for line in _cpuinfo().splitlines():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (distinct physical id + core id in /proc/cpuinfo), else the logical CPU count: the thread
    count ONNX Runtime's intra-op pool takes by default."""
    cores, block = set(), {}
    for line in (*_cpuinfo().splitlines(), ""):
        if not line.strip():
            if "core id" in block:
                cores.add((block.get("physical id"), block["core id"]))
            block = {}
        elif ":" in line:
            key, value = line.split(":", 1)
            block[key.strip()] = value.strip()
    return len(cores) or os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def cpu_isa_flags() -> list[str]:
    """The decisive ISA flags this CPU has (a subset of :data:`X86_FLAGS` / :data:`ARM_FLAGS`), in that order."""
    present: set[str] = set()
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            present |= set(line.split(":", 1)[1].split())
    names = [f for f in X86_FLAGS + ARM_FLAGS if f in present]
    return ["dotprod" if f == "asimddp" else f for f in names]


def isa_class(flags: list[str] | None = None) -> str:
    """A coarse class for keying baselines: ``amx``, ``avx512-vnni``, ``avx-vnni``, ``avx512``, ``avx2``, ``arm-…``."""
    flags = cpu_isa_flags() if flags is None else flags
    if "amx_int8" in flags or "amx_bf16" in flags:
        return "amx"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "i8mm" in flags or "dotprod" in flags:
        return "arm-" + ("i8mm" if "i8mm" in flags else "dotprod")
    return platform.machine() or "unknown"


def has_native_bf16(flags: list[str] | None = None) -> bool:
    """True where BF16 matrix arithmetic runs in hardware (AVX-512 BF16, AMX-BF16, ARM BF16)."""
    flags = cpu_isa_flags() if flags is None else flags
    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))


def cpu_facts() -> dict[str, object]:
    """What manifests and results record about the CPU."""
    flags = cpu_isa_flags()
    return {"cpu": cpu_model(), "isa_flags": flags, "isa_class": isa_class(flags)}
