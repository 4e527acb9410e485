"""`rexnet-deploy build`: OpenVINO engines built and run on this CPU; TensorRT's pure parts everywhere,
its builds and runs on a CUDA GPU with TensorRT (marked ``gpu``, skipped elsewhere with the reason)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import randomize_bn, run_cli

from rexnet_deploy.artifacts import read_manifest, sha256_file, write_manifest
from rexnet_deploy.data import load_fashion_mnist
from rexnet_deploy.engines import build_engine, default_engine_path
from rexnet_deploy.engines.tensorrt import (
    default_timing_cache,
    engine_manifest_fields,
    engine_mismatch,
    profile_shapes,
    tensorrt_precision,
    tensorrt_unavailable_reason,
)
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import compare_logits, export_bundle, read_bundle
from rexnet_deploy.models import create_model, save_model_checkpoint
from rexnet_deploy.runtime import RuntimeUnavailable, open_runner
from rexnet_deploy.runtime.openvino_runner import OpenVinoRunner

TRT_MISSING = tensorrt_unavailable_reason()
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
    return export_bundle(checkpoint=ckpt, precisions=["fp32", "fp16", "int8"], out_dir=tmp / "bundle",
                         calibration=calib, engines=["openvino"], parity_images=32, eval_images=0, progress=False)


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
    assert proc.returncode == 2 and "TensorRT builds only" in proc.stderr


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
    assert default_timing_cache(FACTS).name == "tensorrt-10.13.3.9-sm90.timing-cache"


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


# --- TensorRT on a GPU -------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_engine_builds_runs_and_matches_onnxruntime(bundle, tmp_path, precision):
    from rexnet_deploy.quant import quantize_onnx
    from rexnet_deploy.runtime.tensorrt_runner import TensorRTRunner

    onnx_path = bundle / f"rexnet-0.5.{precision}.onnx"
    if precision == "int8":
        onnx_path = quantize_onnx(bundle / "rexnet-0.5.fp32.onnx", bundle.parent / "calib.pt",
                                  tmp_path / "m.int8-tensorrt.onnx", target="tensorrt", progress=False)
    cache = tmp_path / "timing.cache"
    images = _images(32)
    engine = build_engine(onnx_path, tmp_path / f"m.{precision}.engine", "tensorrt", images=images,
                          parity_source="test", min_batch=1, opt_batch=16, max_batch=64, timing_cache=cache)
    manifest = read_manifest(engine)
    assert manifest["precision"] == precision and manifest["parity"]["passed"], manifest["parity"]
    assert manifest["profile"]["max"] == [64, 3, 32, 32] and manifest["sha256"] == sha256_file(engine)
    assert cache.is_file() and cache.stat().st_size > 0
    with TensorRTRunner(engine) as runner:
        assert runner.infer(images[:1]).shape == (1, 10)
        with open_runner(onnx_path) as ort_runner:
            result = compare_logits(ort_runner.infer(images), runner.infer(images), precision)
        assert result["passed"], result
        with pytest.raises(UserError, match="outside the engine's profile"):
            runner.infer(np.zeros((65, 3, 32, 32), np.float32))


@pytest.mark.gpu
@needs_trt
def test_tensorrt_reuses_the_timing_cache_and_refuses_foreign_engines(bundle, tmp_path):
    from rexnet_deploy.runtime.tensorrt_runner import TensorRTRunner

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
    assert default_engine_path(bundle / "rexnet-0.5.fp16.onnx", "tensorrt").name == "rexnet-0.5.fp16.engine"

