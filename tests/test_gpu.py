"""The GPU path outside TensorRT engines: bench timing (GPU compute time and host latency, as trtexec reports
them apart) and ONNX Runtime's CUDA and TensorRT providers.

What can be checked without a GPU runs everywhere (the timing entries' layout and schema, with a stand-in
runner); the proofs on a GPU are marked ``gpu`` and skip with the reason elsewhere. ``scripts/gpu-check``
runs them on a GPU machine. The ONNX Runtime checks start a fresh Python: which libraries a provider finds
depends on what the process imported before (this test process has long imported torch and tried tensorrt).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, randomize_bn

from rexnet_deploy.backends import Runner
from rexnet_deploy.bench import harness
from rexnet_deploy.bench.results import SCHEMA_PATH
from rexnet_deploy.bench.timing import Timing, measure_steps

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
SPEED_KEYS = {"batch", "steps", "ms", "img_per_s", "warmup_steps", "timer", "input_on_device", "rounds", "raw_ms",
              "in_flight"}


def _speed_validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator({"$ref": "#/$defs/speed", "$defs": schema["$defs"]})


class _StandInGpuRunner(Runner):
    """Says it is on a GPU; records which entry point each timing used (host numpy or device tensor)."""

    backend = "stand-in"

    def __init__(self) -> None:
        super().__init__()
        self.device = torch.device("cpu")
        self.calls: list[str] = []

    @property
    def on_gpu(self) -> bool:
        return True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append("numpy")
        return np.zeros((len(batch), 10), np.float32)

    def infer_tensor(self, batch):
        assert isinstance(batch, torch.Tensor)
        self.calls.append("tensor")
        return batch


def test_gpu_rows_get_gpu_compute_time_and_host_latency_cpu_rows_stay_as_they_are(monkeypatch):
    timed = []

    def fake_measure(step, timing, cuda=False, device=None, drain=None):
        timed.append((cuda, device))
        step()
        return ([2.0, 4.0, 3.0] if cuda else [5.0, 6.0]), 1

    monkeypatch.setattr(harness, "measure_steps", fake_measure)
    batch = np.zeros((4, 3, 8, 8), np.float32)
    runner = _StandInGpuRunner()
    entry = harness.measure_batch(runner, batch, Timing())
    # GPU compute time: CUDA events on the runner's device, the input already there
    assert timed[0] == (True, runner.device) and runner.calls == ["tensor", "numpy"]
    assert entry["timer"] == "cuda_events" and entry["input_on_device"] is True and entry["ms"]["median"] == 3.0
    # end to end: host numpy in, numpy out, by the wall clock
    host = entry["host_latency"]
    assert timed[1] == (False, None) and host["timer"] == "perf_counter" and host["input_on_device"] is False
    assert host["ms"]["median"] == 5.5 and host["batch"] == 4 and host["raw_ms"] == [5.0, 6.0]
    validator = _speed_validator()
    validator.validate(entry)
    bad = {**entry, "host_latency": {**host, "timer": "cuda_events"}}  # a host latency is never event-timed
    assert not validator.is_valid(bad)

    class CpuRunner(_StandInGpuRunner):
        on_gpu = False

    cpu = harness.measure_batch(CpuRunner(), batch, Timing())
    assert set(cpu) == SPEED_KEYS and cpu["timer"] == "perf_counter" and cpu["input_on_device"] is False
    validator.validate(cpu)


GPU_CHECK = ROOT / "scripts" / "gpu-check"


def _nvidia_gpu_here() -> bool:
    if glob.glob("/proc/driver/nvidia/gpus/*"):
        return True
    if not shutil.which("nvidia-smi"):
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def test_gpu_check_is_bash_and_stops_in_one_line_where_there_is_no_gpu(tmp_path):
    assert subprocess.run(["bash", "-n", str(GPU_CHECK)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(GPU_CHECK), "--help"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0 and "--offline" in usage.stdout and "fmnist/" in usage.stdout
    bad = subprocess.run(["bash", str(GPU_CHECK), "--fast"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "gpu-check: unknown argument --fast: run scripts/gpu-check or scripts/gpu-check --offline (--help says more)"]
    if _nvidia_gpu_here():
        pytest.skip("an NVIDIA GPU is here: the preflight lets the check run (scripts/gpu-check does the rest)")
    out = tmp_path / "out"
    for args in ([], ["--offline"]):
        proc = subprocess.run(["bash", str(GPU_CHECK), *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "OUT": str(out)})
        assert proc.returncode == 2, proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gpu-check: no NVIDIA GPU here"), proc.stderr
        assert not out.exists()  # the preflight comes before any install, run or write


# --- on a GPU ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cuda_runner():
    from rexnet_deploy.backends.torch import TorchRunner
    from rexnet_deploy.models import create_model

    torch.manual_seed(0)
    with TorchRunner(randomize_bn(create_model("rexnet", width=0.5, num_classes=10)), device="cuda") as runner:
        yield runner


@pytest.mark.gpu
@needs_cuda
def test_gpu_timing_splits_compute_from_host_latency(cuda_runner):
    """A torch CUDA row: event-timed compute on a device input, and a wall-clock host latency around copies."""
    timing = Timing(warmup_steps=3, warmup_seconds=0, steps=30, min_steps=5, max_seconds=2)
    batch = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    entry = harness.measure_batch(cuda_runner, batch, timing)
    _speed_validator().validate(entry)
    assert entry["timer"] == "cuda_events" and entry["input_on_device"]
    host = entry["host_latency"]
    assert host["timer"] == "perf_counter" and not host["input_on_device"] and host["steps"] >= 5
    # the host waits for the same GPU work plus two copies: never clearly faster than the GPU time alone
    assert host["ms"]["median"] >= 0.8 * entry["ms"]["median"], (host["ms"], entry["ms"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (events on a runner's own device)")
def test_cuda_event_timing_follows_the_runner_device():
    """Events are recorded on the runner's device: work on cuda:1 timed from a process whose current device is 0."""
    x = torch.randn(2048, 2048, device="cuda:1")
    times, _ = measure_steps(lambda: x @ x, Timing(warmup_steps=2, warmup_seconds=0, steps=5, min_steps=5),
                             cuda=True, device=x.device)
    assert torch.cuda.current_device() == 0
    assert min(times) > 0.05  # a 2048² matmul takes well over 50 µs; events on idle cuda:0 would read ~0


def _ort_has(provider: str) -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return provider in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from rexnet_deploy.export import export_onnx
    from rexnet_deploy.models import create_model

    torch.manual_seed(0)
    model = randomize_bn(create_model("rexnet", width=0.25, num_classes=10))
    return export_onnx(model, tmp_path_factory.mktemp("ort-gpu") / "tiny.onnx", (3, 32, 32))


def _fresh_python(code: str, env_extra: dict[str, str] | None = None) -> dict:
    """Run ``code`` in a new interpreter (nothing imported before it) and return the JSON it prints last."""
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_OPEN = """
import json
import numpy as np
from rexnet_deploy.backends import RuntimeUnavailable, open_runner
try:
    runner = open_runner({path!r}, device={device!r})
except RuntimeUnavailable as exc:
    print(json.dumps({{"reason": str(exc)}})); raise SystemExit
out = [runner.infer(np.zeros((n, 3, 32, 32), np.float32)).shape[0] for n in {batches!r}]
print(json.dumps({{"reason": None, "describe": runner.describe(), "out": out}}))
"""


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not _ort_has("CUDAExecutionProvider"), reason="needs onnxruntime-gpu (no CUDAExecutionProvider)")
def test_ort_cuda_provider_starts_in_a_fresh_process(tiny_onnx):
    """B4 (CUDA side): the CUDA provider finds its CUDA/cuDNN libraries (torch loads them first), or says why."""
    result = _fresh_python(_OPEN.format(path=str(tiny_onnx), device="cuda", batches=[1, 8]))
    assert result["reason"] is None, result["reason"]
    assert result["describe"]["providers"][0] == "CUDAExecutionProvider" and result["out"] == [1, 8]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not _ort_has("TensorrtExecutionProvider"),
                    reason="needs onnxruntime-gpu (no TensorrtExecutionProvider)")
def test_ort_tensorrt_provider_finds_tensorrt_or_says_why(tiny_onnx, tmp_path):
    """B4: in a fresh process the TensorRT provider starts (``import tensorrt`` loads libnvinfer first), or the
    row's reason is the cause found: TensorRT missing, or another major than the provider links."""
    import onnxruntime

    from rexnet_deploy.backends.onnxruntime import _probe_tensorrt, tensorrt_provider_reason

    expected = tensorrt_provider_reason(**_probe_tensorrt(onnxruntime))
    result = _fresh_python(_OPEN.format(path=str(tiny_onnx), device="tensorrt", batches=[1]),
                           {"XDG_CACHE_HOME": str(tmp_path)})
    if expected is not None:
        assert result["reason"] == expected  # e.g. "links TensorRT 10 … but TensorRT 11.4 is installed"
        pytest.skip(f"ONNX Runtime's TensorRT provider cannot run here, for the reason checked: {expected}")
    assert result["reason"] is None, result["reason"]
    assert result["describe"]["providers"][0] == "TensorrtExecutionProvider"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.skipif(not _ort_has("TensorrtExecutionProvider"),
                    reason="needs onnxruntime-gpu (no TensorrtExecutionProvider)")
def test_ort_tensorrt_provider_builds_once_for_the_whole_batch_range(tiny_onnx, tmp_path):
    """B5: with the explicit profile and engine cache, the engine built for batch 1 serves 64 and 256 too, and a
    second process loads it instead of building again."""
    import onnxruntime

    from rexnet_deploy.backends.onnxruntime import _probe_tensorrt, tensorrt_provider_reason

    reason = tensorrt_provider_reason(**_probe_tensorrt(onnxruntime))
    if reason:
        pytest.skip(reason)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = _fresh_python(_OPEN.format(path=str(tiny_onnx), device="tensorrt", batches=[1]), env)
    assert first["reason"] is None and first["out"] == [1], first
    options = first["describe"]["provider_options"]
    assert options["trt_profile_max_shapes"].endswith(":256x3x32x32")
    assert not any(k in options for k in ("trt_fp16_enable", "trt_int8_enable"))
    cache = Path(options["trt_engine_cache_path"])
    built = {p: p.stat().st_mtime_ns for p in cache.glob("*.engine")}
    assert built, f"no engine cached in {cache}"
    assert any(Path(options["trt_timing_cache_path"]).glob("*timing*"))
    # a new process, every batch size of the sweep: the cached engine covers them all, nothing is rebuilt
    second = _fresh_python(_OPEN.format(path=str(tiny_onnx), device="tensorrt", batches=[1, 64, 256, 3]), env)
    assert second["reason"] is None and second["out"] == [1, 64, 256, 3], second
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.engine")} == built


# ---- the trainer on a GPU: a CPU run resumed with AMP, and the GPU the user names --------------------------

_SHORT = ["--recipe", "fmnist-cpu", "--width", "0.25", "--set", "train_subset=512", "--set", "val_subset=256",
          "--batch-size", "128", "--no-progress"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (AMP GradScaler state)")
def test_a_cpu_run_resumes_on_the_gpu_with_amp(tmp_path, fmnist_available):
    from conftest import run_cli

    run = tmp_path / "run"
    first = run_cli("train", *_SHORT, "--epochs", "1", "--device", "cpu", "--out", str(run))
    assert first.returncode == 0, first.stderr
    # the CPU run saved an empty scaler state; an enabled GradScaler used to refuse it on load
    resumed = run_cli("train", "--resume", str(run), "--epochs", "2", "--device", "cuda")  # amp: true in fmnist-cpu
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (training on cuda:1)")
def test_single_process_training_runs_on_the_gpu_it_is_given():
    from rexnet_deploy.train.trainer import distributed_env

    env = distributed_env("cuda:1")
    assert env.device == torch.device("cuda", 1) and torch.cuda.current_device() == 1
