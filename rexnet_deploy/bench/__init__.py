"""Bench stage: accuracy and speed of every artifact side by side, and the CI regression gate.

``run_bench(suite, out_dir)`` measures a :class:`Suite` (from ``load_suite(path)`` or
``suite_from_paths(...)``) and returns the results dict that ``results.schema.json`` documents;
``check_results(results, baseline)`` compares it with a baseline and is truthy when every check passed.
"""

from .check import CheckReport, check_results, load_baseline, write_junit
from .harness import run_bench
from .results import SCHEMA_PATH, load_results, markdown_report, terminal_table, write_results
from .suite import ArtifactSpec, ModelGroup, Suite, load_suite, suite_from_paths
from .timing import Timing, summarize_timings

__all__ = ["SCHEMA_PATH", "ArtifactSpec", "CheckReport", "ModelGroup", "Suite", "Timing", "check_results",
           "load_baseline", "load_results", "load_suite", "markdown_report", "run_bench",
           "suite_from_paths", "summarize_timings", "terminal_table", "write_junit", "write_results"]
