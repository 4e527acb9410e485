"""``check``: the CI accuracy-regression gate over a bench results file.

A baseline (YAML or JSON, schema in rexnet_deploy/bench/baselines/README.md) lists artifacts by ``group/name``
(shell-style patterns allowed) with the limits each must meet::

    defaults: {max_drop: 0.5}          # merged into every entry below
    artifacts:
      "*/torch-fp32": {min_top1: 88.0}
      "tiny-cifar-0.5/ort-int8": {max_drop: 0.5, min_speedup: {64: 1.2}}

``by_isa_class: {avx2: {"*/ort-int8": {min_speedup: {64: 1.0}}}}`` adds or overrides entries for results
measured on a CPU of that class (``rexnet_deploy.hardware.isa_class``: INT8/BF16 speed depends on it); the
report says which class it compared.

Floors are one-sided: a value above its floor, or a smaller drop (an improvement), passes. Drops and
speed ratios are taken against a row measured in the SAME run (the row's reference, or ``versus``),
never against a number stored in the baseline.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fnmatch
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..artifacts import atomic_path
from ..errors import UserError
from .results import compare_rows, load_results

BASELINES_DIR = Path(__file__).parent / "baselines"  # package data, found from any folder
_ENTRY_KEYS = {"min_top1", "min_top5", "max_drop", "max_drop_top5", "min_speedup", "max_p99_ratio", "versus",
               "allow_skip"}
_EPS = 1e-9  # float noise only; limits are in points or ratios


@dataclass(frozen=True)
class Outcome:
    """One check of one artifact."""

    artifact: str  # group/name
    check: str  # e.g. "top-1 ≥ 88.00"
    result: str  # "pass", "fail" or "skip"
    measured: float | None = None
    detail: str = ""
    seconds: float = 0.0  # what judging it took (the JUnit testcase's time)


@dataclass
class CheckReport:
    """All outcomes; truthy when nothing failed."""

    outcomes: list[Outcome] = field(default_factory=list)
    results_path: str | None = None
    baseline_path: str | None = None
    isa_class: str | None = None  # the CPU class of the results; its by_isa_class entries were applied
    checked_at: str = ""  # when the check ran, UTC ISO 8601 (the JUnit suite's timestamp)

    @property
    def passed(self) -> bool:
        return all(o.result != "fail" for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result == "fail"]

    def __bool__(self) -> bool:
        return self.passed

    def table_rows(self) -> list[dict]:
        return [{"artifact": o.artifact, "check": o.check, "measured": o.measured, "result": o.result.upper(),
                 "detail": o.detail} for o in self.outcomes]


def resolve_baseline_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    for ext in (".yaml", ".yml", ".json"):
        if (BASELINES_DIR / f"{name_or_path}{ext}").is_file():
            return BASELINES_DIR / f"{name_or_path}{ext}"
    known = sorted(p.stem for p in BASELINES_DIR.glob("*") if p.suffix in (".yaml", ".yml", ".json")) \
        if BASELINES_DIR.is_dir() else []
    raise UserError(f"baseline {name_or_path} not found (neither a file nor {BASELINES_DIR}/{name_or_path}.yaml); "
                    f"known baselines: {', '.join(known) or 'none here'}")


def _batch_map(value: Any, key: str, where: str) -> dict[int, float]:
    if not isinstance(value, dict) or not value:
        raise UserError(f"{where}: {key} must map batch size to a ratio, e.g. {{64: 1.2}}")
    try:
        return {int(b): float(r) for b, r in value.items()}
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key} must map integer batch sizes to numbers, got {value}") from None


def load_baseline(name_or_path: str | Path | dict, isa_class: str | None = None) -> tuple[dict[str, dict], str]:
    """``({pattern: limits}, source)`` from a baseline file (or an already-parsed dict); one-line errors.

    With ``isa_class`` the baseline's ``by_isa_class`` entries for that CPU class are merged over ``artifacts``.
    """
    if isinstance(name_or_path, dict):
        data, source = name_or_path, "baseline"
    else:
        path = resolve_baseline_path(name_or_path)
        source = str(path)
        try:
            data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
        except (json.JSONDecodeError, yaml.YAMLError):
            raise UserError(f"baseline {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                            f"fix the file") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), dict) or not data["artifacts"]:
        raise UserError(f"baseline {source} needs a non-empty `artifacts:` mapping of group/name to limits")
    unknown = set(data) - {"description", "suite", "defaults", "artifacts", "by_isa_class"}
    if unknown:
        raise UserError(f"baseline {source}: unknown top-level key {sorted(unknown)[0]!r} "
                        f"(known: description, suite, defaults, artifacts, by_isa_class)")
    by_class = data.get("by_isa_class") or {}
    if not isinstance(by_class, dict) or any(not isinstance(v, dict) for v in by_class.values()):
        raise UserError(f"baseline {source}: by_isa_class must map a CPU class to artifacts entries")
    defaults = data.get("defaults") or {}
    entries = {}
    listed = dict(data["artifacts"])
    for pattern, limits in (by_class.get(isa_class) or {}).items():
        listed[pattern] = {**(listed.get(pattern) or {}), **(limits or {})}
    for pattern, limits in listed.items():
        where = f"baseline {source}: artifacts[{pattern!r}]"
        merged = {**defaults, **(limits or {})}
        bad = set(merged) - _ENTRY_KEYS
        if bad:
            raise UserError(f"{where}: unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})")
        for key in ("min_top1", "min_top5", "max_drop", "max_drop_top5"):
            if key in merged and not isinstance(merged[key], (int, float)):
                raise UserError(f"{where}: {key} must be a number, got {merged[key]!r}")
        for key in ("min_speedup", "max_p99_ratio"):
            if key in merged:
                merged[key] = _batch_map(merged[key], key, where)
        entries[str(pattern)] = merged
    return entries, source


def _check_row(key: str, row: dict, limits: dict, rows: dict[str, dict]) -> list[Outcome]:
    """Every limit of one baseline entry against one result row."""
    if row["status"] == "failed":
        return [Outcome(key, "ran", "fail", detail=f"failed: {row['reason']}")]
    if row["status"] != "ok":
        allowed = limits.get("allow_skip", True)
        return [Outcome(key, "ran", "skip" if allowed else "fail", detail=f"{row['status']}: {row['reason']}")]
    out = []
    acc = row["accuracy"]
    for metric, label in (("top1", "top-1"), ("top5", "top-5")):
        floor = limits.get(f"min_{metric}")
        if floor is not None:
            ok = acc[metric] >= floor - _EPS
            out.append(Outcome(key, f"{label} ≥ {floor:.2f}", "pass" if ok else "fail", acc[metric],
                               "" if ok else f"{floor - acc[metric]:.2f} points below the floor"))
    versus_name = limits.get("versus") or row.get("reference")
    relative = [k for k in ("max_drop", "max_drop_top5", "min_speedup", "max_p99_ratio") if k in limits]
    if not relative or versus_name == row["name"]:  # the reference itself: nothing to compare with
        return out
    versus = rows.get(f"{row['group']}/{versus_name}")
    if versus is None or versus["status"] != "ok":
        why = "is not in the results" if versus is None else f"did not run ({versus['status']}: {versus['reason']})"
        return out + [Outcome(key, f"{k} vs {versus_name}", "fail", detail=f"{versus_name} {why}") for k in relative]
    ratios = compare_rows(row, versus)
    for k, metric, label in (("max_drop", "top1", "top-1"), ("max_drop_top5", "top5", "top-5")):
        if k in limits:
            drop = versus["accuracy"][metric] - acc[metric]  # positive: this row is worse
            ok = drop <= limits[k] + _EPS
            out.append(Outcome(key, f"{label} drop vs {versus_name} ≤ {limits[k]:.2f}", "pass" if ok else "fail",
                               drop, f"{versus_name} {versus['accuracy'][metric]:.2f}, this {acc[metric]:.2f}"))
    for k, ratio_key, floor, label in (("min_speedup", "speedup", True, "img/s ×"),
                                       ("max_p99_ratio", "p99", False, "p99 ×")):
        for batch, limit in limits.get(k, {}).items():
            name = f"{label} vs {versus_name} b{batch} {'≥' if floor else '≤'} {limit:.2f}"
            value = ratios[ratio_key].get(str(batch))  # present only when both rows timed this batch
            if value is None:
                out.append(Outcome(key, name, "fail", detail=f"batch {batch} was not measured for both rows"))
                continue
            ok = value >= limit - _EPS if floor else value <= limit + _EPS
            out.append(Outcome(key, name, "pass" if ok else "fail", value))
    return out


def check_results(results: str | Path | dict, baseline: str | Path | dict) -> CheckReport:
    """Compare a bench results file (or dict) with a baseline; the report is truthy when every check passed.

    A baseline pattern that matches no row fails (a renamed or dropped artifact must not pass silently).
    """
    results_path = None if isinstance(results, dict) else str(results)
    if not isinstance(results, dict):
        results = load_results(results)
    isa_class = (results.get("machine") or {}).get("isa_class")
    entries, source = load_baseline(baseline, isa_class)
    rows = {f"{r['group']}/{r['name']}": r for r in results["rows"]}
    checked_at = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds")
    report = CheckReport(results_path=results_path, baseline_path=source, isa_class=isa_class, checked_at=checked_at)
    for pattern, limits in entries.items():
        matched = [k for k in rows if fnmatch.fnmatchcase(k, pattern)]
        if not matched:
            report.outcomes.append(Outcome(pattern, "present", "fail",
                                           detail=f"no row matches; rows: {', '.join(rows)}"))
        for key in matched:
            started = time.perf_counter()
            outcomes = _check_row(key, rows[key], limits, rows)
            share = (time.perf_counter() - started) / max(len(outcomes), 1)
            report.outcomes.extend(dataclasses.replace(o, seconds=share) for o in outcomes)
    return report


def write_junit(report: CheckReport, path: str | Path) -> Path:
    """JUnit XML: one testcase per check (classname = group/name), failures and skips marked."""
    suite = ET.Element("testsuite", name="rexnet-deploy check", tests=str(len(report.outcomes)),
                       failures=str(len(report.failures)),
                       skipped=str(sum(o.result == "skip" for o in report.outcomes)), errors="0",
                       time=f"{sum(o.seconds for o in report.outcomes):.6f}", timestamp=report.checked_at)
    for o in report.outcomes:
        case = ET.SubElement(suite, "testcase", classname=o.artifact, name=o.check, time=f"{o.seconds:.6f}")
        text = "; ".join(part for part in (f"measured {o.measured:.4g}" if o.measured is not None else "",
                                           o.detail) if part)
        if o.result == "fail":
            ET.SubElement(case, "failure", message=text or "failed").text = text
        elif o.result == "skip":
            ET.SubElement(case, "skipped", message=text)
        elif text:
            ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return Path(path)
