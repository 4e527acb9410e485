"""Bench and the CI gate: real runs of a tiny model through torch and ONNX Runtime on Fashion-MNIST."""

from __future__ import annotations

import copy
import fnmatch
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, run_cli

from rexnet_deploy.artifacts import read_manifest
from rexnet_deploy.backends import Runner
from rexnet_deploy.bench import (
    SCHEMA_PATH,
    Timing,
    check_results,
    load_baseline,
    load_results,
    load_suite,
    run_bench,
    summarize_timings,
    write_junit,
)
from rexnet_deploy.bench.harness import time_interleaved
from rexnet_deploy.bench.timing import measure_steps
from rexnet_deploy.cli import main
from rexnet_deploy.data.datasets import Preprocess
from rexnet_deploy.errors import UserError
from rexnet_deploy.models import load_model, save_model_checkpoint

# one thread: OpenMP with 2 threads on 2 cores that other work also uses slows torch down ~100× (measured)
QUICK = ["--eval-images", "64", "--batches", "1,4", "--threads", "1", "--warmup-steps", "1", "--warmup-seconds", "0",
         "--steps", "6", "--min-steps", "3", "--max-seconds", "1"]

# ---- percentiles and timing: pure functions -------------------------------------------------------------------

def test_summarize_timings_of_a_known_list():
    stats = summarize_timings([2.0, 4.0, 10.0, 4.0], batch=8)
    assert stats["steps"] == 4 and stats["batch"] == 8
    assert stats["ms"] == pytest.approx({"mean": 5.0, "median": 4.0, "p50": 4.0, "p90": 8.2, "p99": 9.82,
                                         "min": 2.0, "max": 10.0})
    assert stats["img_per_s"] == pytest.approx(8 * 4 / 0.020)  # 32 images in 20 ms

def test_measure_steps_warms_up_then_times_the_asked_number_of_steps():
    calls = []
    times, warmed = measure_steps(lambda: calls.append(1), Timing(warmup_steps=3, warmup_seconds=0, steps=7,
                                                                   min_steps=1, max_seconds=100))
    assert warmed == 3 and len(times) == 7 and len(calls) == 10 and all(t >= 0 for t in times)
    with pytest.raises(UserError, match="min_steps"):
        Timing(steps=5, min_steps=6)
    with pytest.raises(UserError, match="rounds"):
        Timing(rounds=0)


def test_a_queued_step_is_timed_from_the_first_start_to_the_last_completion():
    """``drain`` (a runner's wait_all): untimed after the warm-up, so the timed run starts with nothing in flight,
    then timed after the last step and added to it, so img/s counts each batch up to its completion."""
    events: list[str] = []

    def drain():
        events.append("drain")
        time.sleep(0.05)

    times, warmed = measure_steps(lambda: events.append("step"), Timing(warmup_steps=2, warmup_seconds=0, steps=4,
                                                                        min_steps=4, max_seconds=100), drain=drain)
    assert events == ["step", "step", "drain", "step", "step", "step", "step", "drain"] and warmed == 2
    assert len(times) == 4 and times[-1] >= 50 and max(times[:-1]) < 40


class _LoggingRunner(Runner):
    """Stands for a runner in the scheduling tests below: each call logs its name and takes ``step()`` ms."""

    def __init__(self, name: str, log: list, step=lambda: 0.0, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.name, self.log, self.step, self.fail_on_call = name, log, step, fail_on_call

    def infer(self, batch):
        self.log.append(self.name)
        if self.fail_on_call is not None and self.log.count(self.name) == self.fail_on_call:
            raise RuntimeError(f"{self.name} broke")
        time.sleep(self.step() / 1e3)
        return batch


def test_rows_are_timed_in_turns_and_a_failing_row_stops_alone():
    log: list[str] = []
    timing = Timing(warmup_steps=1, warmup_seconds=0, steps=6, min_steps=6, max_seconds=100, rounds=3)
    assert [t.steps for t in timing.slices()] == [2, 2, 2] and [t.warmup_steps for t in timing.slices()] == [1, 1, 1]
    batch = np.zeros((4, 3, 2, 2), np.float32)
    a, b = _LoggingRunner("a", log), _LoggingRunner("b", log, fail_on_call=5)
    entry_a, error_b = time_interleaved([(a, batch), (b, batch)], timing)
    # a's turn (1 warm-up + 2 timed), b's, a's, then b fails on its 5th call and a still gets its last turn
    assert "".join(log) == "aaabbbaaabbaaa"
    assert entry_a["steps"] == 6 and entry_a["rounds"] == 3 and entry_a["warmup_steps"] == 3
    assert len(entry_a["raw_ms"]) == 6 and entry_a["batch"] == 4
    assert isinstance(error_b, RuntimeError) and str(error_b) == "b broke"


def test_turns_keep_a_drifting_machine_out_of_the_ratio():
    """Two identical rows on a machine that slows down as it runs (each step 1 ms longer than the last 40 ago):
    timed one after the other the second looks far slower; in turns they come out level."""
    log: list[str] = []

    def drifting() -> float:
        return 2.0 + len(log) / 10  # 2 ms at first, 6 ms after 40 calls

    def ratio(rounds: int) -> float:
        log.clear()
        timing = Timing(warmup_steps=0, warmup_seconds=0, steps=20, min_steps=20, max_seconds=100, rounds=rounds)
        runs = [(_LoggingRunner(name, log, drifting), np.zeros((1, 1), np.float32)) for name in "ab"]
        first, second = time_interleaved(runs, timing)
        return first["img_per_s"] / second["img_per_s"]

    assert ratio(1) > 1.4  # a ran while the machine was fast, b while it was slow
    assert 0.85 < ratio(10) < 1.2

# ---- a tiny real model: checkpoint + ONNX ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny(random_rexnet) -> dict:
    """conftest's random ReXNet, plus a checkpoint of it that declares other preprocessing."""
    other = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    wrong = save_model_checkpoint(random_rexnet["model"], random_rexnet["root"] / "tiny-other-pre.pt",
                                  preprocess=other.to_dict())
    return {**random_rexnet, "wrong_pre": wrong}

@pytest.fixture(scope="session")
def cli_run(tiny, fmnist_available, tmp_path_factory) -> tuple[object, Path, dict]:
    """One real `rexnet-deploy bench` run: torch eager + ONNX Runtime, 64 images, batch sweep 1,4."""
    out = tmp_path_factory.mktemp("bench-cli") / "run"
    proc = run_cli("bench", "--checkpoint", str(tiny["ckpt"]), "--onnx", str(tiny["onnx"]), *QUICK, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, out, json.loads((out / "results.json").read_text())

def test_bench_cli_end_to_end(cli_run):
    proc, out, results = cli_run
    for name in ("results.json", "results.md", "accuracy_vs_latency.png", "throughput_vs_batch.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = proc.stdout.splitlines()[0]
    for column in ("format", "precision", "size MB", "top-1", "top-5", "ms/step b4", "img/s b4", "p99 ms b4",
                   "× img/s b4", "Δ top-1", "status"):
        assert column in header
    torch_row, ort_row = results["rows"]
    assert (torch_row["name"], ort_row["name"]) == ("torch:tiny", "onnx:tiny")
    assert torch_row["status"] == ort_row["status"] == "ok"
    assert torch_row["is_reference"] and ort_row["reference"] == "torch:tiny"
    assert torch_row["runner"]["threads"] == 1 and ort_row["runner"]["threads"] == 1
    assert torch_row["preprocess_checked"] and ort_row["preprocess_checked"]
    assert ort_row["precision"] == "fp32" and ort_row["format"] == "onnxruntime (cpu)"
    # the same weights in two runtimes: the same predictions on (nearly) every image
    assert torch_row["accuracy"]["num_images"] == 64
    assert abs(torch_row["accuracy"]["top1"] - ort_row["accuracy"]["top1"]) <= 100 / 64 + 1e-9
    for row in (torch_row, ort_row):
        assert [s["batch"] for s in row["speed"]] == [1, 4]
        for s in row["speed"]:
            assert 3 <= s["steps"] == len(s["raw_ms"]) <= 6 and s["timer"] == "perf_counter"
            for q in (50, 90, 99):  # the stored percentiles are those of the stored raw timings
                assert s["ms"][f"p{q}"] == pytest.approx(np.percentile(s["raw_ms"], q), rel=1e-3, abs=1e-3)
    ratios = ort_row["ratios"]
    assert set(ratios["speedup"]) == {"1", "4"}
    b4 = {r["name"]: next(s for s in r["speed"] if s["batch"] == 4) for r in results["rows"]}
    assert ratios["speedup"]["4"] == pytest.approx(b4["onnx:tiny"]["img_per_s"] / b4["torch:tiny"]["img_per_s"])
    assert results["suite"]["threads"] == 1 and results["machine"]["cpu"]
    assert "onnxruntime" in json.dumps(results["machine"]["tool_versions"])
    md = (out / "results.md").read_text()
    assert "## Batch sweep" in md and "![accuracy vs latency](accuracy_vs_latency.png)" in md

def test_results_validate_against_the_schema(cli_run):
    jsonschema = pytest.importorskip("jsonschema")  # a test extra; a bare GPU machine may lack it
    _, _, results = cli_run
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(results)
    broken = []
    bad = copy.deepcopy(results)
    bad["rows"][0]["status"] = "great"
    broken.append(bad)
    bad = copy.deepcopy(results)
    del bad["rows"][1]["accuracy"]
    broken.append(bad)
    bad = copy.deepcopy(results)
    bad["rows"][1]["speed"] = []  # an ok row must have timings
    broken.append(bad)
    bad = copy.deepcopy(results)
    bad["rows"][1]["status"], bad["rows"][1]["reason"] = "skipped", "no GPU"  # a skipped row cannot carry numbers
    broken.append(bad)
    for doc in broken:
        assert not validator.is_valid(doc)

# ---- the gate ----------------------------------------------------------------------------------------------------

def test_gate_passes_at_the_measured_floor_and_fails_above_it(cli_run, tmp_path):
    _, out, results = cli_run
    top1 = results["rows"][1]["accuracy"]["top1"]
    assert check_results(results, {"artifacts": {"tiny/onnx:tiny": {"min_top1": top1}}})
    report = check_results(out / "results.json", {"artifacts": {"tiny/onnx:tiny": {"min_top1": top1 + 0.01}}})
    assert not report and [o.check for o in report.failures] == [f"top-1 ≥ {top1 + 0.01:.2f}"]

    # the same through the CLI, with JUnit XML
    for floor, code in ((top1, 0), (top1 + 0.01, 1)):
        baseline = tmp_path / f"b{code}.yaml"
        baseline.write_text(yaml.safe_dump({"artifacts": {"*/onnx:tiny": {"min_top1": floor}}}))
        junit = tmp_path / f"junit{code}.xml"
        proc = run_cli("check", str(out), "--baseline", str(baseline), "--junit", str(junit))
        assert proc.returncode == code, proc.stdout + proc.stderr
        suite = ET.parse(junit).getroot().find("testsuite")
        assert suite.get("tests") == "1" and suite.get("failures") == str(code)
        assert ("FAIL" in proc.stdout) == bool(code)
        if code:
            assert "check(s) failed" in proc.stderr and "Traceback" not in proc.stderr

def test_results_and_manifests_name_the_cpu_and_its_isa_flags(cli_run, tiny):
    from rexnet_deploy.hardware import X86_FLAGS, cpu_isa_flags, isa_class

    _, out, results = cli_run
    machine = results["machine"]
    assert machine["isa_flags"] == cpu_isa_flags() and machine["isa_class"] == isa_class()
    assert set(machine["isa_flags"]) <= {*X86_FLAGS, "dotprod", "i8mm", "bf16"}
    assert "ISA " in (out / "results.md").read_text()
    assert read_manifest(tiny["onnx"])["built_on"]["isa_flags"] == cpu_isa_flags()
    # the class decides INT8/BF16 speed: spot checks of the ladder
    assert isa_class(["avx2", "avx512f", "avx512_vnni", "amx_int8"]) == "amx"
    assert isa_class(["avx2", "avx512f", "avx512_vnni"]) == "avx512-vnni"
    assert isa_class(["avx2"]) == "avx2" and isa_class(["dotprod", "i8mm"]) == "arm-i8mm"


def test_a_baseline_keyed_by_isa_class_applies_to_that_class_only(cli_run):
    _, _, results = cli_run
    top1 = results["rows"][1]["accuracy"]["top1"]
    here, other = copy.deepcopy(results), copy.deepcopy(results)
    here["machine"]["isa_class"], other["machine"]["isa_class"] = "avx2", "amx"
    gate = {"artifacts": {"tiny/onnx:tiny": {"min_top1": 0}},
            "by_isa_class": {"amx": {"tiny/onnx:tiny": {"min_top1": top1 + 1}}}}
    assert check_results(here, gate) and check_results(here, gate).isa_class == "avx2"
    report = check_results(other, gate)
    assert not report and report.isa_class == "amx"


def test_gate_drops_are_one_sided_and_measured_in_the_same_run(cli_run):
    _, _, results = cli_run
    ref_top1 = results["rows"][0]["accuracy"]["top1"]
    gate = {"artifacts": {"tiny/onnx:tiny": {"max_drop": 0.5}}}
    better, worse = copy.deepcopy(results), copy.deepcopy(results)
    better["rows"][1]["accuracy"]["top1"] = ref_top1 + 5.0  # an improvement passes however large
    worse["rows"][1]["accuracy"]["top1"] = ref_top1 - 0.6
    assert check_results(better, gate)
    assert not check_results(worse, gate)
    # the drop is against the reference in the SAME results: lowering both rows together still passes
    both = copy.deepcopy(worse)
    both["rows"][0]["accuracy"]["top1"] = ref_top1 - 0.6
    assert check_results(both, gate)

def test_gate_speed_floors_missing_rows_and_skips(cli_run):
    _, _, results = cli_run
    speedup = results["rows"][1]["ratios"]["speedup"]["4"]
    assert check_results(results, {"artifacts": {"tiny/onnx:tiny": {"min_speedup": {4: speedup * 0.99}}}})
    assert not check_results(results, {"artifacts": {"tiny/onnx:tiny": {"min_speedup": {4: speedup * 1.01}}}})
    assert not check_results(results, {"artifacts": {"tiny/onnx:tiny": {"min_speedup": {64: 0.1}}}})  # not measured
    assert not check_results(results, {"artifacts": {"tiny/renamed": {"min_top1": 0}}})  # matches no row
    skipped = copy.deepcopy(results)
    skipped["rows"][1].update(status="skipped", reason="no GPU", accuracy=None, speed=[], ratios=None)
    assert check_results(skipped, {"artifacts": {"tiny/onnx:tiny": {"min_top1": 99}}})
    assert not check_results(skipped, {"artifacts": {"tiny/onnx:tiny": {"min_top1": 99, "allow_skip": False}}})
    failed = copy.deepcopy(skipped)
    failed["rows"][1]["status"] = "failed"
    assert not check_results(failed, {"artifacts": {"tiny/onnx:tiny": {"min_top1": 0}}})
    # a drop against a reference that did not run is a failure, not a pass
    no_ref = copy.deepcopy(results)
    no_ref["rows"][0].update(status="skipped", reason="no GPU", accuracy=None, speed=[])
    assert not check_results(no_ref, {"artifacts": {"tiny/onnx:tiny": {"max_drop": 1.0}}})

def test_junit_marks_skips(cli_run, tmp_path):
    _, _, results = cli_run
    skipped = copy.deepcopy(results)
    skipped["rows"][1].update(status="skipped", reason="no GPU", accuracy=None, speed=[], ratios=None)
    report = check_results(skipped, {"artifacts": {"*": {"min_top1": 0}}})
    root = ET.parse(write_junit(report, tmp_path / "j.xml")).getroot()
    assert root.find("testsuite").get("skipped") == "1" and report.passed


def test_junit_parses_with_a_third_party_parser_with_times_and_timestamp(cli_run, tmp_path):
    """CI systems read the file with their own JUnit parsers: every case has a time, the suite a timestamp."""
    import datetime

    from junitparser import Failure, JUnitXml

    _, _, results = cli_run
    failing = copy.deepcopy(results)
    report = check_results(failing, {"artifacts": {"*": {"min_top1": 101}}})
    suites = list(JUnitXml.fromfile(str(write_junit(report, tmp_path / "j.xml"))))
    assert len(suites) == 1 and suites[0].tests == len(report.outcomes) == suites[0].failures > 0
    assert isinstance(datetime.datetime.fromisoformat(suites[0].timestamp), datetime.datetime)
    assert suites[0].time is not None and suites[0].time >= 0
    cases = list(suites[0])
    assert cases and all(case.time is not None and case.time >= 0 for case in cases)
    assert all(isinstance(case.result[0], Failure) for case in cases)

# ---- suites: several artifacts, rows that cannot run ------------------------------------------------------------

def _write_suite(path: Path, tiny: dict, extra: list[dict]) -> Path:
    suite = {"name": "t", "eval_images": 32, "batches": [1, 2], "threads": 1,
             "timing": {"warmup_steps": 1, "warmup_seconds": 0, "steps": 3, "min_steps": 2, "max_seconds": 1},
             "vars": {"root": str(tiny["root"])},
             "models": [{"name": "tiny", "artifacts": [
                 {"name": "ort-fp32", "onnx": "${root}/tiny.onnx"},
                 {"name": "torch-fp32", "checkpoint": "${root}/tiny.pt"},
                 *extra]}]}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where TensorRT/CUDA cannot run")
def test_unavailable_backends_give_skipped_rows_and_the_run_goes_on(tiny, fmnist_available, tmp_path):
    suite_path = _write_suite(tmp_path / "s.yaml", tiny, [
        {"name": "openvino-fp32", "engine": "${root}/tiny.openvino.xml"},
        {"name": "ort-tensorrt", "onnx": "${root}/tiny.onnx", "device": "tensorrt"},
        {"name": "torch-cuda", "checkpoint": "${root}/tiny.pt", "device": "cuda"},
        {"name": "trt-engine", "engine": "${root}/tiny.engine", "optional": True},
        {"name": "other-preprocess", "checkpoint": "${root}/tiny-other-pre.pt"},
    ])
    results = run_bench(load_suite(suite_path), tmp_path / "out", progress=False)
    rows = {r["name"]: r for r in results["rows"]}
    assert rows["ort-fp32"]["status"] == rows["torch-fp32"]["status"] == "ok"
    assert rows["ort-fp32"]["reference"] == "torch-fp32"  # the torch eager row, wherever it is listed
    assert rows["ort-fp32"]["ratios"]["versus"] == "torch-fp32"
    ov = rows["openvino-fp32"]
    assert ov["status"] == "ok" and ov["format"] == "openvino" and ov["runner"]["backend"] == "openvino"
    assert ov["runner"]["threads"] == 1 and ov["precision"] == "fp32"
    assert abs(ov["ratios"]["top1_delta"]) <= 100 / 32 + 1e-9  # same weights: at most one image of 32 differs
    assert rows["ort-tensorrt"]["status"] == "skipped" and "TensorrtExecutionProvider" in rows["ort-tensorrt"]["reason"]
    assert rows["torch-cuda"]["status"] == "skipped" and "CUDA" in rows["torch-cuda"]["reason"]
    assert rows["trt-engine"]["status"] == "skipped" and "not found" in rows["trt-engine"]["reason"]
    assert rows["other-preprocess"]["status"] == "failed" and "preprocessing" in rows["other-preprocess"]["reason"]
    for name in ("ort-tensorrt", "torch-cuda", "trt-engine", "other-preprocess"):
        assert rows[name]["ratios"] is None and rows[name]["speed"] == [] and rows[name]["accuracy"] is None
    pytest.importorskip("jsonschema").validate(results, json.loads(SCHEMA_PATH.read_text()))
    md = (tmp_path / "out" / "results.md").read_text()
    assert "skipped: " in md and "failed: " in md

def test_bench_refuses_bad_input_in_one_line(tiny, tmp_path, capsys):
    missing = _write_suite(tmp_path / "m.yaml", tiny, [{"name": "gone", "onnx": str(tmp_path / "gone.onnx")}])
    with pytest.raises(UserError, match="gone.onnx does not exist"):
        run_bench(load_suite(missing), progress=False)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("models: [{name: a, artifacts: [{onnx: x.onnx, devise: cpu}]}]\n")
    undefined = tmp_path / "v.yaml"
    undefined.write_text("models: [{name: a, artifacts: [{onnx: '${nowhere}/x.onnx'}]}]\n")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    cases = [
        (["bench"], "nothing to bench"),
        (["bench", "--suite", str(unknown)], "unknown key 'devise'"),
        (["bench", "--suite", str(undefined)], "--set nowhere=VALUE"),
        (["bench", "--suite", "no-such-suite"], "known suites: "),
        (["bench", "--onnx", str(tiny["onnx"]), "--batches", "1,x"], "batch sizes must be integers"),
        (["bench", "--onnx", str(tiny["onnx"]), *QUICK, "--out", str(occupied)], "holds other files"),
        (["check", str(tmp_path / "nothing.json"), "--baseline", "fmnist-cpu"], "not found"),
    ]
    for args, message in cases:  # in-process: the CLI's own error handling, without a subprocess per case
        try:
            code = main(args)
        except SystemExit as exc:  # argparse rejects malformed flags itself
            code = exc.code
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
    assert (occupied / "keep.txt").read_text() == "mine"


def test_committed_suites_and_baselines_parse(tmp_path, monkeypatch):
    from rexnet_deploy.bench.check import BASELINES_DIR, resolve_baseline_path
    from rexnet_deploy.bench.suite import SUITES_DIR, resolve_suite_path

    suites = sorted(SUITES_DIR.glob("*.yaml"))
    baselines = sorted(BASELINES_DIR.glob("*.yaml"))
    assert suites and baselines
    monkeypatch.chdir(tmp_path)  # package data: found by name from any folder, not only the repository root
    assert resolve_suite_path("fmnist-cpu") == SUITES_DIR / "fmnist-cpu.yaml"
    assert resolve_baseline_path("pipeline-quick") == BASELINES_DIR / "pipeline-quick.yaml"
    names = set()
    for path in suites:
        suite = load_suite(path)
        assert suite.dataset == "fashion_mnist" and suite.threads == 2
        names |= {f"{g.name}/{a.name}" for g, a in suite.artifacts()}
    # the pipeline builds its suite from its own run: its row names are those of the recorded run
    recorded = load_results(ROOT / "bench" / "results" / "pipeline-quick" / "results.json")
    names |= {f"{r['group']}/{r['name']}" for r in recorded["rows"]}
    for path in baselines:
        entries, _ = load_baseline(path)
        for pattern in entries:  # every baseline entry names a row some suite produces
            assert any(fnmatch.fnmatchcase(n, pattern) for n in names), (path.name, pattern)
    with pytest.raises(UserError, match="unknown key 'min_top'"):
        load_baseline({"artifacts": {"a/b": {"min_top": 1}}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA-event timing of device inputs)")
def test_gpu_rows_time_device_inputs_with_cuda_events(tiny, fmnist_available, tmp_path):
    suite_path = _write_suite(tmp_path / "g.yaml", tiny, [
        {"name": "torch-cuda", "checkpoint": "${root}/tiny.pt", "device": "cuda"},
        {"name": "ort-cuda", "onnx": "${root}/tiny.onnx", "device": "cuda"},
    ])
    results = run_bench(load_suite(suite_path), progress=False)
    rows = {r["name"]: r for r in results["rows"]}
    gpu = rows["torch-cuda"]
    assert gpu["status"] == "ok" and results["machine"]["gpus"]
    assert all(s["timer"] == "cuda_events" and s["input_on_device"] for s in gpu["speed"])
    assert abs(gpu["ratios"]["top1_delta"]) <= 100 / 32 + 1e-9
    # ONNX Runtime takes host inputs: timed by the wall clock around its copies (skipped if its CUDA libs are absent)
    assert rows["ort-cuda"]["status"] in ("ok", "skipped")
    assert all(s["timer"] == "perf_counter" and not s["input_on_device"] for s in rows["ort-cuda"]["speed"])


def test_profile_sums_kernel_time_and_macs_by_layer_kind(tiny, tmp_path):
    from rexnet_deploy.backends import open_runner
    from rexnet_deploy.backends.base import LAYER_KINDS
    from rexnet_deploy.bench.profile import profile_file
    from rexnet_deploy.models import count_macs

    # the runner's records follow the base contract: the profile reads nothing else
    with open_runner(tiny["onnx"], threads=1) as runner:
        layers = runner.profile_layers(2, runs=2, warmup=1)
    assert layers and all({"name", "layer_type", "kernel", "kind", "precision", "ms"} <= set(r) for r in layers)
    assert all(r["kind"] in LAYER_KINDS and r["ms"] >= 0 for r in layers)
    assert {r["precision"] for r in layers if "conv" in r["kind"]} == {"fp32"}

    profile = profile_file(tiny["onnx"], batch=2, threads=1, runs=3)
    rows = {r["layer kind"]: r for r in profile["rows"]}
    assert profile["runtime"] == "onnxruntime"
    assert {"depthwise conv", "1×1 conv", "k×k conv (stem)", "classifier"} <= set(rows)
    assert rows["1×1 conv"]["kernels in"] == "fp32 100 %"
    assert all(r["ms / batch"] >= 0 for r in rows.values()) and profile["kernel_ms_per_batch"] > 0
    assert sum(r["time %"] for r in rows.values()) == pytest.approx(100, abs=0.5)
    # the MACs read from the ONNX graph's shapes are the model's own count
    model, _ = load_model(tiny["ckpt"])
    assert profile["macs_per_image"] == count_macs(model, (3, 32, 32))
    assert rows["1×1 conv"]["MACs %"] > rows["depthwise conv"]["MACs %"]

    proc = run_cli("profile", str(tiny["onnx"]), "--batch", "2", "--runs", "2", "--threads", "1",
                   "--out", str(tmp_path / "prof"))
    assert proc.returncode == 0, proc.stderr
    assert "depthwise conv" in proc.stdout
    for name in ("profile.json", "profile.md", "profile.png"):
        assert (tmp_path / "prof" / name).is_file(), name
    bad = run_cli("profile", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "p2"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_openvino_profile_counts_the_same_macs_and_names_the_kernels_precision(tiny, tmp_path):
    from rexnet_deploy.bench.profile import profile_file
    from rexnet_deploy.hardware import has_native_bf16

    xml = tiny["xml"]
    if xml is None:
        pytest.skip("OpenVINO is not installed here")
    profile = profile_file(xml, batch=2, threads=1, runs=3)
    rows = {r["layer kind"]: r for r in profile["rows"]}
    assert profile["runtime"] == "openvino" and profile["kernel_ms_per_batch"] > 0
    assert {"depthwise conv", "1×1 conv", "k×k conv (stem)"} <= set(rows)
    assert sum(r["time %"] for r in rows.values()) == pytest.approx(100, abs=0.5)
    # the convolutions' MACs from OpenVINO's model equal those from the ONNX graph's shapes
    onnx_rows = {r["layer kind"]: r for r in profile_file(tiny["onnx"], batch=2, threads=1, runs=1)["rows"]}
    for kind in ("depthwise conv", "1×1 conv", "k×k conv (stem)"):
        assert rows[kind]["MMACs / image"] == onnx_rows[kind]["MMACs / image"], kind
    # the tool's default for an FP32 file is f32 arithmetic: every conv kernel says so
    assert rows["1×1 conv"]["kernels in"] == "fp32 100 %" and rows["depthwise conv"]["kernels in"] == "fp32 100 %"
    if has_native_bf16():
        bf16 = {r["layer kind"]: r for r in profile_file(xml, batch=2, threads=1, runs=2, mode="bf16")["rows"]}
        assert bf16["1×1 conv"]["kernels in"].startswith("bf16")

    proc = run_cli("profile", str(xml), "--batch", "2", "--runs", "2", "--threads", "1", "--out", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert "kernels in" in proc.stdout and "(openvino)" in (tmp_path / "p" / "profile.md").read_text()
    bad = run_cli("profile", str(tiny["onnx"]), "--mode", "bf16", "--out", str(tmp_path / "p2"))
    assert bad.returncode == 2 and "--mode bf16" in bad.stderr and "Traceback" not in bad.stderr


def test_a_bench_that_measured_nothing_is_one_line(tmp_path, fmnist_available):
    """Every row the user named was skipped (a TensorRT engine on a machine without TensorRT): exit 2, one line."""
    engine = tmp_path / "garbage.engine"
    engine.write_bytes(b"not an engine")
    proc = run_cli("bench", "--engine", str(engine), *QUICK, "--out", str(tmp_path / "out"))
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "warning" not in line]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and "nothing was measured" in lines[0] and "garbage/engine:garbage" in lines[0]


def test_a_starved_row_is_warned_about_and_small_ratios_keep_their_digits():
    from rexnet_deploy.bench.results import starved_rows
    from rexnet_deploy.report import format_table

    calm = {"batch": 4, "ms": {"median": 2.0, "p99": 3.0}}
    busy = {"batch": 8, "ms": {"median": 2.0, "p99": 12.0}}
    queued = {**busy, "in_flight": 2}  # waits for a free request: near zero, then a whole batch, on any machine
    results = {"rows": [{"group": "g", "name": "a", "speed": [calm]}, {"group": "g", "name": "b", "speed": [busy]},
                        {"group": "g", "name": "c", "speed": [queued]}]}
    warnings = starved_rows(results)
    assert len(warnings) == 1 and "g/b at batch 8" in warnings[0] and "6.0×" in warnings[0]
    assert format_table([{"× img/s": 0.0042}]).splitlines()[-1].strip() == "0.0042"  # not 0.00
