"""Bench stage: accuracy and speed of every artifact side by side, and the CI regression gate.

``run_bench(suite, out_dir)`` measures a :class:`Suite` (from ``load_suite(path)`` or
``suite_from_paths(...)``) and returns the results dict that ``results.schema.json`` documents;
``check_results(results, baseline)`` compares it with a baseline and is truthy when every check passed.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "CheckReport": ".check",
    "check_results": ".check",
    "load_baseline": ".check",
    "write_junit": ".check",
    "run_bench": ".harness",
    "SCHEMA_PATH": ".results",
    "load_results": ".results",
    "markdown_report": ".results",
    "terminal_table": ".results",
    "write_results": ".results",
    "ArtifactSpec": ".suite",
    "ModelGroup": ".suite",
    "Suite": ".suite",
    "load_suite": ".suite",
    "suite_from_paths": ".suite",
    "Timing": ".timing",
    "summarize_timings": ".timing",
})

__all__ = ["SCHEMA_PATH", "ArtifactSpec", "CheckReport", "ModelGroup", "Suite", "Timing", "check_results",
           "load_baseline", "load_results", "load_suite", "markdown_report", "run_bench", "suite_from_paths",
           "summarize_timings", "terminal_table", "write_junit", "write_results"]
