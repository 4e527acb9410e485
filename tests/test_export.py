"""`rexnet-deploy export`: bundles of parity-checked ONNX files, manifests that match, atomic replacement."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import ROOT, randomize_bn, run_cli

from rexnet_deploy.artifacts import read_manifest, sha256_file
from rexnet_deploy.backends import open_runner
from rexnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from rexnet_deploy.bundle import BundleRequest, export_bundle, read_bundle
from rexnet_deploy.data import FASHION_MNIST_CLASSES, Preprocess, load_fashion_mnist
from rexnet_deploy.errors import CheckFailed, UserError
from rexnet_deploy.export import (
    check_parity,
    compare_logits,
    export_onnx,
    onnx_precision,
    read_metadata,
    require_parity,
)
from rexnet_deploy.models import ChannelPlan, create_model, load_model, save_model_checkpoint

# small numbers keep the suite quick on 2 cores; the defaults (128 parity, 2000 eval images) are for users
FAST = ["--parity-images", "32", "--eval-images", "64"]


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory, fmnist_available) -> tuple[Path, subprocess.CompletedProcess]:
    """`rexnet-deploy export --width 0.5` as a user types it (random weights), into a temporary folder."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    # OpenVINO is the engine these tests read; ExecuTorch's lowering (a minute here) has its own tests
    proc = run_cli("export", "--width", "0.5", "--precision", "fp32,fp16,int8", "--engines", "openvino",
                   "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, fmnist_available) -> Path:
    """tiny-cifar-0.5 with non-trivial BatchNorm statistics, saved as the trainer saves checkpoints."""
    model = randomize_bn(create_model("rexnet_tiny_cifar", width=0.5, num_classes=10))
    test = load_fashion_mnist("test")
    path = tmp_path_factory.mktemp("ckpt") / "tiny-0.5.pt"
    return save_model_checkpoint(model, path, dataset="fashion_mnist", preprocess=test.preprocess.to_dict(),
                                 metrics={"top1": 11.0, "top5": 51.0})


def test_random_export_writes_a_marked_bundle(random_bundle):
    out, proc = random_bundle
    notes = [line for line in proc.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "randomly initialised" in notes[0] and "untrained" in notes[0]
    bundle = read_bundle(out)
    assert bundle["untrained"] is True and bundle["model_name"] == "rexnet_tiny_cifar" and bundle["width"] == 0.5
    assert bundle["parity_inputs"].startswith("fashion_mnist test split")
    kinds = {(f["backend"], f["precision"]) for f in bundle["files"]}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("openvino", "fp32"), ("openvino", "fp16")} <= kinds
    assert all(f["parity"]["passed"] for f in bundle["files"])
    skipped = {s["what"]: s["reason"] for s in bundle["skipped"]}
    assert "random" in skipped["int8"]
    # the printed summary names every file with its parity and size
    for f in bundle["files"]:
        assert f["file"] in proc.stdout
    assert "(int8)" in proc.stdout and "(bundle.json" in proc.stdout
    assert (out / "bundle.md").read_text().count("|") > 10


def test_manifest_hashes_and_metadata_match_the_files(random_bundle):
    out, _ = random_bundle
    bundle = read_bundle(out)
    for entry in bundle["files"]:
        path = out / entry["file"]
        manifest = read_manifest(path)
        assert sha256_file(path) == entry["sha256"] == manifest["sha256"]
        assert manifest["size_bytes"] == path.stat().st_size
        assert manifest["untrained"] is True and manifest["precision"] == entry["precision"] == entry["variant"]
        assert {"onnx", "torch", "openvino"} <= set(manifest["tool_versions"])
        if entry["backend"] == "openvino":
            weights = out / manifest["weights"]["file"]
            assert sha256_file(weights) == manifest["weights"]["sha256"]
            assert manifest["source_onnx_sha256"] == sha256_file(out / manifest["source_onnx"])
    fp32 = out / "rexnet_tiny_cifar-0.5.fp32.onnx"
    meta = read_metadata(fp32)
    preprocess = Preprocess.from_dict(json.loads(meta["preprocess"]))
    assert preprocess.matches(load_fashion_mnist("test").preprocess)
    assert json.loads(meta["classes"]) == list(FASHION_MNIST_CLASSES)
    assert json.loads(meta["untrained"]) is True and meta["width"] == "0.5"
    assert json.loads(meta["input_size"]) == [3, 32, 32]
    assert "torch" in json.loads(meta["tool_versions"])


def test_onnx_is_single_file_opset_18_dynamic_batch(random_bundle):
    out, _ = random_bundle
    path = out / "rexnet_tiny_cifar-0.5.fp32.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    assert not list(out.glob("*.data")), "weights must be inside the .onnx file"
    with OnnxRuntimeRunner(path) as runner:
        assert runner.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
        assert runner.infer(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 10)
    assert onnx_precision(out / "rexnet_tiny_cifar-0.5.fp16.onnx") == "fp16"


def test_export_from_checkpoint_passes_parity_in_every_precision(tiny_checkpoint, tmp_path):
    from rexnet_deploy.quant import build_calibration_set

    calib = build_calibration_set("fashion_mnist", num_images=64, out=tmp_path / "calib.pt")
    out = export_bundle(BundleRequest(checkpoint=tiny_checkpoint, width=0.5, precisions=["fp16", "int8"],
                                      out_dir=tmp_path / "b", calibration=calib, engines=[], parity_images=48,
                                      eval_images=0, progress=False))
    bundle = read_bundle(out)
    assert bundle["untrained"] is False and bundle["precisions"] == ["fp32", "fp16", "int8"]
    assert bundle["source_checkpoint_sha256"] == sha256_file(tiny_checkpoint)
    model, _ = load_model(tiny_checkpoint)
    test = load_fashion_mnist("test")
    images = test.preprocess(test.images[100:164]).numpy()  # images the export did not check
    for entry in bundle["files"]:
        path = out / entry["file"]
        manifest = read_manifest(path)
        assert manifest["source_checkpoint_sha256"] == sha256_file(tiny_checkpoint)
        assert manifest["checkpoint_metrics"] == {"top1": 11.0, "top5": 51.0}
        assert onnx_precision(path) == entry["precision"] == manifest["precision"]
        # an independent check on other images, in ONNX Runtime
        result = check_parity(model, path, images)
        assert result["passed"], result
        if entry["precision"] == "fp32":
            assert result["max_abs_diff"] <= 1e-4 and result["top1_agreement"] == 1.0
    int8 = read_manifest(out / "rexnet_tiny_cifar-0.5.int8.onnx")
    assert int8["target"] == "ort-cpu" and int8["calibration"]["num_images"] == 64


def test_int8_of_a_trained_model_keeps_its_accuracy(fmnist_trained, tmp_path):
    """Where a trained model matters: INT8 parity and accuracy only mean something for real weights."""
    from rexnet_deploy.quant import build_calibration_set

    calib = build_calibration_set("fashion_mnist", num_images=128, out=tmp_path / "calib.pt")
    out = export_bundle(BundleRequest(checkpoint=fmnist_trained, precisions=["int8"], out_dir=tmp_path / "b",
                                      calibration=calib, engines=["openvino"], parity_images=128, eval_images=1000,
                                      int8_max_drop=2.0, progress=False))
    files = {(f["backend"], f["precision"]): f for f in read_bundle(out)["files"]}
    fp32, int8 = files[("onnxruntime", "fp32")], files[("onnxruntime", "int8")]
    assert fp32["accuracy"]["top1"] >= 75 and fp32["accuracy"]["num_images"] == 1000
    assert fp32["accuracy"]["top1"] - int8["accuracy"]["top1"] <= 2.0
    assert int8["parity"]["passed"] and int8["parity"]["decisive_images"] >= 100
    assert int8["parity"]["top1_agreement"] >= 0.95
    ov_int8 = files[("openvino", "int8")]
    assert abs(ov_int8["accuracy"]["top1"] - int8["accuracy"]["top1"]) <= 1.0


def test_pruned_checkpoint_exports_with_its_channel_plan(tmp_path, fmnist_available):
    from rexnet_deploy.prune import PruneSpec, prune_model

    model = randomize_bn(create_model("rexnet", width=0.5, num_classes=10))
    pruned = prune_model(model, PruneSpec(macs_ratio=0.6), example_input=torch.zeros(1, 3, 32, 32))
    test = load_fashion_mnist("test")
    ckpt = save_model_checkpoint(pruned, tmp_path / "pruned.pt", dataset="fashion_mnist",
                                 preprocess=test.preprocess.to_dict())
    out = export_bundle(BundleRequest(checkpoint=ckpt, out_dir=tmp_path / "b", engines=[], parity_images=32,
                                      eval_images=0, progress=False))
    onnx_path = out / "rexnet-0.5.fp32.onnx"
    manifest = read_manifest(onnx_path)
    assert ChannelPlan.from_dict(manifest["channel_plan"]) == pruned.plan != model.plan
    assert manifest["parity"]["passed"] and manifest["params"] < sum(p.numel() for p in model.parameters())
    result = check_parity(load_model(ckpt)[0], onnx_path, test.preprocess(test.images[:32]).numpy())
    assert result["passed"] and result["max_abs_diff"] <= 1e-4


def test_parity_catches_a_model_that_differs_from_its_onnx(tmp_path, fmnist_available):
    model = randomize_bn(create_model("rexnet", width=0.5, num_classes=10))
    path = export_onnx(model, tmp_path / "m.onnx", (3, 32, 32))
    test = load_fashion_mnist("test")
    images = test.preprocess(test.images[:32]).numpy()
    assert check_parity(model, path, images)["passed"]
    with torch.no_grad():
        model.head.fc.weight.mul_(1.01)  # a 1 % change in the classifier
    result = check_parity(model, path, images)
    assert not result["passed"] and result["max_rel_diff"] > 1e-3
    with pytest.raises(CheckFailed, match=r"parity check failed for m.onnx .*relative") as err:
        require_parity(result, path.name)
    assert "\n" not in str(err.value)


def test_compare_logits_limits_per_precision():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(100, 10)) * 5
    scale = np.abs(ref).max()
    assert compare_logits(ref, ref + 5e-5, "fp32")["passed"]
    assert not compare_logits(ref, ref + 5e-4, "fp32")["passed"]
    # random weights give ~1e-6 logits: the relative limit still catches a wrong graph there
    tiny = ref * 1e-6
    assert compare_logits(tiny, tiny * 1.00001, "fp32")["passed"]
    assert not compare_logits(tiny, tiny[::-1].copy(), "fp32")["passed"]
    assert compare_logits(ref, ref * 1.002, "fp16")["passed"]
    assert not compare_logits(ref, ref * 1.05, "fp16")["passed"]
    noisy = ref + rng.uniform(-0.05, 0.05, ref.shape) * scale  # INT8-sized rounding noise
    assert compare_logits(ref, noisy, "int8")["passed"]
    assert compare_logits(ref, ref + 0.3 * scale, "int8")["passed"]  # an outlier-sized error, same classes
    assert not compare_logits(ref, ref + 0.6 * scale, "int8")["passed"]  # a gross one
    swapped = ref.copy()
    order = np.argsort(-ref, axis=1)
    rows = np.arange(10)
    swapped[rows, order[rows, 0]], swapped[rows, order[rows, 1]] = ref[rows, order[rows, 1]], ref[rows, order[rows, 0]]
    result = compare_logits(ref, swapped, "int8")  # 10 % of the images change class
    assert not result["passed"] and result["top1_agreement"] == 0.9
    assert not compare_logits(ref, ref[:, :9], "int8")["passed"]


def test_bad_input_exits_2_with_one_line(tiny_checkpoint, tmp_path):
    line = _one_line_error(run_cli("export", "--model", "rexnet_999", "--out", str(tmp_path / "x")))
    assert "unknown model 'rexnet_999'" in line
    line = _one_line_error(run_cli("export", "--checkpoint", str(tiny_checkpoint), "--width", "0.7",
                                   "--out", str(tmp_path / "x")))
    assert "width 0.5, not 0.7" in line and "--width 0.5" in line
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_line_error(run_cli("export", "--out", str(blocker / "bundle")))
    assert "not writable" in line and "--out" in line
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("the user's own file")
    line = _one_line_error(run_cli("export", "--out", str(own)))
    assert "not a rexnet-deploy bundle" in line and (own / "notes.txt").exists()
    line = _one_line_error(run_cli("export", "--precision", "fp32,int4", "--out", str(tmp_path / "x")))
    assert "unknown precision 'int4'" in line
    assert not (tmp_path / "x").exists()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_during_export_leaves_the_previous_bundle(random_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(random_bundle[0], out)
    before = _snapshot(out)
    cmd = [sys.executable, "-m", "rexnet_deploy", "export", "--width", "0.5", "--precision", "fp32",
           "--engines", "none", "--out", str(out), *FAST]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        staged = []
        while not staged and time.monotonic() < deadline and proc.poll() is None:
            # kill once the new ONNX file sits in the temporary folder: the export is half done
            staged = list(tmp_path.glob(".bundle.tmp-*/rexnet_tiny_cifar-0.5.fp32.onnx"))
            time.sleep(0.05)
        assert staged and proc.poll() is None, "the export finished or failed before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(out) == before, "the previous bundle changed"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["bundle"]

    # the next export replaces the bundle whole and clears what the killed one left behind
    done = run_cli("export", "--width", "0.5", "--precision", "fp32", "--engines", "none", "--out", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.glob(".bundle.*"))
    bundle = read_bundle(out)
    assert [f["file"] for f in bundle["files"]] == ["rexnet_tiny_cifar-0.5.fp32.onnx"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "bundle.json", "bundle.md", "predict.py",
                                                     "preprocess.py", "rexnet_tiny_cifar-0.5.fp32.onnx",
                                                     "rexnet_tiny_cifar-0.5.fp32.onnx.json"]


def test_open_runner_picks_the_runtime_by_file_type(random_bundle, tmp_path):
    out, _ = random_bundle
    with open_runner(out / "rexnet_tiny_cifar-0.5.fp16.onnx", threads=1) as runner:
        assert runner.backend == "onnxruntime" and runner.precision == "fp16"
    with open_runner(out / "rexnet_tiny_cifar-0.5.fp32.openvino.xml", threads=1) as runner:
        assert runner.backend == "openvino" and runner.precision == "fp32"
    with pytest.raises(UserError, match="not a model file"):
        open_runner(out / "bundle.json")
    with pytest.raises(UserError, match="does not exist"):
        open_runner(tmp_path / "missing.onnx")
