"""ExecuTorch (XNNPACK) programs built from the torch checkpoint by the bundle: FP32 matches torch on real
Fashion-MNIST images, INT8 stays within a point of FP32 top-1, both bench as rows with img/s and percentiles,
and a ``.pte`` that is not a program or does not take the model's input is refused in one line (exit 2).

The tests that run ExecuTorch are skipped with the reason where the ``[executorch]`` extra is not installed;
the table row and the "not installed" path are tested everywhere. Lowering a ReXNet to XNNPACK takes
a minute or more on 2 cores, so the trained model's two programs are built once, by one bundle export.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_cli
from torch import nn

from rexnet_deploy.artifacts import read_manifest, write_manifest
from rexnet_deploy.backends import RuntimeUnavailable, evaluate, get_backend, open_runner
from rexnet_deploy.backends import executorch as et_backend
from rexnet_deploy.bench import load_suite, run_bench
from rexnet_deploy.bundle import BundleRequest, engines_available, export_bundle, read_bundle, summary_rows
from rexnet_deploy.data import load_dataset
from rexnet_deploy.errors import UserError
from rexnet_deploy.export.parity import torch_logits
from rexnet_deploy.models import load_model
from rexnet_deploy.quant import build_calibration_set

ET = "executorch"
_MISSING = et_backend.unavailable_reason()
needs_executorch = pytest.mark.skipif(_MISSING is not None, reason=f"{_MISSING} (this test needs it)")

EVAL_IMAGES = 1000  # the INT8 check compares top-1 on this many test images (1 image = 0.1 point)


@pytest.fixture(scope="module")
def trained(fmnist_trained) -> Path:
    """The session's trained Fashion-MNIST model (conftest: 2 short epochs, about 80 % top-1)."""
    return fmnist_trained


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory) -> Path:
    """A bundle of the trained model with FP32 and INT8 ONNX files and the two ExecuTorch programs."""
    root = tmp_path_factory.mktemp("et-bundle")
    calib = build_calibration_set("fashion_mnist", num_images=256, seed=0, out=root / "calib.pt")
    return export_bundle(BundleRequest(checkpoint=trained, precisions=("fp32", "int8"), out_dir=root / "bundle",
                                       calibration=calib, engines=[ET], eval_images=EVAL_IMAGES, progress=False))


def _entry(bundle: Path, precision: str) -> dict:
    found = [f for f in read_bundle(bundle)["files"] if f["backend"] == ET and f["variant"] == precision]
    assert len(found) == 1, read_bundle(bundle)["files"]
    return found[0]


def _test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    split = load_dataset("fashion_mnist", "test")
    return split.preprocess(split.images[:n]).numpy(), split.labels[:n].numpy()


class TinyNet(nn.Module):
    """Conv → ReLU → global mean → linear: lowers in seconds and takes images of any size."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_the_table_row_builds_from_the_checkpoint():
    """The row says "engine built from the torch model": the bundle builds it, `rexnet-deploy build` does not."""
    from rexnet_deploy.backends import backend_for, builders, engine_backends

    row = get_backend(ET)
    assert row.role == "engine" and row.builds_from_checkpoint and not row.builds_from_onnx
    assert row.extra == ET and row.int8_layout is None  # it quantizes itself, from no Q/DQ ONNX
    assert callable(row.impl().build_from_model) and not any(option.cli for option in row.build_options())
    assert backend_for("model.fp32.pte") is row and backend_for("model.pte", "engine") is row
    assert row not in builders() and row in engine_backends()
    assert all(b.builds_from == "onnx" for b in builders())


@needs_executorch
def test_fp32_program_matches_torch_on_real_images(bundle, trained):
    entry = _entry(bundle, "fp32")
    path = bundle / entry["file"]
    manifest = read_manifest(path)
    assert path.suffix == ".pte" and manifest["built_from"] == "checkpoint" and manifest["backend"] == ET
    assert manifest["batch"] == {"dynamic": True, "min": 1, "max": et_backend.DEFAULT_MAX_BATCH}, manifest["batch"]
    parity = entry["parity"]
    assert parity["passed"] and parity["reference"] == "torch" and parity["max_abs_diff"] <= 1e-4, parity
    assert "fashion_mnist test split" in parity["inputs"]
    # beyond the bundle's own check: batch sizes it did not use, one larger than the program's planned 256
    model, _ = load_model(trained)
    images, _ = _test_images(300)
    reference = torch_logits(model, images)
    with open_runner(path, threads=2) as runner:
        assert runner.describe()["threads"] == 2 and runner.describe()["batch"]["max"] == 256
        for n in (1, 7, 300):
            diff = float(np.abs(runner.infer(images[:n]) - reference[:n]).max())
            print(f"fp32 .pte vs torch, batch {n}: max abs diff {diff:.2e}")
            assert diff <= 1e-4, (n, diff)


@needs_executorch
def test_int8_program_is_within_a_point_of_fp32_and_calibrated_on_the_bundles_set(bundle):
    fp32, int8 = _entry(bundle, "fp32"), _entry(bundle, "int8")
    manifest = read_manifest(bundle / int8["file"])
    assert manifest["precision"] == "int8" and manifest["quantization"]["float_modules"] == ["SqueezeExcite"]
    assert manifest["quantization"]["weights"] == "int8 symmetric per-channel"
    onnx_int8 = next(f for f in read_bundle(bundle)["files"] if f["file"].endswith(".int8.onnx"))
    assert manifest["calibration"] == read_manifest(bundle / onnx_int8["file"])["calibration"]
    # measured again here through the shared runner, not only read from the bundle
    split = load_dataset("fashion_mnist", "test")
    accuracy = {}
    for entry in (fp32, int8):
        with open_runner(bundle / entry["file"]) as runner:
            accuracy[entry["variant"]] = evaluate(runner, split, limit=EVAL_IMAGES, progress=False)
        assert accuracy[entry["variant"]]["num_images"] == EVAL_IMAGES
        assert entry["accuracy"]["top1"] == pytest.approx(accuracy[entry["variant"]]["top1"])
    print(f"top-1 on {EVAL_IMAGES} test images: fp32 .pte {accuracy['fp32']['top1']:.2f} %, "
          f"int8 .pte {accuracy['int8']['top1']:.2f} %")
    assert accuracy["fp32"]["top1"] > 60  # a trained model: an INT8 comparison on noise would prove nothing
    assert abs(accuracy["fp32"]["top1"] - accuracy["int8"]["top1"]) <= 1.0, accuracy
    assert int8["accuracy"]["top1_drop_vs_fp32"] == pytest.approx(accuracy["fp32"]["top1"] - accuracy["int8"]["top1"])


@needs_executorch
def test_delegation_is_recorded_and_shown_in_the_bundle_table(bundle):
    text = (bundle / "bundle.md").read_text()
    for precision in ("fp32", "int8"):
        entry = _entry(bundle, precision)
        manifest = read_manifest(bundle / entry["file"])
        delegation = manifest["delegation"]
        print(f"{precision}: {delegation['delegated_nodes']} nodes delegated in {delegation['subgraphs']} "
              f"subgraphs, outside XNNPACK: {delegation['not_delegated']}")
        # the module's note, one line, is what the bundle entry and table carry
        assert entry["note"] == manifest["note"] and delegation["delegate"] == "XnnpackBackend"
        assert delegation["delegated_nodes"] > 100 and delegation["subgraphs"] >= 1
        assert delegation["not_delegated_nodes"] == sum(delegation["not_delegated"].values())
        # every convolution and the classifier run in XNNPACK; what stays outside is reshaping and bookkeeping
        for op in ("aten_convolution_default", "aten_linear_default"):
            assert delegation["by_op"][op]["delegated"] > 0 and delegation["by_op"][op]["not_delegated"] == 0, op
        row = next(r for r in summary_rows(read_bundle(bundle)) if r["file"] == entry["file"])
        note = f"XnnpackBackend took {delegation['delegated_nodes']} of"
        assert note in row["parity / note"] and "batch 1–256" in row["parity / note"], row
        assert note in text
        # INT8: the SE gates stayed float, the rest is quantized, and XNNPACK runs the quantize nodes too
        quantize_ops = [op for op in delegation["by_op"] if op.startswith("quantized_decomposed_quantize")]
        assert bool(quantize_ops) == (precision == "int8"), quantize_ops
        assert all(delegation["by_op"][op]["not_delegated"] == 0 for op in quantize_ops)


@needs_executorch
def test_programs_bench_as_rows_with_throughput_and_percentiles(bundle, trained, tmp_path):
    suite = {"name": "et", "eval_images": 256, "batches": [1, 32], "threads": 2,
             "timing": {"warmup_steps": 1, "warmup_seconds": 0, "steps": 5, "min_steps": 3, "max_seconds": 2},
             "models": [{"name": "m", "artifacts": [
                 {"name": "torch-fp32", "checkpoint": str(trained)},
                 {"name": "executorch-fp32", "engine": str(bundle / _entry(bundle, "fp32")["file"])},
                 {"name": "executorch-int8", "engine": str(bundle / _entry(bundle, "int8")["file"])}]}]}
    (tmp_path / "et.yaml").write_text(yaml.safe_dump(suite))
    rows = {r["name"]: r for r in run_bench(load_suite(tmp_path / "et.yaml"), tmp_path / "out", progress=False)["rows"]}
    for name, precision in (("executorch-fp32", "fp32"), ("executorch-int8", "int8")):
        row = rows[name]
        assert row["status"] == "ok", row["reason"]
        assert row["format"] == ET and row["precision"] == precision and row["runner"]["threads"] == 2
        assert row["preprocess_checked"]  # the manifest's preprocessing was compared with the dataset's
        assert [s["batch"] for s in row["speed"]] == [1, 32]
        for s in row["speed"]:
            assert s["img_per_s"] > 0 and {"median", "p90", "p99"} <= set(s["ms"]), s
    assert abs(rows["executorch-fp32"]["accuracy"]["top1"] - rows["torch-fp32"]["accuracy"]["top1"]) <= 0.5
    assert "executorch-int8" in (tmp_path / "out" / "results.md").read_text()


@needs_executorch
def test_bench_engine_opens_a_pte_through_the_table(bundle, tmp_path):
    pte = bundle / _entry(bundle, "fp32")["file"]
    proc = run_cli("bench", "--engine", str(pte), "--eval-images", "64", "--batches", "1", "--threads", "1",
                   "--warmup-steps", "1", "--steps", "3", "--min-steps", "2", "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads((tmp_path / "out" / "results.json").read_text())["rows"][0]
    assert row["status"] == "ok" and row["runner"]["backend"] == ET and row["runner"]["threads"] == 1


@needs_executorch
def test_a_pte_that_is_not_a_program_exits_2_with_one_line(tmp_path, fmnist_available):
    bad = tmp_path / "model.pte"
    bad.write_bytes(b"these bytes are not an ExecuTorch program\n" * 8)
    with pytest.raises(UserError, match=r"is not an ExecuTorch program .*expected 'ET12'"):
        open_runner(bad)
    proc = run_cli("bench", "--engine", str(bad), "--eval-images", "16", "--batches", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "is not an ExecuTorch program" in last and "re-export it" in last, last
    # the runtime's own log line went into that line instead of onto the terminal beside it
    assert not any(line.startswith("[program.cpp") for line in proc.stderr.splitlines()), proc.stderr


@needs_executorch
def test_a_pte_that_does_not_take_the_models_input_exits_2(tmp_path, fmnist_available):
    wrong_size = tmp_path / "tiny64.pte"
    et_backend.build_from_model(TinyNet(), wrong_size, input_size=(3, 64, 64), max_batch=16)
    proc = run_cli("bench", "--engine", str(wrong_size), "--eval-images", "16", "--batches", "1",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "takes [N, 3, 64, 64] inputs, not [16, 3, 32, 32]" in last, last
    # with a manifest the mismatch is caught when the program opens
    write_manifest(wrong_size, {"precision": "fp32", "input_size": [3, 32, 32]})
    with pytest.raises(UserError, match=r"takes \[3, 64, 64\] images but its manifest says the model takes"):
        open_runner(wrong_size)

    # a program whose forward takes two tensors: made with ExecuTorch's own API, as another tool would
    from executorch.exir import to_edge_transform_and_lower

    class TwoInputs(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    exported = torch.export.export(TwoInputs(), (torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)))
    two = tmp_path / "two.pte"
    two.write_bytes(to_edge_transform_and_lower(exported).to_executorch().buffer)
    with pytest.raises(UserError, match=r"its forward takes 2 inputs .* a classifier takes one image batch"):
        open_runner(two)


@needs_executorch
def test_static_batch_when_the_batch_cannot_be_dynamic(tmp_path, monkeypatch):
    # a dynamic_shapes spec torch.export refuses stands in for a model whose batch cannot be dynamic
    monkeypatch.setattr(et_backend, "_dynamic_shapes", lambda max_batch: ({0: "not a dimension"},))
    path = tmp_path / "static.pte"
    model = TinyNet().eval()
    fields = et_backend.build_from_model(model, path, input_size=(3, 32, 32), static_batch=4)
    assert fields["batch"]["dynamic"] is False and fields["batch"]["size"] == 4 and fields["input_shape"][0] == 4
    assert fields["batch"]["why"].startswith("no dynamic batch: ")
    write_manifest(path, fields)
    x = torch.randn(9, 3, 32, 32)
    with torch.no_grad():
        reference = model(x).numpy()
    with open_runner(path) as runner:
        assert runner.describe()["batch"] == {"dynamic": False, "min": 4, "max": 4}
        for n in (1, 4, 9):  # padded up to 4, exactly 4, split into 4 + 4 + 1 padded
            np.testing.assert_allclose(runner.infer(x[:n].numpy()), reference[:n], atol=1e-5)


@needs_executorch
def test_a_one_thread_process_still_exports_a_dynamic_batch(tmp_path):
    """With one torch thread ATen's choice of a 1×1 convolution's kernel asks ``batch >= 16``, and torch.export
    used to narrow the batch range on it (a bench with --threads 1 earlier in the process did that)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fields = et_backend.build_from_model(model.eval(), tmp_path / "one.pte", input_size=(3, 16, 16),
                                             max_batch=32)
        assert torch.get_num_threads() == 1  # the caller's setting is back
    finally:
        torch.set_num_threads(before)
    assert fields["batch"] == {"dynamic": True, "min": 1, "max": 32}, fields["batch"]


def test_without_executorch_it_is_skipped_with_the_install_line(tmp_path, monkeypatch, fmnist_available):
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # as if the extra were not installed
        return None if name.split(".")[0] == ET else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    reason = get_backend(ET).unavailable_reason()
    assert reason and "ExecuTorch is not installed" in reason and "pip install 'rexnet-deploy[executorch]'" in reason
    assert engines_available()[1][ET] == reason
    (tmp_path / "m.pte").write_bytes(b"whatever")
    with pytest.raises(RuntimeUnavailable, match="rexnet-deploy\\[executorch\\]"):
        open_runner(tmp_path / "m.pte")
    out = export_bundle(BundleRequest(engines=[ET], out_dir=tmp_path / "b", parity_images=8, eval_images=0,
                                      progress=False))
    assert {"what": f"{ET} engines", "reason": reason} in read_bundle(out)["skipped"]
    assert not list(out.glob("*.pte"))


@needs_executorch
def test_a_second_runner_asking_other_threads_does_not_break_the_first_program(bundle):
    """Resizing ExecuTorch's pool after a program was loaded made XNNPACK fail (xnn_status_invalid_state) and
    segfault, so a later runner keeps the pool's size and says so. In a child process: a crash must not take
    the test run with it."""
    import subprocess
    import sys

    pte = bundle / _entry(bundle, "fp32")["file"]
    code = ("import numpy as np; from rexnet_deploy.backends import open_runner\n"
            f"x = np.zeros((2, 3, 32, 32), np.float32)\n"
            f"a = open_runner({str(pte)!r}, threads=2); a.infer(x)\n"
            f"b = open_runner({str(pte)!r}, threads=1); b.infer(x); a.infer(x)\n"
            "print(a.describe()['threads'], b.describe()['threads'], b.describe()['threads_requested'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second, requested = proc.stdout.split()[-3:]
    assert first == second == "2" and requested == "1"
