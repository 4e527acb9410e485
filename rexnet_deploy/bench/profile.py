"""Where the time goes: a runtime's per-layer profile of a model, summed by kind of layer.

A ReXNet spends its MACs in 1×1 convolutions, but a depthwise 3×3 convolution reads and writes as many
activations as a 1×1 one for 1/C of its arithmetic, so on a CPU its time is set by memory traffic
rather than MACs. This module puts the two side by side for each layer kind: share of the MACs and share
of the measured kernel time, with the precision each kind's kernels computed in. Every number comes from
the file's runner (``Runner.profile_layers``: ONNX Runtime's profiler for an ONNX file, OpenVINO's
per-layer counters for an IR, in the arithmetic of a bench row's mode), so this module names no runtime.
``rexnet-deploy profile``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..artifacts import atomic_dir
from ..backends import backend_for, open_runner
from ..backends.base import LAYER_KINDS
from ..errors import UserError
from ..report import markdown_table


def _kind_rows(ms: dict[str, float], macs: dict[str, int],
               ms_by_precision: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """One row per layer kind with time or MACs: its time and MAC shares, and its kernels' precisions."""
    total_ms, total_macs = sum(ms.values()), sum(macs.values())
    rows = []
    for k in LAYER_KINDS:
        if not (ms.get(k) or macs.get(k)):
            continue
        row = {"layer kind": k, "ms / batch": round(ms.get(k, 0.0), 3),
               "time %": round(100 * ms.get(k, 0.0) / total_ms, 1),
               "MMACs / image": round(macs[k] / 1e6, 2) if k in macs else None,
               "MACs %": round(100 * macs[k] / total_macs, 1) if k in macs else None}
        # a kind with MACs and no kernel time (fused into a neighbour) has no precision to share out
        row["kernels in"] = ", ".join(f"{p} {100 * t / ms[k]:.0f} %" for p, t in sorted(
            ms_by_precision[k].items(), key=lambda item: -item[1])) if ms.get(k) else ""
        rows.append(row)
    return rows


def profile_file(path: str | Path, batch: int = 64, threads: int = 2, runs: int = 20, warmup: int = 5,
                 mode: str | None = None) -> dict[str, Any]:
    """Layer time by kind for a model file whose runner has a per-layer profiler, in the runner's ``mode``.

    Beside each kind's time and MAC share: the precisions its kernels computed in, by share of its time.
    MACs count the records that carry them (the convolutions and the classifier, where the runner can tell).
    A runner without a per-layer profiler refuses in one line (``Runner.profile_layers``).
    """
    backend = backend_for(path)
    if mode and mode not in backend.runner_modes():
        modes = backend.runner_modes()
        known = f"modes {', '.join(modes)}" if modes else "no modes"
        raise UserError(f"--mode {mode}: {path} runs in {backend.name}, whose runner takes {known}: fix or drop it")
    with open_runner(path, threads=threads, **({"mode": mode} if mode else {})) as runner:
        layers = runner.profile_layers(batch, runs, warmup)
        described = runner.describe()
    ms: dict[str, float] = defaultdict(float)
    ms_in: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    macs: dict[str, int] = defaultdict(int)
    for layer in layers:
        kind = layer["kind"]
        ms[kind] += layer["ms"]
        ms_in[kind][layer["precision"]] += layer["ms"]
        if "macs_per_image" in layer:
            macs[kind] += layer["macs_per_image"]
    return {"model": str(path), "runtime": described["backend"], "mode": mode, "batch": batch, "threads": threads,
            "runs": runs, "inference_precision": described.get("inference_precision"),
            "kernel_ms_per_batch": round(sum(ms.values()), 3), "macs_per_image": sum(macs.values()),
            "rows": _kind_rows(ms, macs, ms_in)}


def write_profiles(profiles: list[dict[str, Any]], out_dir: str | Path, command: str) -> Path:
    """profile.json, profile.md and profile.png (time and MAC share per layer kind, one bar per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "profile.json").write_text(json.dumps({"command": command, "profiles": profiles}, indent=2) + "\n")
        md = [f"# Where the time goes (per-layer profiles)\n\n`{command}`\n"]
        for p in profiles:
            runtime = p["runtime"] + (f", mode {p['mode']}" if p.get("mode") else "")
            md.append(f"## `{p['model']}` ({runtime})\n\nbatch {p['batch']}, {p['threads']} threads, mean of "
                      f"{p['runs']} runs: {p['kernel_ms_per_batch']:.2f} ms of kernel time per batch, "
                      f"{p['macs_per_image'] / 1e6:.2f} MMACs per image.\n")
            md.append(markdown_table(p["rows"]))
        md.append("![time and MAC share per layer kind](profile.png)\n")
        (tmp / "profile.md").write_text("\n".join(md))
        fig, ax = plt.subplots(figsize=(12, 1.5 + 0.9 * len(profiles)))
        colors = dict(zip(LAYER_KINDS, plt.get_cmap("tab10").colors))
        labels = []
        for i, p in enumerate(profiles):
            for j, (share_key, label) in enumerate((("time %", "time"), ("MACs %", "MACs"))):
                left = 0.0
                y = i * 2.5 + j
                for r in p["rows"]:
                    width = r[share_key] or 0.0
                    ax.barh(y, width, left=left, color=colors[r["layer kind"]])
                    left += width
                labels.append((y, f"{p['model']} — {label}"))
        ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=8)
        ax.set_xlabel("share (%)")
        ax.invert_yaxis()
        present = [k for k in LAYER_KINDS if any(r["layer kind"] == k for p in profiles for r in p["rows"])]
        ax.legend(handles=[Patch(color=colors[k], label=k) for k in present], fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.25), ncol=4)
        fig.tight_layout()
        fig.savefig(tmp / "profile.png", dpi=120)
        plt.close(fig)
    return out_dir
