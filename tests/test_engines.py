"""`rexnet-deploy build`: OpenVINO engines built and run on this CPU; TensorRT's pure parts everywhere
(with stand-ins for the ``tensorrt`` module, a builder config and an engine), its builds and runs on a
CUDA GPU with TensorRT (marked ``gpu``, skipped elsewhere with the reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import randomize_bn, run_cli

from rexnet_deploy.artifacts import read_manifest, sha256_file, write_manifest
from rexnet_deploy.backends import RuntimeUnavailable, get_backend, open_runner
from rexnet_deploy.backends.common import gpu_slug, plan_chunks, run_chunked
from rexnet_deploy.backends.openvino import OpenVinoRunner
from rexnet_deploy.backends.tensorrt import (
    _strongly_typed_flags,
    apply_math_flags,
    attach_timing_cache,
    default_timing_cache,
    device_index,
    engine_manifest_fields,
    engine_mismatch,
    execution_context,
    input_profile,
    profile_batch_bounds,
    profile_shapes,
    set_input_shape,
    tensorrt_precision,
    unavailable_reason,
)
from rexnet_deploy.bundle import BundleRequest, build_engine, export_bundle, read_bundle
from rexnet_deploy.data import load_fashion_mnist
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import compare_logits
from rexnet_deploy.models import create_model, save_model_checkpoint

TRT_MISSING = unavailable_reason()
needs_trt = pytest.mark.skipif(TRT_MISSING is not None, reason=f"needs TensorRT and a CUDA GPU: {TRT_MISSING}")

FACTS = {"tensorrt_version": "10.13.3.9", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, fmnist_available) -> Path:
    """A small trained-shaped model (rexnet 0.5 at 32×32, BN-randomised) exported in every precision."""
    from rexnet_deploy.quant import build_calibration_set

    tmp = tmp_path_factory.mktemp("engines")
    model = randomize_bn(create_model("rexnet", width=0.5, num_classes=10))
    ckpt = save_model_checkpoint(model, tmp / "r05.pt", dataset="fashion_mnist",
                                 preprocess=load_fashion_mnist("test").preprocess.to_dict())
    calib = build_calibration_set("fashion_mnist", num_images=32, out=tmp / "calib.pt")
    return export_bundle(BundleRequest(checkpoint=ckpt, precisions=["fp32", "fp16", "int8"], out_dir=tmp / "bundle",
                                       calibration=calib, engines=["openvino"], parity_images=32, eval_images=0,
                                       progress=False))


def _images(n: int = 40) -> np.ndarray:
    test = load_fashion_mnist("test")
    return test.preprocess(test.images[200:200 + n]).numpy()


# --- OpenVINO, on this CPU ---------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_openvino_engine_runs_and_matches_onnxruntime(bundle, precision):
    xml = bundle / f"rexnet-0.5.{precision}.openvino.xml"
    onnx_path = bundle / f"rexnet-0.5.{precision}.onnx"
    manifest = read_manifest(xml)
    assert manifest["backend"] == "openvino" and manifest["precision"] == precision
    assert manifest["source_onnx_sha256"] == sha256_file(onnx_path) and manifest["parity"]["passed"]
    assert sha256_file(bundle / manifest["weights"]["file"]) == manifest["weights"]["sha256"]
    assert any((bundle / manifest["cache_dir"]).iterdir()), "the build warms the compile cache"
    images = _images()
    with open_runner(onnx_path) as ort_runner, open_runner(xml, threads=1) as ov_runner:
        assert isinstance(ov_runner, OpenVinoRunner) and ov_runner.precision == precision
        assert ov_runner.describe()["threads"] == 1 and ov_runner.describe()["inference_precision"] == "f32"
        result = compare_logits(ort_runner.infer(images), ov_runner.infer(images), precision)
        assert ov_runner.infer(images[:1]).shape == (1, 10)  # dynamic batch
    assert result["passed"], result
    if precision == "fp32":
        assert result["max_abs_diff"] <= 1e-4


def test_build_cli_openvino(bundle, tmp_path):
    out = tmp_path / "engine.xml"
    proc = run_cli("build", str(bundle / "rexnet-0.5.fp32.onnx"), "--backend", "openvino", "--out", str(out),
                   "--parity-images", "16")
    assert proc.returncode == 0, proc.stderr
    assert "fashion_mnist test split" in proc.stdout and "openvino" in proc.stdout
    manifest = read_manifest(out)
    assert manifest["sha256"] == sha256_file(out) and manifest["parity"]["passed"]
    assert manifest["parity"]["num_images"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine.bin", "engine.ovcache", "engine.xml",
                                                          "engine.xml.json"]
    # TensorRT-only options are refused for OpenVINO rather than ignored
    proc = run_cli("build", str(bundle / "rexnet-0.5.fp32.onnx"), "--backend", "openvino", "--out", str(out),
                   "--max-batch", "8")
    assert proc.returncode == 2 and "--max-batch apply to tensorrt builds only, not openvino" in proc.stderr


def test_bundle_int8_is_the_ort_layout_and_openvino_runs_it(bundle):
    files = {f["file"]: f for f in read_bundle(bundle)["files"]}
    assert files["rexnet-0.5.int8.openvino.xml"]["precision"] == "int8"
    assert "rexnet-0.5.int8-tensorrt.onnx" not in files  # built only where TensorRT is


# --- TensorRT: what runs without a GPU ----------------------------------------------------------------------

def test_profile_shapes():
    assert profile_shapes((3, 32, 32), 1, 64, 256) == {"min": [1, 3, 32, 32], "opt": [64, 3, 32, 32],
                                                      "max": [256, 3, 32, 32]}
    assert profile_shapes((3, 32, 32), max_batch=32)["opt"] == [32, 3, 32, 32]  # default opt clamped
    assert profile_shapes((3, 32, 32))["max"] == [256, 3, 32, 32]
    with pytest.raises(UserError, match="min ≤ opt ≤ max"):
        profile_shapes((3, 32, 32), 8, 4, 16)
    with pytest.raises(UserError, match="--min-batch 0"):
        profile_shapes((3, 32, 32), 0, 4, 16)
    with pytest.raises(UserError, match="dynamic non-batch"):
        profile_shapes((3, -1, -1), 1, 4, 16)


def test_engine_manifest_records_what_the_engine_is_bound_to(bundle):
    onnx_path = bundle / "rexnet-0.5.fp16.onnx"
    shapes = profile_shapes((3, 32, 32), 1, 8, 32)
    fields = engine_manifest_fields(onnx_path, FACTS, shapes, "fp16", 512, "/tmp/t.cache")
    assert fields["source_onnx_sha256"] == sha256_file(onnx_path) and fields["source_onnx"] == onnx_path.name
    assert fields["tensorrt_version"] == "10.13.3.9" and fields["compute_capability"] == "9.0"
    assert fields["gpu_name"] == FACTS["gpu_name"] and fields["profile"] == shapes
    assert fields["precision"] == "fp16" and fields["strongly_typed"] is True and fields["workspace_mib"] == 512
    assert fields["tf32"] is False
    # the one line `build` prints and the bundle table shows
    assert fields["note"] == "built for NVIDIA H100 80GB HBM3 (compute 9.0) with TensorRT 10.13.3.9; profile batch " \
                             f"{shapes['min'][0]}/{shapes['opt'][0]}/{shapes['max'][0]}; TF32 off"
    assert engine_manifest_fields(onnx_path, FACTS, shapes, "fp32", 512, None, tf32=True)["tf32"] is True


def test_timing_cache_is_keyed_by_tensorrt_gpu_model_and_capability(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = default_timing_cache(FACTS)
    assert path == tmp_path / "rexnet-deploy" / "tensorrt-10.13.3.9-sm90-nvidia-h100-80gb-hbm3.timing-cache"
    # two GPUs of one capability (both sm_90) no longer overwrite each other's cache
    assert default_timing_cache({**FACTS, "gpu_name": "NVIDIA H200"}) != path
    assert default_timing_cache({**FACTS, "tensorrt_version": "11.4.0.106"}) != path
    assert gpu_slug("NVIDIA GeForce RTX 4090 / (test)") == "nvidia-geforce-rtx-4090-test" and gpu_slug("") == "gpu"


def test_engine_mismatch_detection():
    manifest = {"artifact": "m.engine", **FACTS}
    assert engine_mismatch(manifest, FACTS) is None
    assert engine_mismatch(manifest, {**FACTS, "gpu_name": "NVIDIA H100 PCIe"}) is None  # same capability
    other_gpu = engine_mismatch(manifest, {**FACTS, "gpu_name": "NVIDIA A100", "compute_capability": "8.0"})
    assert "rebuild on this GPU" in other_gpu and "compute 9.0" in other_gpu and "compute 8.0" in other_gpu
    other_trt = engine_mismatch(manifest, {**FACTS, "tensorrt_version": "11.0.0.1"})
    assert "rebuild on this GPU" in other_trt and "TensorRT 11.0.0.1" in other_trt
    assert "lacks compute_capability" in engine_mismatch({"tensorrt_version": "10.0"}, FACTS)


def test_precision_selection_for_tensorrt(bundle, tmp_path):
    from rexnet_deploy.quant import quantize_onnx

    assert tensorrt_precision(bundle / "rexnet-0.5.fp32.onnx") == "fp32"
    assert tensorrt_precision(bundle / "rexnet-0.5.fp16.onnx") == "fp16"
    with pytest.raises(UserError, match="--target tensorrt"):
        tensorrt_precision(bundle / "rexnet-0.5.int8.onnx")  # uint8 activations: ONNX Runtime's CPU layout
    calib = bundle.parent / "calib.pt"
    trt_int8 = quantize_onnx(bundle / "rexnet-0.5.fp32.onnx", calib, tmp_path / "m.int8-tensorrt.onnx",
                             target="tensorrt", progress=False)
    assert tensorrt_precision(trt_int8) == "int8"


@pytest.mark.skipif(TRT_MISSING is None, reason="TensorRT and a GPU are here: the gpu tests cover building")
def test_tensorrt_build_without_tensorrt_exits_2_with_one_line(bundle, tmp_path):
    proc = run_cli("build", str(bundle / "rexnet-0.5.fp32.onnx"), "--backend", "tensorrt",
                   "--out", str(tmp_path / "m.engine"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and TRT_MISSING in lines[0]
    assert not list(tmp_path.iterdir())
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    write_manifest(tmp_path / "m.engine", {"backend": "tensorrt", **FACTS})
    with pytest.raises(RuntimeUnavailable, match="TensorRT|CUDA"):
        open_runner(tmp_path / "m.engine")


def test_bad_build_input_exits_2(tmp_path):
    proc = run_cli("build", str(tmp_path / "missing.onnx"), "--backend", "openvino")
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_batches_outside_the_profile_are_split_and_padded():
    assert plan_chunks(128, 1, 32) == [(0, 32, 0), (32, 64, 0), (64, 96, 0), (96, 128, 0)]  # parity's 128 on max 32
    assert plan_chunks(70, 1, 32) == [(0, 32, 0), (32, 64, 0), (64, 70, 0)]
    assert plan_chunks(3, 8, 64) == [(0, 3, 5)]  # padded up to the profile minimum
    assert plan_chunks(66, 8, 32) == [(0, 32, 0), (32, 64, 0), (64, 66, 6)]
    assert plan_chunks(256, 1, None) == [(0, 256, 0)]  # max unknown: one enqueue, TensorRT checks the shape
    assert plan_chunks(32, 1, 32) == [(0, 32, 0)]
    with pytest.raises(UserError, match="empty batch"):
        plan_chunks(0, 1, 32)


def test_run_chunked_gives_each_enqueue_a_batch_the_profile_takes_and_the_whole_answer():
    import torch

    x = torch.randn(70, 3, 4, 4)
    weights = torch.randn(3 * 4 * 4, 10)
    seen = []

    def enqueue(part):
        seen.append(part.shape[0])
        assert 8 <= part.shape[0] <= 32
        return part.flatten(1) @ weights  # per-image, like an inference-mode network

    out = run_chunked(x, 8, 32, enqueue)
    assert seen == [32, 32, 8]  # the last chunk of 6 was padded to 8
    torch.testing.assert_close(out, x.flatten(1) @ weights)
    seen.clear()
    torch.testing.assert_close(run_chunked(x[:2], 8, 32, enqueue), x[:2].flatten(1) @ weights)
    assert seen == [8]
    seen.clear()
    assert run_chunked(x[:20], 8, 32, enqueue).shape == (20, 10) and seen == [20]  # inside the profile: as it is


def test_profile_bounds_come_from_the_engine_then_the_manifest():
    manifest_profile = profile_shapes((3, 32, 32), 1, 64, 256)
    engine_profile = [(4, 3, 32, 32), (16, 3, 32, 32), (32, 3, 32, 32)]
    assert profile_batch_bounds(engine_profile, manifest_profile) == (4, 32)  # the engine wins over its manifest
    assert profile_batch_bounds(None, manifest_profile) == (1, 256)
    assert profile_batch_bounds([], manifest_profile) == (1, 256)  # not a profile: fall back
    assert profile_batch_bounds([(8,), (4,), (2,)], None) == (1, None)  # min > max is no profile
    assert profile_batch_bounds(None, None) == (1, None)
    assert profile_batch_bounds(None, {"min": [1]}) == (1, None)


def test_a_static_batch_onnx_gets_a_profile_of_that_batch_only():
    assert input_profile((-1, 3, 32, 32), max_batch=32)["max"] == [32, 3, 32, 32]
    assert input_profile((8, 3, 32, 32)) == {"min": [8, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [8, 3, 32, 32]}
    assert input_profile((8, 3, 32, 32), max_batch=8)["min"] == [8, 3, 32, 32]
    with pytest.raises(UserError, match="static batch of 8, so the profile cannot take 64"):
        input_profile((8, 3, 32, 32), max_batch=64)


def _fake_trt(strongly_typed: int | None, tf32: bool = True) -> SimpleNamespace:
    """What the builder code reads of the ``tensorrt`` module, for TensorRT 10 (1), 11 (0) or a later one (None)."""
    flags = SimpleNamespace(**({} if strongly_typed is None else {"STRONGLY_TYPED": strongly_typed}))
    return SimpleNamespace(__version__="10.13.3.9", NetworkDefinitionCreationFlag=flags,
                           BuilderFlag=SimpleNamespace(**({"TF32": "TF32"} if tf32 else {})))


class FakeConfig:
    """A builder config: flags (TF32 on, as TensorRT's default) and timing caches made from blobs."""

    def __init__(self, refuse=(), unreadable=(), raises=()):
        self.flags = {"TF32"}
        self.refuse, self.unreadable, self.raises = set(refuse), set(unreadable), set(raises)
        self.cache = None

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def get_flag(self, flag):
        return flag in self.flags

    def create_timing_cache(self, blob):
        if bytes(blob) in self.raises:
            raise RuntimeError("deserialization failed")
        return None if bytes(blob) in self.unreadable else ("cache", bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert cache is not None and ignore_mismatch is False  # None would be pybind's TypeError traceback
        if cache[1] in self.refuse:
            return False
        self.cache = cache
        return True


def test_strongly_typed_network_flag_for_tensorrt_10_and_11():
    assert _strongly_typed_flags(_fake_trt(1)) == 2  # TensorRT 10: kSTRONGLY_TYPED = 1
    assert _strongly_typed_flags(_fake_trt(0)) == 1  # TensorRT 11: renumbered, deprecated, ignored
    assert _strongly_typed_flags(_fake_trt(None)) == 0  # gone: strong typing is the only mode


def test_tf32_is_cleared_unless_asked_for_and_read_back():
    config = FakeConfig()
    assert apply_math_flags(config, _fake_trt(1), tf32=False) == {"tf32": False} and "TF32" not in config.flags
    assert apply_math_flags(config, _fake_trt(0), tf32=True) == {"tf32": True} and "TF32" in config.flags
    assert apply_math_flags(FakeConfig(), _fake_trt(0, tf32=False), tf32=False) == {"tf32": False}
    with pytest.raises(UserError, match="no TF32 builder flag: build without --tf32"):
        apply_math_flags(FakeConfig(), _fake_trt(0, tf32=False), tf32=True)


def test_timing_cache_falls_back_to_an_empty_one_with_the_reason():
    config = FakeConfig()
    assert attach_timing_cache(config, b"good") is None and config.cache == ("cache", b"good")
    assert attach_timing_cache(FakeConfig(), b"") is None  # no file yet: an empty cache, nothing to say
    for fake, why in ((FakeConfig(unreadable={b"junk"}), "unreadable"), (FakeConfig(raises={b"junk"}), "unreadable"),
                      (FakeConfig(refuse={b"junk"}), "another TensorRT version or GPU")):
        assert why in attach_timing_cache(fake, b"junk") and fake.cache == ("cache", b"")
    with pytest.raises(UserError, match="could not create an empty timing cache"):
        attach_timing_cache(FakeConfig(unreadable={b"junk", b""}), b"junk")


def test_runner_checks_what_tensorrt_returns():
    path = Path("m.engine")
    with pytest.raises(UserError, match="could not create an execution context .* max batch 256"):
        execution_context(SimpleNamespace(create_execution_context=lambda: None), path, 256)
    context = object()
    assert execution_context(SimpleNamespace(create_execution_context=lambda: context), path, 256) is context
    calls = []
    good = SimpleNamespace(set_input_shape=lambda name, shape: calls.append((name, shape)) or True)
    set_input_shape(good, "input", (4, 3, 32, 32), path, (1, 256))
    assert calls == [("input", (4, 3, 32, 32))]
    refusing = SimpleNamespace(set_input_shape=lambda name, shape: False)
    with pytest.raises(UserError, match=r"refused input shape \(4, 3, 28, 28\) .* batches 1–256"):
        set_input_shape(refusing, "input", (4, 3, 28, 28), path, (1, 256))


def test_runner_device_strings():
    assert device_index("cuda") == 0 and device_index("cuda:1") == 1
    for bad in ("cpu", "cuda:x", "tensorrt"):
        with pytest.raises(UserError, match="CUDA device"):
            device_index(bad)


def test_tf32_is_a_tensorrt_build_option(bundle, tmp_path):
    from rexnet_deploy.backends import tensorrt

    assert "tf32" in {option.name for option in tensorrt.BUILD_OPTIONS}
    proc = run_cli("build", str(bundle / "rexnet-0.5.fp32.onnx"), "--backend", "openvino", "--out",
                   str(tmp_path / "m.xml"), "--tf32")
    assert proc.returncode == 2 and "--tf32 apply to tensorrt builds only, not openvino" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


# --- ONNX Runtime's TensorRT provider: what runs without a GPU -------------------------------------------------

def test_the_tensorrt_major_the_ort_provider_links():
    from rexnet_deploy.backends.onnxruntime import linked_tensorrt_major

    assert linked_tensorrt_major(b"\x00libcublas.so.13\x00libnvinfer.so.10\x00libnvonnxparser.so.10\x00") == 10
    assert linked_tensorrt_major(b"KERNEL32.dll\x00nvinfer_11.dll\x00") == 11
    assert linked_tensorrt_major(b"libcudart.so.13") is None
    import onnxruntime

    lib = Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    if lib.is_file():  # onnxruntime-gpu: its provider names one TensorRT major
        assert isinstance(linked_tensorrt_major(lib.read_bytes()), int)


def test_tensorrt_provider_reason_names_the_cause():
    from rexnet_deploy.backends.onnxruntime import tensorrt_provider_reason as reason

    assert reason(10, "10.13.3.9", None, True) is None
    assert reason(10, None, "No module named 'tensorrt'", True) is None  # a system TensorRT on LD_LIBRARY_PATH
    assert reason(None, None, "No module named 'tensorrt'", None) is None  # cannot tell: let the session try
    other_major = reason(10, "11.4.0.106", None, False, "13")
    assert "links TensorRT 10 (libnvinfer.so.10) but TensorRT 11.4.0.106 is installed" in other_major
    assert "pip install 'tensorrt-cu13>=10,<11'" in other_major
    missing = reason(10, None, "No module named 'tensorrt'", False, "13")
    assert "needs TensorRT 10 (libnvinfer.so.10)" in missing and "No module named 'tensorrt'" in missing
    assert "no CUDA GPU" not in missing and "\n" not in missing
    assert "did not load" in reason(10, "10.13.3.9", None, False)


def test_tensorrt_provider_options_profile_and_caches_never_the_weak_typing_flags(tmp_path):
    from rexnet_deploy.backends.onnxruntime import tensorrt_provider_options

    options = tensorrt_provider_options("input", ("batch", 3, 32, 32), tmp_path / "e", tmp_path / "t")
    assert options["trt_profile_min_shapes"] == "input:1x3x32x32"
    assert options["trt_profile_opt_shapes"] == "input:64x3x32x32"
    assert options["trt_profile_max_shapes"] == "input:256x3x32x32"
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path / "e")
    assert options["trt_timing_cache_enable"] is True and options["trt_timing_cache_path"] == str(tmp_path / "t")
    # trt_fp16_enable/trt_int8_enable turn the provider's strong typing off: the precision is in the ONNX
    assert not any(k in options for k in ("trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable"))
    assert "trt_profile_min_shapes" not in tensorrt_provider_options("input", (8, 3, 32, 32), "e", "t")  # static
    assert "trt_profile_max_shapes" not in tensorrt_provider_options("input", ("n", 3, "h", "w"), "e", "t")
    assert tensorrt_provider_options("x", (0, 3, 8, 8), "e", "t", (2, 4, 8))["trt_profile_opt_shapes"] == "x:4x3x8x8"


def test_ort_gpu_devices_say_why_they_cannot_run_here():
    import torch

    from rexnet_deploy.backends import onnxruntime as ort_backend

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the gpu tests cover the providers")
    assert ort_backend.unavailable_reason("cpu") is None
    for device, provider in (("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")):
        reason = ort_backend.unavailable_reason(device)
        assert reason and provider in reason and "\n" not in reason
        assert "no CUDA GPU?" not in reason  # a cause found, not a guess


def test_ort_provider_that_falls_back_is_a_skip_with_the_options_it_was_given(bundle, tmp_path, monkeypatch):
    """The runner's own path to a GPU session, made to pass its checks here: the provider gets its options as a
    (name, options) pair, and onnxruntime-gpu's silent fall-back to the CPU becomes a one-line skip."""
    import onnxruntime

    from rexnet_deploy.backends import onnxruntime as ort_backend

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu's provider list (the plain onnxruntime wheel has no TensorRT provider)")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the provider would start (the gpu tests cover it)")
    monkeypatch.setattr(ort_backend, "_cuda_gpu_visible", lambda: True)
    monkeypatch.setattr(ort_backend, "_probe_tensorrt", lambda ort: {
        "needed_major": 10, "trt_version": "10.13.3.9", "import_error": None, "loadable": True, "cuda_major": "13"})
    monkeypatch.setattr(ort_backend, "_tensorrt_cache_dirs", lambda path, version, probe: (tmp_path / "e", tmp_path))
    given = []
    real_session = onnxruntime.InferenceSession

    def session(path, opts, providers):
        given.append(providers)
        return real_session(path, opts, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", session)
    with pytest.raises(RuntimeUnavailable, match=r"^TensorrtExecutionProvider did not start on this GPU .* runs "
                                                 r"CPUExecutionProvider instead"):
        ort_backend.OnnxRuntimeRunner(bundle / "rexnet-0.5.fp32.onnx", device="tensorrt")
    (name, options), *rest = given[0]
    assert name == "TensorrtExecutionProvider" and rest == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_profile_opt_shapes"] == "input:64x3x32x32" and options["trt_engine_cache_enable"] is True


# --- TensorRT on a GPU -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trt_cache(tmp_path_factory) -> Path:
    """One timing cache for this module's builds, as `build --timing-cache` gives a user's: after the first
    build the others reuse its kernel timings, which keeps `pytest -m gpu` within scripts/gpu-check's budget."""
    return tmp_path_factory.mktemp("trt-cache") / "timing.cache"


@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_builds_runs_and_matches_onnxruntime(bundle, tmp_path, precision, trt_cache):
    from rexnet_deploy.backends.tensorrt import TensorRTRunner
    from rexnet_deploy.quant import quantize_onnx

    onnx_path = bundle / f"rexnet-0.5.{precision}.onnx"
    if precision == "int8":
        onnx_path = quantize_onnx(bundle / "rexnet-0.5.fp32.onnx", bundle.parent / "calib.pt",
                                  tmp_path / "m.int8-tensorrt.onnx", target="tensorrt", progress=False)
    cache = trt_cache
    images = _images(32)
    engine = build_engine(onnx_path, tmp_path / f"m.{precision}.engine", "tensorrt", images=images,
                          parity_source="test", min_batch=1, opt_batch=16, max_batch=64, timing_cache=cache)
    manifest = read_manifest(engine)
    assert manifest["precision"] == precision and manifest["parity"]["passed"], manifest["parity"]
    assert manifest["profile"]["max"] == [64, 3, 32, 32] and manifest["sha256"] == sha256_file(engine)
    assert cache.is_file() and cache.stat().st_size > 0
    assert manifest["tf32"] is False  # B2: TF32 off, so an fp32 engine passes the FP32 limit above
    with TensorRTRunner(engine) as runner:
        assert runner.infer(images[:1]).shape == (1, 10)
        assert runner.describe()["profile_batches"] == [1, 64]  # read from the engine itself
        with open_runner(onnx_path) as ort_runner:
            result = compare_logits(ort_runner.infer(images), runner.infer(images), precision)
            many = _images(150)  # more than the profile's max: split into chunks (B1)
            big = compare_logits(ort_runner.infer(many), runner.infer(many), precision)
        assert result["passed"], result
        assert big["passed"] and big["num_images"] == 150, big


@pytest.mark.gpu
@needs_trt
def test_tensorrt_reuses_the_timing_cache_and_refuses_foreign_engines(bundle, tmp_path):
    from rexnet_deploy.backends.tensorrt import TensorRTRunner

    cache = tmp_path / "timing.cache"
    onnx_path = bundle / "rexnet-0.5.fp32.onnx"
    first = build_engine(onnx_path, tmp_path / "a.engine", "tensorrt", timing_cache=cache, max_batch=32)
    size = cache.stat().st_size
    build_engine(onnx_path, tmp_path / "b.engine", "tensorrt", timing_cache=cache, max_batch=32)
    assert cache.stat().st_size >= size  # loaded, reused and written back
    foreign = tmp_path / "foreign.engine"
    shutil.copy(first, foreign)
    manifest = read_manifest(first)
    manifest["compute_capability"] = "1.0"
    (tmp_path / "foreign.engine.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="rebuild on this GPU"):
        TensorRTRunner(foreign)


@pytest.mark.gpu
@needs_trt
def test_build_cli_tensorrt(bundle, tmp_path):
    out = tmp_path / "m.engine"
    proc = run_cli("build", str(bundle / "rexnet-0.5.fp16.onnx"), "--backend", "tensorrt", "--out", str(out),
                   "--max-batch", "32", "--timing-cache", str(tmp_path / "t.cache"))
    assert proc.returncode == 0, proc.stderr
    assert "rebuild" not in proc.stdout and "TensorRT" in proc.stdout
    assert read_manifest(out)["parity"]["passed"]
    assert get_backend("tensorrt").default_path(bundle / "rexnet-0.5.fp16.onnx").name == "rexnet-0.5.fp16.engine"



@pytest.mark.gpu
@needs_trt
def test_tensorrt_runner_splits_and_pads_batches_outside_its_profile(bundle, tmp_path, trt_cache):
    """B1: parity (128 images), evaluation (256) and batch 1 all run on an engine built for batches 4–16."""
    import torch

    from rexnet_deploy.backends.tensorrt import TensorRTRunner

    onnx_path = bundle / "rexnet-0.5.fp16.onnx"
    engine = build_engine(onnx_path, tmp_path / "m.engine", "tensorrt", min_batch=4, opt_batch=8, max_batch=16,
                          timing_cache=trt_cache)
    images = _images(40)
    with TensorRTRunner(engine) as runner, open_runner(onnx_path) as ort_runner:
        assert (runner.min_batch, runner.max_batch) == (4, 16)
        for n in (1, 3, 16, 40):  # padded, padded, as it is, chunked 16+16+8
            result = compare_logits(ort_runner.infer(images[:n]), runner.infer(images[:n]), "fp16")
            assert result["passed"] and result["num_images"] == n, (n, result)
        out = runner.infer_tensor(torch.from_numpy(images).cuda())
        assert out.shape == (40, 10) and out.is_cuda


@pytest.mark.gpu
@needs_trt
def test_tensorrt_tf32_only_on_request_with_its_own_limit(bundle, tmp_path, trt_cache):
    """B2: the default fp32 build clears TF32 and meets the FP32 limit; --tf32 is recorded and meets the TF32 one."""
    from rexnet_deploy.backends.tensorrt import TensorRTRunner

    onnx_path = bundle / "rexnet-0.5.fp32.onnx"
    images = _images(64)
    plain = build_engine(onnx_path, tmp_path / "fp32.engine", "tensorrt", images=images, parity_source="test",
                         max_batch=64, timing_cache=trt_cache)
    assert read_manifest(plain)["tf32"] is False and read_manifest(plain)["parity"]["passed"]
    tf32 = build_engine(onnx_path, tmp_path / "tf32.engine", "tensorrt", max_batch=64, tf32=True,
                        timing_cache=trt_cache)
    assert read_manifest(tf32)["tf32"] is True and read_manifest(tf32)["precision"] == "fp32"
    with TensorRTRunner(tf32) as runner, open_runner(onnx_path) as ort_runner:
        assert runner.describe()["tf32"] is True
        result = compare_logits(ort_runner.infer(images), runner.infer(images), "tf32")
    assert result["passed"], result


@pytest.mark.gpu
@needs_trt
def test_tensorrt_build_survives_a_corrupt_timing_cache(bundle, tmp_path):
    """B3: a foreign or corrupt cache file gives one warning line and an empty cache, not a TypeError traceback."""
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"not a timing cache" * 64)
    args = ["build", str(bundle / "rexnet-0.5.fp16.onnx"), "--backend", "tensorrt", "--max-batch", "32",
            "--timing-cache", str(cache), "--parity-images", "32"]
    proc = run_cli(*args, "--out", str(tmp_path / "a.engine"))
    assert proc.returncode == 0, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("rexnet-deploy:")]
    assert len(ours) == 1 and "warning: timing cache" in ours[0], proc.stderr
    assert "unreadable" in ours[0] or "another TensorRT version or GPU" in ours[0], ours[0]
    assert "Traceback" not in proc.stderr and read_manifest(tmp_path / "a.engine")["parity"]["passed"]
    again = run_cli(*args, "--out", str(tmp_path / "b.engine"))  # the file was replaced by a valid cache
    assert again.returncode == 0 and "warning: timing cache" not in again.stderr, again.stderr


@pytest.mark.gpu
@needs_trt
def test_tensorrt_runner_refuses_another_image_size_in_one_line(bundle, tmp_path, trt_cache):
    """set_input_shape's False is checked: a 28×28 batch for a 32×32 engine is a UserError, not a torch error."""
    from rexnet_deploy.backends.tensorrt import TensorRTRunner

    engine = build_engine(bundle / "rexnet-0.5.fp16.onnx", tmp_path / "m.engine", "tensorrt", max_batch=16,
                          timing_cache=trt_cache)
    with TensorRTRunner(engine) as runner, pytest.raises(UserError, match="refused input shape"):
        runner.infer(np.zeros((2, 3, 28, 28), np.float32))


@pytest.mark.gpu
@needs_trt
def test_default_timing_cache_is_named_by_this_gpu(bundle, tmp_path, trt_cache, monkeypatch):
    """The default cache carries the GPU model: another GPU of the same capability does not overwrite it."""
    import torch

    from rexnet_deploy.backends.tensorrt import device_facts

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = default_timing_cache(device_facts())
    if trt_cache.is_file():  # this GPU's timings so far: the build below stays short
        path.parent.mkdir(parents=True)
        shutil.copy(trt_cache, path)
    build_engine(bundle / "rexnet-0.5.fp16.onnx", tmp_path / "m.engine", "tensorrt", max_batch=16)
    assert path.is_file() and path.parent == tmp_path / "xdg" / "rexnet-deploy"
    assert gpu_slug(torch.cuda.get_device_name(0)) in path.name
    assert read_manifest(tmp_path / "m.engine")["timing_cache"] == str(path)


@pytest.mark.gpu
@needs_trt
def test_tensorrt_runner_on_a_second_gpu(bundle, tmp_path, trt_cache):
    """A runner for cuda:1 makes that device current: the engine runs there, not on GPU 0."""
    import torch

    from rexnet_deploy.backends.tensorrt import TensorRTRunner

    if torch.cuda.device_count() < 2 or torch.cuda.get_device_capability(0) != torch.cuda.get_device_capability(1):
        pytest.skip("needs two CUDA GPUs of one compute capability (an engine runs only on the capability it was "
                    "built for)")
    onnx_path = bundle / "rexnet-0.5.fp16.onnx"
    engine = build_engine(onnx_path, tmp_path / "m.engine", "tensorrt", max_batch=16, timing_cache=trt_cache)
    images = _images(20)
    with TensorRTRunner(engine, device_index=1) as runner, open_runner(onnx_path) as ort_runner:
        out = runner.infer_tensor(torch.from_numpy(images).to("cuda:1"))
        assert out.device == torch.device("cuda", 1) and torch.cuda.current_device() == 0
        result = compare_logits(ort_runner.infer(images), out.float().cpu().numpy(), "fp16")
    assert result["passed"], result
