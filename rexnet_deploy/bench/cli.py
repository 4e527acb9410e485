"""``rexnet-deploy bench`` (accuracy + speed table) and ``rexnet-deploy check`` (the CI regression gate)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import shlex
import sys
from pathlib import Path

from ..cli_args import (
    add_batch_arg,
    add_checkpoint_arg,
    add_device_arg,
    add_eval_images_arg,
    add_threads_arg,
    positive_int,
    resolve_threads,
    show_progress,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_bench_parser(sub)
    add_check_parser(sub)
    add_profile_parser(sub)


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch sizes must be integers like 1,8,32,64, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text!r}")
    return values


def _variable(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, not {text!r}")
    return key, value


def _provider_devices() -> dict[str, str]:
    """Devices beyond cpu/cuda that a backend's table row names (ONNX Runtime's TensorRT provider), with meanings."""
    from ..backends import BACKENDS

    return {d: f"the GPU through {b.name}'s {d} provider ({b.name} rows)" for b in BACKENDS.values()
            for d in b.devices if d not in ("cpu", "cuda")}


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="accuracy, ms/step, img/s and latency percentiles of artifacts, side by side",
                       description="Benchmark artifacts through the shared runners: top-1/top-5 on the dataset's "
                                   "evaluation split, then a batch sweep of timed steps. Writes results.json, "
                                   "results.md and PNG plots to --out.")
    what = p.add_argument_group("what to run (a suite, or artifact paths; repeat a flag for several)")
    what.add_argument("--suite", help="suite YAML, or a name in rexnet_deploy/bench/suites/ (e.g. fmnist-cpu; "
                                      "default: none, the artifact paths below)")
    what.add_argument("--set", dest="variables", type=_variable, action="append", default=[], metavar="KEY=VALUE",
                      help="override a suite variable used in its paths as ${KEY} (repeatable; default: the suite's "
                           "vars)")
    add_checkpoint_arg(what, "a checkpoint, run by torch (eager unless --compile; repeatable; default: none)",
                       action="append", default=[])
    what.add_argument("--onnx", action="append", default=[], metavar="PATH",
                      help="an ONNX file, run by ONNX Runtime (repeatable; default: none)")
    what.add_argument("--engine", action="append", default=[], metavar="PATH",
                      help="an OpenVINO .xml, ExecuTorch .pte or TensorRT engine, run by its runtime (repeatable; "
                           "default: none)")
    add_device_arg(what, "cpu; a row whose backend lacks the device runs on the GPU for a GPU device, else on its "
                         "own", extra=_provider_devices(), gpu_index=False)
    what.add_argument("--compile", action="store_true", help="torch.compile the checkpoints")
    what.add_argument("--channels-last", action="store_true", help="run checkpoints in channels-last memory format")
    what.add_argument("--reference", help="row the ratios are taken against (default: the torch eager FP32 row)")
    how = p.add_argument_group("how to measure (override the suite's settings)")
    how.add_argument("--dataset", help="evaluation dataset: fashion_mnist, cifar10, cifar100 or imagefolder (default: "
                                       "the one the artifacts record, else fashion_mnist)")
    how.add_argument("--split", help="evaluation split (default test: an ImageFolder's val/)")
    how.add_argument("--data-dir", help="folder holding the dataset files (default: the one the artifacts record)")
    add_eval_images_arg(how)
    how.add_argument("--batches", type=_batches, help="batch sweep, e.g. 1,32 (default 1,8,32,64)")
    add_threads_arg(how)
    how.add_argument("--warmup-steps", type=int, help="warm-up steps per batch size (default 5)")
    how.add_argument("--warmup-seconds", type=float, help="… and at least this long (default 0.2)")
    how.add_argument("--steps", type=int, help="timed steps per batch size, at most (default 200)")
    how.add_argument("--min-steps", type=int, help="timed steps per batch size, at least (default 10)")
    how.add_argument("--max-seconds", type=float, help="stop timing a batch size after this long once "
                                                       "--min-steps are recorded (default 5)")
    how.add_argument("--rounds", type=positive_int, help="turns the rows take in turn at each batch size, each "
                                                         "timing its share of the steps (default 5)")
    p.add_argument("--out", help="results folder (default bench/runs/<time>/)")
    p.set_defaults(func=run_bench_command)


def add_check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="CI gate: compare bench results with a baseline; exit 1 on a regression",
                       description="Check accuracy floors, drops against the FP32 reference measured in the same "
                                   "run, and optional speed-ratio floors. Exit 0 pass, 1 regression, 2 bad input.")
    p.add_argument("results", help="results.json written by `rexnet-deploy bench`, or its folder")
    p.add_argument("--baseline", required=True, help="baseline YAML/JSON, or a name in rexnet_deploy/bench/baselines/")
    p.add_argument("--junit", metavar="PATH", help="also write JUnit XML for CI systems (default: not written)")
    p.set_defaults(func=run_check_command)


def add_profile_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="where the time goes: kernel time and MACs per layer kind",
                       description="Profile ONNX files in ONNX Runtime on the CPU, or OpenVINO IRs with OpenVINO's "
                                   "per-layer counters (each file through its runner's per-layer profiler), and "
                                   "sum kernel time by layer kind (depthwise, 1×1, activations, Q/DQ, …) beside "
                                   "each kind's share of the MACs and the precision its kernels ran in. Writes "
                                   "profile.json, profile.md and profile.png to --out.")
    p.add_argument("model", nargs="+", help="ONNX files (FP32, FP16 or INT8 Q/DQ) or OpenVINO IRs (.xml)")
    p.add_argument("--mode", help="the runner's mode, as a bench row's `mode:` (OpenVINO: bf16 or defaults; "
                                  "ONNX Runtime: defaults; default: none, the tool's own settings)")
    add_batch_arg(p, "what the layers are timed at", 64)
    add_threads_arg(p)
    p.add_argument("--runs", type=int, default=20, help="profiled runs after 5 warm-up runs (default 20)")
    p.add_argument("--out", help="results folder (default bench/runs/profile-<time>/)")
    p.set_defaults(func=run_profile_command)


def build_suite(args: argparse.Namespace):
    """The suite the flags describe: a suite file with overrides, or a one-group suite of the given paths."""
    from ..errors import UserError
    from .suite import load_suite, suite_from_paths
    from .timing import Timing

    paths = args.checkpoint or args.onnx or args.engine
    if args.suite and paths:
        raise UserError("give --suite or artifact paths (--checkpoint/--onnx/--engine), not both")
    if not args.suite and not paths:
        raise UserError("nothing to bench: pass --suite NAME or at least one --checkpoint/--onnx/--engine PATH")
    if args.variables and not args.suite:
        raise UserError("--set fills ${KEY} in a suite's paths: use it with --suite")
    settings = {"dataset": args.dataset, "split": args.split, "data_dir": args.data_dir,
                "eval_images": args.eval_images, "batches": args.batches,
                "threads": args.threads if args.suite else resolve_threads(args)}
    if args.suite:
        suite = load_suite(args.suite, dict(args.variables))
        if args.reference:
            raise UserError("--reference applies to artifact paths; a suite names its reference per model")
    else:
        # rows and plots grouped under the model the first file names (rexnet-0.5.fp32.onnx → rexnet-0.5)
        suite = suite_from_paths(checkpoints=args.checkpoint, onnx=args.onnx, engines=args.engine,
                                 device=args.device or "cpu", compile=args.compile,
                                 channels_last=args.channels_last, reference=args.reference, **settings)
    timing = {k: getattr(args, k) for k in ("warmup_steps", "warmup_seconds", "steps", "min_steps", "max_seconds",
                                               "rounds") if getattr(args, k) is not None}
    if args.batches is not None and suite.headline_batch not in args.batches:
        # the suite's table batch is not in the sweep asked for here: fall back to the default choice
        suite = dataclasses.replace(suite, batches=args.batches, headline_batch=None)
    suite = suite.replace(**settings, timing=Timing(**{**suite.timing.to_dict(), **timing}))
    if not args.suite and args.dataset is None:
        suite = suite.replace(dataset=_recorded_dataset_name(suite))
    return suite


def _recorded_dataset_name(suite) -> str | None:
    """The dataset the given artifacts were made on (the first that records one), so a checkpoint or bundle
    file trained on an ImageFolder tree is measured on that tree's val/ without flags; None: the default."""
    from ..data import recorded_spec
    from .harness import recorded_dataset

    found = recorded_dataset(suite)
    return recorded_spec(found[0]).name if found is not None else None


def run_bench_command(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from .harness import run_bench
    from .results import starved_rows, terminal_table

    suite = build_suite(args)
    out = Path(args.out or Path("bench/runs") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results = run_bench(suite, out, command=shlex.join(["rexnet-deploy", *sys.argv[1:]]), progress=show_progress(args))
    print(terminal_table(results))
    for warning in starved_rows(results):
        print(warning, file=sys.stderr)
    print(f"\nresults: {out}/results.json, results.md, accuracy_vs_latency.png, throughput_vs_batch.png")
    failed = [r for r in results["rows"] if r["status"] == "failed"]
    if not args.suite and all(r["status"] != "ok" for r in results["rows"]):
        # every row the user named explicitly was skipped or failed: nothing was measured
        first = results["rows"][0]
        raise UserError(f"nothing was measured: every artifact given was {first['status']} "
                        f"({first['group']}/{first['name']}: {first['reason']})")
    if failed:
        first = failed[0]
        raise UserError(f"{len(failed)} of {len(results['rows'])} artifacts failed to run "
                        f"({first['group']}/{first['name']}: {first['reason']}); the table above has the rest")
    return 0


def run_check_command(args: argparse.Namespace) -> int:
    from ..errors import CheckFailed
    from ..report import format_table
    from .check import check_results, write_junit

    report = check_results(args.results, args.baseline)
    print(format_table(report.table_rows()))
    counts = {r: sum(o.result == r for o in report.outcomes) for r in ("pass", "fail", "skip")}
    print(f"\n{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped "
          f"(baseline {report.baseline_path}, results from a CPU of class {report.isa_class or 'unrecorded'})")
    if args.junit:
        print(f"JUnit XML: {write_junit(report, args.junit)}")
    if not report.passed:
        first = report.failures[0]
        raise CheckFailed(f"{len(report.failures)} check(s) failed, first: {first.artifact}: {first.check} "
                          f"({first.detail or f'measured {first.measured:.4g}'})")
    return 0


def run_profile_command(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..report import format_table
    from .profile import profile_file, write_profiles
    from .results import check_out_dir

    if args.batch < 1 or args.runs < 1:
        raise UserError(f"--batch and --runs must be positive (got {args.batch}, {args.runs})")
    out = check_out_dir(args.out or Path("bench/runs") / f"profile-{_dt.datetime.now():%Y%m%d-%H%M%S}",
                        marker="profile.json")
    profiles = [profile_file(path, args.batch, resolve_threads(args), args.runs, mode=args.mode) for path in args.model]
    for p in profiles:
        print(f"\n{p['model']}: {p['kernel_ms_per_batch']:.2f} ms kernel time per batch of {p['batch']}")
        print(format_table(p["rows"]))
    write_profiles(profiles, out, shlex.join(["rexnet-deploy", *sys.argv[1:]]))
    print(f"\nresults: {out}/profile.json, profile.md, profile.png")
    return 0
