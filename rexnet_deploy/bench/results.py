"""Bench results as a terminal table, Markdown, JSON and PNG plots.

The JSON layout is documented by ``results.schema.json`` beside this file (JSON Schema 2020-12).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..artifacts import atomic_dir
from ..backends import BACKENDS
from ..errors import UserError
from ..report import format_table, markdown_table

SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
RESULTS_FILE = "results.json"


def load_results(path: str | Path) -> dict:
    """A results.json file, or a results folder holding one; one-line errors for anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"bench results {path} not found: pass a results.json or the folder `rexnet-deploy bench` "
                        f"wrote (bench/runs/<time>/)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}): re-run `rexnet-deploy bench`") \
            from None
    if not isinstance(results, dict) or not isinstance(results.get("rows"), list) or \
            any(not isinstance(r, dict) or not {"group", "name", "status"} <= r.keys() for r in results["rows"]):
        raise UserError(f"{path} is not a `rexnet-deploy bench` results file (no rows with group/name/status)")
    return results


def speed_at(row: dict, batch: int) -> dict | None:
    return next((s for s in row.get("speed") or [] if s["batch"] == batch), None)


def compare_rows(row: dict, reference: dict) -> dict | None:
    """Ratios of ``row`` against ``reference`` (same run): Δ top-1/top-5 in points, size, img/s and p99 by batch.

    ``speedup[b]`` = img/s ÷ the reference's img/s at batch b (> 1: faster); ``p99[b]`` = p99 step time ÷ the
    reference's (< 1: lower tail latency). None unless both rows ran.
    """
    if row["status"] != "ok" or reference["status"] != "ok":
        return None
    acc, ref_acc = row["accuracy"], reference["accuracy"]
    speedup, p99 = {}, {}
    for s in row["speed"]:
        ref = speed_at(reference, s["batch"])
        if ref:
            speedup[str(s["batch"])] = s["img_per_s"] / ref["img_per_s"]
            p99[str(s["batch"])] = s["ms"]["p99"] / ref["ms"]["p99"]
    size = row["size_bytes"] / reference["size_bytes"] if row["size_bytes"] and reference["size_bytes"] else None
    return {"versus": reference["name"], "top1_delta": acc["top1"] - ref_acc["top1"],
            "top5_delta": acc["top5"] - ref_acc["top5"], "size": size, "speedup": speedup, "p99": p99}


def _status(row: dict) -> str:
    return row["status"] if row["status"] == "ok" else f"{row['status']}: {row['reason']}"


def summary_rows(results: dict) -> list[dict]:
    """One row per artifact at the suite's table batch, with ratios against its group's reference."""
    batch = results["suite"]["table_batch"]
    has_b1 = 1 in results["suite"]["batches"] and batch != 1
    out = []
    for r in results["rows"]:
        acc, sp, ratios = r.get("accuracy") or {}, speed_at(r, batch), r.get("ratios") or {}
        one = speed_at(r, 1)
        row = {"model": r["group"], "artifact": r["name"] + (" (ref)" if r.get("is_reference") else ""),
               "format": r["format"], "precision": r["precision"],
               "size MB": r["size_bytes"] / 1e6 if r["size_bytes"] else None,
               "top-1": acc.get("top1"), "top-5": acc.get("top5"),
               f"ms/step b{batch}": sp["ms"]["median"] if sp else None,
               f"img/s b{batch}": sp["img_per_s"] if sp else None,
               f"p99 ms b{batch}": sp["ms"]["p99"] if sp else None}
        if has_b1:
            row["p99 ms b1"] = one["ms"]["p99"] if one else None
        row[f"× img/s b{batch}"] = (ratios.get("speedup") or {}).get(str(batch))
        row["Δ top-1"] = ratios.get("top1_delta")
        if has_b1:
            row["× p99 b1"] = (ratios.get("p99") or {}).get("1")
        row["status"] = _status(r)
        out.append(row)
    return out


def sweep_rows(results: dict) -> list[dict]:
    """One row per artifact and batch size: the step-time statistics and throughput."""
    out = []
    for r in results["rows"]:
        for s in r.get("speed") or []:
            out.append({"model": r["group"], "artifact": r["name"], "batch": s["batch"], "steps": s["steps"],
                        "ms median": s["ms"]["median"], "ms p90": s["ms"]["p90"], "ms p99": s["ms"]["p99"],
                        "img/s": s["img_per_s"],
                        "× img/s": ((r.get("ratios") or {}).get("speedup") or {}).get(str(s["batch"])),
                        "timer": s.get("timer"),
                        "host ms median": ((s.get("host_latency") or {}).get("ms") or {}).get("median")})
    return out


STARVED_P99 = 5.0  # a p99 this many times the median: some steps waited for the CPU, not for the model


def starved_rows(results: dict, factor: float = STARVED_P99) -> list[str]:
    """One warning per row and batch whose p99 step time is ``factor`` or more times its median: the machine was
    busy with something else while it was timed, and its img/s and latencies are not the model's.

    Entries with several batches in flight are not judged: their step time is the wait for a free request, near zero
    while a request is idle and a whole batch otherwise, so their p99 is many times their median on an idle machine
    too (every OpenVINO row at batch 64 at 224 in speed-cpu's first run with the asynchronous queue)."""
    found = []
    for row in results["rows"]:
        for entry in row.get("speed") or []:
            ms = entry["ms"]
            if entry.get("in_flight", 1) > 1:
                continue
            if ms["median"] > 0 and ms.get("p99", 0) >= factor * ms["median"]:
                found.append(f"warning: {row['group']}/{row['name']} at batch {entry['batch']}: p99 {ms['p99']:.3g} ms "
                             f"is {ms['p99'] / ms['median']:.1f}× its median {ms['median']:.3g} ms; the machine was "
                             f"busy while it was timed: measure again on an idle one")
    return found


def terminal_table(results: dict) -> str:
    return format_table(summary_rows(results))


def _machine_line(machine: dict) -> str:
    tools = machine["tool_versions"]
    gpus = "; ".join(f"{g['name']} (cc {g['capability']}, driver {g['driver']})" for g in machine["gpus"]) or "none"
    packages = dict.fromkeys(p for b in BACKENDS.values() for p in b.packages if p != "torchvision")
    libs = ", ".join(f"{k} {tools[k]}" for k in packages if k in tools)
    isa = ", ".join(machine.get("isa_flags") or []) or "none of the INT8/BF16 extensions"
    return f"CPU {machine['cpu']} ({machine['usable_cores']} usable cores; ISA {isa}), GPU: {gpus}; {libs}"


def _overhead_line(overhead: dict | None) -> str:
    if not overhead:
        return "- Harness overhead: not measured (results older than the measurement)"
    us = overhead["per_step_us"]
    return (f"- Harness overhead: {us['median']:.1f} µs per step median (p99 {us['p99']:.1f} µs), a runner that does "
            f"nothing timed through the same path over {overhead['steps']} steps; it is inside every step time")


def markdown_report(results: dict) -> str:
    suite, ds = results["suite"], results["dataset"]
    t = suite["timing"]
    evaluated = {r["accuracy"]["num_images"] for r in results["rows"] if r.get("accuracy")}
    lines = [
        f"# Benchmark: {suite['name']}", "",
        f"- Recorded {results['created']}" + (f" with `{results['command']}`" if results.get("command") else ""),
        f"- Machine: {_machine_line(results['machine'])}",
        f"- Threads: {suite['threads']} for every CPU runtime",
        f"- Accuracy: {ds['dataset']} {ds['split']} split, {', '.join(map(str, sorted(evaluated))) or '—'} of "
        f"{ds['num_images']} images, preprocessing {ds['preprocess']}",
        f"- Speed: batches {suite['batches']}; warm-up ≥ {t['warmup_steps']} steps and ≥ {t['warmup_seconds']} s, "
        f"then up to {t['steps']} timed steps (stopping after {t['max_seconds']} s once {t['min_steps']} are "
        f"recorded), in {t.get('rounds', 1)} turns that a model's rows take in turn (A, B, …, A, B, …), so the "
        f"machine's drift lands on every row alike; percentiles by linear interpolation of the raw step times "
        f"(median = p50); img/s = batch × steps ÷ timed seconds",
        "- Timers: perf_counter rows time host calls (numpy in, numpy out); cuda_events rows time GPU compute "
        "with the inputs already on the device (as trtexec's GPU compute time), and their `host ms` is the "
        "end-to-end host latency, synchronised",
        "- Requests: a row whose runner keeps several batches in flight (OpenVINO's asynchronous queue at batch ≥ 2, "
        "its `runner.compiled` entry says how many) is timed as benchmark_app times it: each step submits the whole "
        "batch, img/s runs from the first start to the last completion, and a step's ms is the wait for a free "
        "request, not one request's latency; every other row runs one batch at a time",
        _overhead_line(results.get("harness_overhead")),
        "- Ratios are against each model's reference row (ref): × img/s = img/s ÷ the reference's at the same "
        "batch, Δ top-1 in points, × p99 = p99 step time ÷ the reference's",
        "", f"## Summary (batch {suite['table_batch']})", "", markdown_table(summary_rows(results)),
        "## Batch sweep", "", markdown_table(sweep_rows(results)) if sweep_rows(results) else "No row ran.\n",
        "## Plots", "", "![accuracy vs latency](accuracy_vs_latency.png)", "",
        "![throughput vs batch](throughput_vs_batch.png)", "",
    ]
    return "\n".join(lines)


def plot_results(results: dict, out_dir: Path) -> list[Path]:
    """accuracy_vs_latency.png (top-1 against batch-1 latency) and throughput_vs_batch.png, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suite = results["suite"]
    groups = list(dict.fromkeys(r["group"] for r in results["rows"]))
    ran = {g: [r for r in results["rows"] if r["group"] == g and r["status"] == "ok"] for g in groups}
    latency_batch = min(suite["batches"])
    paths = [out_dir / "accuracy_vs_latency.png", out_dir / "throughput_vs_batch.png"]
    size = (6 * len(groups), 4.5)

    fig, axes = plt.subplots(1, len(groups), figsize=size, squeeze=False)
    for ax, group in zip(axes[0], groups):
        for r in ran[group]:
            x, y = speed_at(r, latency_batch)["ms"]["median"], r["accuracy"]["top1"]
            ax.scatter(x, y, marker="s" if r.get("is_reference") else "o")
            ax.annotate(r["name"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")  # runtimes differ by orders of magnitude
        ax.set_xlabel(f"median latency per step at batch {latency_batch} (ms, log scale)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{group}: accuracy vs latency", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(groups), figsize=size, squeeze=False)
    for ax, group in zip(axes[0], groups):
        for r in ran[group]:
            ax.plot([s["batch"] for s in r["speed"]], [s["img_per_s"] for s in r["speed"]], marker="o",
                    label=r["name"], linestyle="--" if r.get("is_reference") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(suite["batches"], [str(b) for b in suite["batches"]])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"{group}: throughput vs batch ({suite['threads']} CPU threads)", fontsize=10)
        ax.grid(alpha=0.3)
        if ran[group]:
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def check_out_dir(out_dir: str | Path, marker: str = RESULTS_FILE) -> Path:
    """Refuse an output folder that holds anything but an earlier result (``marker`` there); it is replaced whole."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file: give a folder for the results")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / marker).is_file():
        raise UserError(f"--out {out_dir} holds other files and would be replaced: choose a new or empty folder")
    return out_dir


def write_results(results: dict, out_dir: str | Path) -> Path:
    """results.json, results.md and the plots, written into ``out_dir`` as a whole (atomically)."""
    out_dir = check_out_dir(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        (tmp / "results.md").write_text(markdown_report(results))
        plot_results(results, tmp)
    return out_dir
