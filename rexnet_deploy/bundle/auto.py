"""``--precision auto``: of the files a bundle could ship, the one this machine runs fastest within an accuracy budget.

Which precision and runtime is fastest depends on the CPU (VNNI/AMX make INT8 pay, native BF16 makes BF16
pay, an AVX2 part has neither), so the choice is measured, not assumed: every candidate (:func:`candidate_files`:
each file, the FP32 files in every runner mode including the runtimes' defaults, the peers, and the runtime's own
INT8 in each of its scopes and modes) is timed at
the bundle's deploy batch on this machine by the bench's own runners and timing (:func:`measure_candidates`),
and :func:`pick_recommended` takes the fastest whose top-1 is within ``budget_points`` of the FP32
reference. A candidate outside the budget is never picked, however fast; with none inside, nothing is.
:func:`auto_summary` is what ``bundle.json`` stores, :func:`candidates_markdown` the table for ``bundle.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError

DEFAULT_BUDGET_POINTS = 0.5  # top-1 points a candidate may lose against FP32 (the default)
_TOLERANCE = 1e-9  # top-1 is a ratio of counts: 0.5 points exactly is within a 0.5-point budget


@dataclass(frozen=True)
class CandidateFile:
    """One file a bundle could recommend, and how to run it."""

    name: str  # the row's name in the table: "ort-int8", "openvino-bf16", "pruned-openvino-int8"
    path: Path
    mode: str | None = None  # a runner mode of its backend (RUNNER_MODES): OpenVINO/torch "bf16"
    role: str | None = None  # how the file is named in a suite ("onnx", "engine"): breaks a suffix tie


def candidate_files(files: Sequence[Mapping[str, Any]], folder: Path) -> list[CandidateFile]:
    """What ``--precision auto`` times, from a bundle's file entries (``backend``, ``variant``, ``precision``,
    ``file`` in ``folder``): every file, each FP32 file again in every mode its runner offers (one per arithmetic,
    ``openvino-bf16``, and the runtime's own defaults, ``openvino-default``/``ort-default``: the peer a user gets
    without this tool, so the pick is never one the runtime's defaults beat in the same timing), and each of the
    backend's own INT8 files (every scope it quantizes in: ``openvino-int8-nncf``, ``openvino-int8-nncf-pointwise``)
    in each mode that applies to it (``openvino-int8-nncf-bf16``: its float parts in BF16). A file that takes
    pixels (``embedded_preprocess``) is left out: every candidate is timed on the same normalised images."""
    from ..backends import get_backend

    out = []
    for f in files:
        if f.get("embedded_preprocess"):
            continue
        backend = get_backend(f["backend"])
        name, path = f"{backend.row_tag}-{f['variant']}", folder / f["file"]
        out.append(CandidateFile(name, path, role=backend.role))
        if f["precision"] == "fp32":
            for mode, precision in backend.runner_modes().items():
                out.append(CandidateFile(f"{backend.row_tag}-{precision or 'default'}", path, mode=mode,
                                         role=backend.role))
        elif f["variant"] in backend.own_int8_variants():
            for mode, precision in backend.own_int8_modes().items():
                out.append(CandidateFile(f"{name}-{precision}", path, mode=mode, role=backend.role))
    return out


def _usable(row: Mapping[str, Any]) -> bool:
    """A measured row: status ok, a finite top-1 and a positive finite speed."""
    top1, speed = row.get("top1"), row.get("img_per_s")
    return (row.get("status", "ok") == "ok" and isinstance(top1, (int, float)) and math.isfinite(top1)
            and isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0)


def reference_top1(candidates: Sequence[Mapping[str, Any]], reference: str | None = None) -> float:
    """The FP32 top-1 the budget is measured from.

    ``reference``: that row's top-1. Otherwise the rows marked ``"reference": True``, else every usable
    FP32 row; FP32 runtimes agree to a few images, and the highest of them makes the budget the stricter one.
    """
    if reference is not None:
        row = next((r for r in candidates if r.get("name") == reference), None)
        if row is None or not _usable(row):
            state = "is not among the candidates" if row is None else f"has no measured top-1 ({row.get('status')})"
            raise UserError(f"reference {reference!r} {state}: name a measured FP32 row")
        return float(row["top1"])
    marked = [r for r in candidates if r.get("reference") and _usable(r)]
    fp32 = marked or [r for r in candidates if r.get("precision") == "fp32" and _usable(r)]
    if not fp32:
        raise UserError("no FP32 row with a measured top-1 among the candidates: the budget needs the FP32 "
                        "reference (measure the FP32 file too, or pass reference_top1)")
    return max(float(r["top1"]) for r in fp32)


def pick_recommended(candidates: Sequence[Mapping[str, Any]], budget_points: float = DEFAULT_BUDGET_POINTS, *,
                     reference: str | None = None, reference_top1_value: float | None = None) -> dict | None:
    """The fastest candidate whose top-1 is within ``budget_points`` of the FP32 reference, or None.

    ``candidates``: rows with ``name``, ``top1`` (percent), ``img_per_s`` at the deploy batch and ``status``
    (``ok``; ``skipped``/``failed`` rows are ignored, as are rows without a top-1 or speed), optionally
    ``precision`` and ``reference``. The reference top-1 is ``reference_top1_value`` if given, else as
    :func:`reference_top1` finds it. Ties on speed go to the higher top-1, then to the earlier row (list the
    simpler file first). Returns a copy of the chosen row with ``drop_points`` (reference − its top-1) and
    ``budget_points``; None when no usable row is within the budget (keep FP32).
    """
    if not isinstance(budget_points, (int, float)) or not math.isfinite(budget_points) or budget_points < 0:
        raise UserError(f"the accuracy budget must be ≥ 0 top-1 points, got {budget_points!r}")
    ref = float(reference_top1_value) if reference_top1_value is not None else reference_top1(candidates, reference)
    inside = [(i, r) for i, r in enumerate(candidates)
              if _usable(r) and ref - float(r["top1"]) <= budget_points + _TOLERANCE]
    if not inside:
        return None
    _, best = min(inside, key=lambda item: (-float(item[1]["img_per_s"]), -float(item[1]["top1"]), item[0]))
    return {**best, "drop_points": ref - float(best["top1"]), "budget_points": float(budget_points)}


def measure_candidates(files: Sequence[CandidateFile], dataset: Any, deploy_batch: int, *, threads: int = 2,
                       timing: Any = None, eval_images: int | None = None, eval_batch: int | None = None,
                       progress: bool = False) -> list[dict[str, Any]]:
    """Top-1 and img/s at ``deploy_batch`` of each file, one row each, measured here as ``bench`` measures.

    Each file is opened through the backend table (``open_runner``) and evaluated on ``dataset`` (the first
    ``eval_images`` images, all by default, ``eval_batch`` per call: by default the deploy batch, the shape then
    timed, since every candidate stays open until all are timed: at 256 per call, rexnet_lite_100's candidates at
    224 held several GB each and ran out of 24 GB); then all of them are timed on real images at ``deploy_batch``
    in turns (``bench.harness.time_interleaved``, the bench's warm-up and step timing; ``timing``: a
    :class:`rexnet_deploy.bench.timing.Timing`, its defaults if None), so the machine's drift cannot decide
    the pick. A runtime that cannot run here gives a ``skipped`` row with the reason ("no native BF16 on
    this CPU"), a file that fails a ``failed`` row; the rest are still measured. Rows: name, path, mode,
    backend, precision, status, reason, top1, top5, num_images, batch, img_per_s, ms_median, runner (its
    describe()).
    """
    from ..backends import backend_for, evaluate, open_runner
    from ..bench.harness import failure_status, speed_input, time_interleaved
    from ..bench.timing import Timing

    if int(deploy_batch) < 1:
        raise UserError(f"the deploy batch must be at least 1, got {deploy_batch}")
    rows, live = [], []
    with ExitStack() as stack:
        for cand in files:
            row: dict[str, Any] = {"name": cand.name, "path": str(cand.path), "mode": cand.mode, "backend": None,
                                   "precision": None, "status": "ok", "reason": None, "top1": None, "top5": None,
                                   "num_images": None, "batch": int(deploy_batch), "img_per_s": None,
                                   "ms_median": None, "runner": None}
            rows.append(row)
            try:
                row["backend"] = backend_for(cand.path, cand.role).name
                if not Path(cand.path).exists():
                    raise UserError(f"{cand.path} does not exist: build the candidate first")
                options = {"mode": cand.mode} if cand.mode else {}
                runner = stack.enter_context(open_runner(cand.path, threads=threads, role=cand.role, **options))
                row["precision"] = runner.precision
                accuracy = evaluate(runner, dataset, batch_size=eval_batch or int(deploy_batch), limit=eval_images,
                                    progress=progress)
                row.update(top1=accuracy["top1"], top5=accuracy["top5"], num_images=accuracy["num_images"])
                live.append((row, runner))
            except Exception as exc:
                row["status"], row["reason"] = failure_status(exc)
        batch = speed_input(dataset, int(deploy_batch))
        for (row, runner), entry in zip(live, time_interleaved([(r, batch) for _, r in live], timing or Timing())):
            if isinstance(entry, Exception):
                row["status"], row["reason"] = failure_status(entry)
            else:
                row.update(img_per_s=entry["img_per_s"], ms_median=entry["ms"]["median"], runner=runner.describe())
    return rows


def auto_summary(rows: Sequence[Mapping[str, Any]], deploy_batch: int,
                 budget_points: float = DEFAULT_BUDGET_POINTS, *, reference: str | None = None) -> dict[str, Any]:
    """What ``bundle.json`` stores under ``precision_auto``: the pick, the reference, the table, the CPU."""
    from ..hardware import cpu_facts

    try:
        ref: float | None = reference_top1(rows, reference)
    except UserError:
        ref = None  # no FP32 row was measured: nothing can be recommended, and the table says why
    pick = pick_recommended(rows, budget_points, reference_top1_value=ref) if ref is not None else None
    table = []
    for r in rows:
        entry = {k: r.get(k) for k in ("name", "path", "mode", "backend", "precision", "status", "reason", "top1",
                                       "img_per_s", "ms_median")}
        # judged as pick_recommended judges: only a measured row has a drop (a failed row's stale top-1 does not)
        entry["drop_points"] = ref - float(r["top1"]) if ref is not None and _usable(r) else None
        entry["within_budget"] = entry["drop_points"] is not None and entry["drop_points"] <= budget_points + _TOLERANCE
        table.append(entry)
    return {"recommended": pick["name"] if pick else None, "budget_points": float(budget_points),
            "deploy_batch": int(deploy_batch), "reference_top1": ref, "candidates": table, "machine": cpu_facts(),
            "why": _why(pick, ref, budget_points)}


def _why(pick: Mapping[str, Any] | None, ref: float | None, budget: float) -> str:
    if ref is None:
        return "no FP32 reference was measured, so no candidate can be judged: keep FP32"
    if pick is None:
        return f"no measured candidate is within {budget:g} top-1 points of FP32 ({ref:.2f} %): keep FP32"
    return (f"{pick['name']}: the fastest here within the budget, {pick['img_per_s']:.1f} img/s, top-1 "
            f"{pick['top1']:.2f} % against FP32's {ref:.2f} % ({-pick['drop_points']:+.2f} points)")


def candidates_markdown(summary: Mapping[str, Any]) -> str:
    """The candidate table of :func:`auto_summary` for ``bundle.md``, the recommended row marked."""
    from ..report import markdown_table

    rows = []
    for c in summary["candidates"]:
        status = c["status"] if c["status"] == "ok" else f"{c['status']}: {c['reason']}"
        rows.append({"candidate": c["name"] + (" ← recommended" if c["name"] == summary["recommended"] else ""),
                     "precision": c["precision"], "img/s": c["img_per_s"], "ms": c["ms_median"], "top-1 %": c["top1"],
                     "vs FP32 (points)": 0.0 - c["drop_points"] if c["drop_points"] is not None else None,
                     "within budget": "yes" if c["within_budget"] else "no", "status": status})
    machine = summary["machine"]
    head = (f"Measured at batch {summary['deploy_batch']} on {machine['cpu']} ({machine['isa_class']}: "
            f"{', '.join(machine['isa_flags']) or 'no listed ISA flags'}); budget {summary['budget_points']:g} "
            f"top-1 points. {summary['why']}.")
    return head + "\n\n" + markdown_table(rows)
