"""CPU-aware precision (issue 14): BF16 where the CPU has it and a one-line skip elsewhere, OpenVINO's native INT8
(NNCF) within a point of FP32 on a trained model, static shapes and hints recorded per batch, the peer rows
(``openvino-default``, ``ort-default``), ``--precision auto``'s pick from a known table, and OpenVINO's own
``benchmark_app`` agreeing with the bench under the same settings.

ISA flags in results files are tested in test_bench.py. Speeds here are only compared with each other
(the cross-check) or checked for being measured at all: other processes share these 2 cores.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, randomize_bn

from rexnet_deploy.artifacts import read_manifest, write_manifest
from rexnet_deploy.backends import RuntimeUnavailable, open_runner
from rexnet_deploy.backends import openvino as ov_backend
from rexnet_deploy.backends import torch as torch_backend
from rexnet_deploy.bench import SCHEMA_PATH, load_suite, run_bench
from rexnet_deploy.bench.suite import SPEED_ONLY_IMAGES
from rexnet_deploy.bench.timing import Timing
from rexnet_deploy.bundle import build_engine
from rexnet_deploy.bundle.auto import (
    CandidateFile,
    auto_summary,
    candidates_markdown,
    measure_candidates,
    pick_recommended,
)
from rexnet_deploy.data import Preprocess, load_dataset
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import export_onnx
from rexnet_deploy.hardware import has_native_bf16
from rexnet_deploy.models import create_model, load_model

NO_BF16 = "no native BF16 on this CPU"
BF16_HERE = has_native_bf16()
QUICK_TIMING = {"warmup_steps": 1, "warmup_seconds": 0, "steps": 3, "min_steps": 2, "max_seconds": 1}
nncf_missing = ov_backend.nncf_unavailable_reason()
needs_nncf = pytest.mark.skipif(nncf_missing is not None, reason=f"needs NNCF: {nncf_missing}")


def _suite(tmp_path, artifacts, **extra) -> dict:
    return {"name": "precision", "eval_images": 64, "batches": [1, 8], "threads": 1, "timing": QUICK_TIMING,
            "models": [{"name": "m", "artifacts": artifacts, **extra}]}


def _run(tmp_path, suite: dict, out: str | None = None) -> dict:
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    results = run_bench(load_suite(tmp_path / "suite.yaml"), tmp_path / out if out else None, progress=False)
    return results


# ---- BF16: a one-line skip where the CPU has none, measured like every row where it has -----------------------

@pytest.mark.skipif(BF16_HERE, reason="this CPU has native BF16: the rows run (test_bf16_rows_run_where_native)")
def test_bf16_rows_skip_with_the_one_line_reason_here(random_rexnet, tmp_path):
    with pytest.raises(RuntimeUnavailable) as openvino_exc:
        open_runner(random_rexnet["xml"], threads=1, mode="bf16")
    with pytest.raises(RuntimeUnavailable) as torch_exc:
        open_runner(random_rexnet["ckpt"], threads=1, mode="bf16")
    assert str(openvino_exc.value) == str(torch_exc.value) == NO_BF16
    rows = {r["name"]: r for r in _run(tmp_path, _suite(tmp_path, [
        {"name": "torch-fp32", "checkpoint": str(random_rexnet["ckpt"])},
        {"name": "torch-bf16", "checkpoint": str(random_rexnet["ckpt"]), "mode": "bf16"},
        {"name": "openvino-bf16", "engine": str(random_rexnet["xml"]), "mode": "bf16"}]), "res")["rows"]}
    for name in ("torch-bf16", "openvino-bf16"):
        assert rows[name]["status"] == "skipped" and rows[name]["reason"] == NO_BF16, rows[name]
        assert rows[name]["precision"] == "bf16" and rows[name]["speed"] == []  # the row says what was skipped
    assert rows["torch-fp32"]["status"] == "ok"
    assert "skipped: no native BF16 on this CPU" in (tmp_path / "res" / "results.md").read_text()


@pytest.mark.skipif(not BF16_HERE, reason=f"{NO_BF16}: see test_bf16_rows_skip_with_the_one_line_reason_here")
def test_bf16_rows_run_where_native(random_rexnet, tmp_path):
    rows = {r["name"]: r for r in _run(tmp_path, _suite(tmp_path, [
        {"name": "torch-fp32", "checkpoint": str(random_rexnet["ckpt"])},
        {"name": "torch-bf16", "checkpoint": str(random_rexnet["ckpt"]), "mode": "bf16"},
        {"name": "openvino-fp32", "engine": str(random_rexnet["xml"])},
        {"name": "openvino-bf16", "engine": str(random_rexnet["xml"]), "mode": "bf16"}]))["rows"]}
    for name in ("torch-bf16", "openvino-bf16"):
        assert rows[name]["status"] == "ok" and rows[name]["precision"] == "bf16", rows[name]
        assert rows[name]["accuracy"]["num_images"] == 64
    assert all(c["inference_precision"] == "bf16" for c in rows["openvino-bf16"]["runner"]["compiled"].values())
    assert all(c["inference_precision"] == "f32" for c in rows["openvino-fp32"]["runner"]["compiled"].values())


def test_torch_bf16_autocast_runs_and_is_reported_when_the_cpu_is_taken_to_have_it(random_rexnet, monkeypatch):
    """The bf16 path itself (autocast, float32 logits, the precision it reports), wherever this runs."""
    monkeypatch.setattr(torch_backend, "has_native_bf16", lambda: True)
    x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    ckpt = random_rexnet["ckpt"]
    with open_runner(ckpt, threads=1, mode="bf16") as bf16, open_runner(ckpt, threads=1) as fp32:
        got, ref = bf16.infer(x), fp32.infer(x)
        assert bf16.precision == "bf16" and bf16.describe()["autocast"] == "bfloat16"
    assert got.dtype == np.float32 and got.shape == ref.shape
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.1, rel  # bf16 arithmetic happened (not bitwise FP32) and stayed close


@pytest.mark.skipif(BF16_HERE, reason="this CPU has native BF16")
def test_openvino_refuses_to_call_f32_work_bf16(random_rexnet, monkeypatch):
    """OpenVINO compiles f32 where it has no bf16 kernels; the runner says so instead of labelling it BF16."""
    monkeypatch.setattr(ov_backend, "has_native_bf16", lambda: True)
    with open_runner(random_rexnet["xml"], threads=1, mode="bf16") as runner:
        with pytest.raises(RuntimeUnavailable, match="OpenVINO compiled f32, not bf16"):
            runner.infer(np.zeros((1, 3, 32, 32), np.float32))


def test_bf16_mode_takes_fp32_files_and_modes_are_checked(random_rexnet, tmp_path):
    with pytest.raises(UserError, match="unknown OpenVINO mode 'fast'"):
        open_runner(random_rexnet["xml"], mode="fast")
    with pytest.raises(UserError, match="unknown torch mode 'fast'"):
        open_runner(random_rexnet["ckpt"], mode="fast")
    cases = [({"engine": str(random_rexnet["xml"]), "mode": "fast"},
              "has mode 'fast'; openvino runners take modes bf16, defaults: fix or drop it"),
             ({"onnx": str(random_rexnet["onnx"]), "mode": "bf16"},
              "has mode 'bf16'; onnxruntime runners take modes defaults: fix or drop it"),
             ({"checkpoint": str(random_rexnet["ckpt"]), "mode": "defaults"}, "torch runners take modes bf16:")]
    for entry, message in cases:
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(_suite(tmp_path, [entry])))
        with pytest.raises(UserError, match=message) as exc:
            load_suite(tmp_path / "bad.yaml")
        assert "\n" not in str(exc.value)


# ---- static shapes, hints, streams, requests: chosen per batch as benchmark_app chooses, recorded in the row ----

def _compiled_directly(path, batch: int, config: dict):
    """The file compiled by OpenVINO itself, reshaped to the static batch: what benchmark_app does with -shape."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    dims = [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    model.reshape({0: ov.PartialShape([batch, *dims])})
    return core.compile_model(model, "CPU", config)


def test_openvino_compiles_each_batch_static_with_its_hint_and_the_optimal_number_of_requests(random_rexnet,
                                                                                               tmp_path, monkeypatch):
    jsonschema = pytest.importorskip("jsonschema")
    from rexnet_deploy.backends.openvino import OpenVinoRunner

    held: list[list[int]] = []  # the batch sizes the runner holds compiled after each compile
    compile_batch = OpenVinoRunner._for_batch

    def recording(self, shape):
        entry = compile_batch(self, shape)
        held.append(sorted(s[0] for s in self._compiled))
        return entry

    monkeypatch.setattr(OpenVinoRunner, "_for_batch", recording)
    suite = _suite(tmp_path, [{"name": "openvino-fp32", "engine": str(random_rexnet["xml"])}])
    suite["threads"] = 2
    suite["batches"] = [1, 2, 8]
    results = _run(tmp_path, suite, "res")
    # the bench releases each batch size's compiled model before the next: a group's rows are all open at once
    assert {tuple(h) for h in held} == {(64,), (1,), (2,), (8,)}
    jsonschema.validate(results, json.loads(SCHEMA_PATH.read_text()))
    row = results["rows"][0]
    assert row["status"] == "ok", row["reason"]
    compiled = row["runner"]["compiled"]
    one = compiled["1"]
    assert one["hint"] == "LATENCY" and one["streams"] == 1 and one["requests"] == 1
    assert one["input_shape"] == [1, 3, 32, 32] and one["static"] and one["inference_precision"] == "f32"
    for batch in (2, 8):  # batch 2–7 is a throughput question too (hint_for_batch)
        facts = compiled[str(batch)]
        assert facts["hint"] == "THROUGHPUT" and facts["inference_precision"] == "f32"
        # every request takes the whole static batch, as many requests as the compiled model says are optimal
        assert facts["input_shape"] == [batch, 3, 32, 32] and facts["request_batch"] == batch
        direct = _compiled_directly(random_rexnet["xml"], batch, facts["config"])
        assert facts["requests"] == int(direct.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        assert facts["streams"] == int(direct.get_property("NUM_STREAMS")) and facts["threads"] == 2
        assert facts["config"] == {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32",
                                   "INFERENCE_NUM_THREADS": 2}
    # the timing records how many batches were in flight: the compiled model's requests
    assert {e["batch"]: e["in_flight"] for e in row["speed"]} == {b: compiled[str(b)]["requests"] for b in (1, 2, 8)}
    assert row["runner"]["static_shapes"] and "64" in compiled  # evaluation's one batch of 64 compiled too
    overhead = results["harness_overhead"]
    assert 0 < overhead["per_step_us"]["median"] < 1000 and overhead["steps"] == 2000


def test_static_per_batch_outputs_equal_the_dynamic_model(random_rexnet):
    x = np.random.default_rng(1).standard_normal((13, 3, 32, 32)).astype(np.float32)
    with open_runner(random_rexnet["xml"], threads=1) as runner, open_runner(random_rexnet["onnx"]) as ort:
        full, one, odd = runner.infer(x), runner.infer(x[:1]), runner.infer(x[:11])
        reference = ort.infer(x)
        assert set(runner.describe()["compiled"]) == {"13", "1", "11"}
    np.testing.assert_allclose(full, reference, atol=1e-4)
    np.testing.assert_allclose(one, full[:1], atol=1e-5)
    np.testing.assert_allclose(odd, full[:11], atol=1e-5)


def test_the_async_queue_runs_every_submitted_batch_and_drains(random_rexnet):
    """submit() keeps the compiled model's requests busy with whole batches; wait_all() leaves nothing in flight, and
    infer() (its own request) still returns the logits ONNX Runtime gives, before and after."""
    x = np.random.default_rng(3).standard_normal((8, 3, 32, 32)).astype(np.float32)
    with open_runner(random_rexnet["xml"]) as runner, open_runner(random_rexnet["onnx"]) as ort:
        reference = ort.infer(x)
        np.testing.assert_allclose(runner.infer(x), reference, atol=1e-4)
        entry = runner._compiled[(8, 3, 32, 32)]
        assert runner.requests_in_flight(8) == entry.facts["requests"] >= 1
        for _ in range(3 * entry.facts["requests"]):
            runner.submit(x)
        if entry.queue is not None:  # several requests: the batches went through the asynchronous queue
            assert runner._busy is entry and len(entry.held) >= 1
        runner.wait_all()
        assert runner._busy is None and not entry.held
        if entry.queue is not None:
            assert entry.queue.is_ready()
        np.testing.assert_allclose(runner.infer(x), reference, atol=1e-4)


# ---- the peer rows: the runtime's defaults, run as its own benchmark runs them --------------------------------

def test_the_openvino_peer_is_the_unchanged_onnx_with_openvinos_defaults_and_the_hint_for_the_batch(random_rexnet):
    """``openvino-default`` (mode ``defaults``): the FP32 ONNX itself, static at the batch, OpenVINO's defaults and
    the hint for the batch and nothing else (no inference precision, no thread count even when asked: benchmark_app
    takes none beside a hint), the optimal number of requests. The same compiled model benchmark_app makes with
    ``-shape [8,3,32,32] -hint throughput``, and the IR (the ONNX read by OpenVINO and saved unchanged) gives the
    same."""
    x = np.random.default_rng(2).standard_normal((8, 3, 32, 32)).astype(np.float32)
    for path in (random_rexnet["onnx"], random_rexnet["xml"]):
        runner = ov_backend.OpenVinoRunner(path, threads=1, mode="defaults")
        with runner:
            direct = _compiled_directly(random_rexnet["onnx"], 8, {"PERFORMANCE_HINT": "THROUGHPUT"})
            np.testing.assert_array_equal(runner.infer(x), direct(x)[0])
            runner.infer(x[:1])
            described = runner.describe()
        facts = described["compiled"]["8"]
        assert facts["config"] == {"PERFORMANCE_HINT": "THROUGHPUT"} and facts["input_shape"] == [8, 3, 32, 32]
        assert facts["hint"] == "THROUGHPUT" and facts["static"]
        assert facts["requests"] == int(direct.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        assert facts["streams"] == int(direct.get_property("NUM_STREAMS"))
        assert facts["threads"] == int(direct.get_property("INFERENCE_NUM_THREADS"))  # OpenVINO's, not the 1 asked
        assert facts["inference_precision"] == direct.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        assert described["compiled"]["1"]["config"] == {"PERFORMANCE_HINT": "LATENCY"}
        assert described["mode"] == "defaults" and described["threads_requested"] == 1
        assert described["cache_dir"] is None


def test_the_onnxruntime_peer_sets_nothing_and_says_its_threads_and_requests(random_rexnet):
    from rexnet_deploy.hardware import physical_cores

    x = np.random.default_rng(4).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with open_runner(random_rexnet["onnx"], threads=1, mode="defaults") as peer, \
            open_runner(random_rexnet["onnx"], threads=1) as tool:
        np.testing.assert_allclose(peer.infer(x), tool.infer(x), atol=1e-5)
        assert peer.session.get_session_options().intra_op_num_threads == 0  # ONNX Runtime's own choice
        assert tool.session.get_session_options().intra_op_num_threads == 1
        described, tool_described = peer.describe(), tool.describe()
    assert described["mode"] == "defaults" and described["requests"] == 1 and described["threads_requested"] == 1
    assert described["threads"] == physical_cores() and tool_described["threads"] == 1
    assert tool_described["mode"] == "tool" and tool_described["requests"] == 1
    with pytest.raises(UserError, match="unknown ONNX Runtime mode 'bf16'"):
        open_runner(random_rexnet["onnx"], mode="bf16")


def test_peer_rows_run_beside_the_tools_rows_and_ratios_use_them(random_rexnet, tmp_path):
    rows = {r["name"]: r for r in _run(tmp_path, _suite(tmp_path, [
        {"name": "openvino-default", "engine": str(random_rexnet["xml"]), "mode": "defaults"},
        {"name": "ort-default", "onnx": str(random_rexnet["onnx"]), "mode": "defaults"},
        {"name": "openvino-fp32", "engine": str(random_rexnet["xml"])}], reference="openvino-default"))["rows"]}
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        assert row["reference"] == "openvino-default" and len(row["speed"]) == 2
    assert rows["openvino-default"]["format"] == "openvino [defaults]"
    assert rows["openvino-default"]["runner"]["mode"] == "defaults"
    # compiled per batch like every OpenVINO row: static, the batch's hint, the optimal requests
    peer = rows["openvino-default"]["runner"]["compiled"]
    assert {"1", "8"} <= set(peer) and peer["1"]["hint"] == "LATENCY" and peer["8"]["hint"] == "THROUGHPUT"
    assert rows["ort-default"]["runner"]["mode"] == "defaults" and rows["ort-default"]["runner"]["requests"] == 1
    assert rows["openvino-fp32"]["runner"]["mode"] == "tool"
    # the same weights in every row: the tool's f32 arithmetic agrees with ONNX Runtime's; OpenVINO's defaults may
    # compute in BF16 (a CPU with native BF16), so its top-1 is held to a point, not to the image
    assert rows["openvino-fp32"]["accuracy"] == rows["ort-default"]["accuracy"]
    assert abs(rows["openvino-default"]["accuracy"]["top1"] - rows["openvino-fp32"]["accuracy"]["top1"]) <= 1.0
    assert rows["openvino-fp32"]["ratios"] is not None and rows["openvino-default"]["is_reference"]


# ---- speed-only groups (rexnet_100 at 224 beside 32×32 models) and the committed suite ------------------------

def test_a_speed_only_group_sees_resized_images_of_its_own_preprocessing(tmp_path, fmnist_available):
    pre = Preprocess(48, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    torch.manual_seed(0)
    model = randomize_bn(create_model("rexnet", width=0.25, num_classes=10))
    onnx_path = export_onnx(model, tmp_path / "m48.onnx", (3, 48, 48))
    write_manifest(onnx_path, {"precision": "fp32", "preprocess": pre.to_dict()})
    suite = _suite(tmp_path, [{"name": "ort-fp32", "onnx": str(onnx_path)}],
                   preprocess=pre.to_dict(), eval_images=16)
    row = _run(tmp_path, suite)["rows"][0]
    assert row["status"] == "ok", row["reason"]
    assert row["preprocess_checked"] and row["accuracy"]["num_images"] == 16
    loaded = load_suite(tmp_path / "suite.yaml")
    seen = loaded.dataset_for("m", load_dataset("fashion_mnist", "test"))
    assert tuple(seen.images.shape) == (16, 3, 48, 48) and seen.preprocess == pre
    suite["models"][0].pop("preprocess")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(suite))
    with pytest.raises(UserError, match="eval_images without preprocess"):
        load_suite(tmp_path / "bad.yaml")


def test_the_speed_cpu_suite_is_package_data_and_names_every_precision_and_the_peers():
    suite = load_suite("speed-cpu")
    groups = {g.name: g for g in suite.groups}
    families = ("rexnet_100", "rexnet_lite_100")
    assert set(groups) == {"tiny-cifar-0.5", "tiny-cifar-0.5-random", "pipeline-pruned",
                           *(f"{f}-224{part}" for f in families for part in ("", "-w0.5", "-macs0.5"))}
    assert {1, 16, 64} <= set(suite.batches)  # latency, the 224 models' batch, the 32×32 models'
    trained = {a.name: a for a in groups["tiny-cifar-0.5"].artifacts}
    assert {"openvino-default", "ort-default", "torch-fp32", "torch-bf16", "ort-fp32", "ort-int8", "openvino-fp32",
            "openvino-bf16", "openvino-int8", "openvino-int8-pointwise"} <= set(trained)
    assert trained["openvino-default"].mode == "defaults" and trained["ort-default"].mode == "defaults"
    assert trained["openvino-bf16"].precision == "bf16"
    # the NNCF IR with its float parts in BF16 is still an INT8 row
    assert trained["openvino-int8-bf16"].mode == "bf16" and trained["openvino-int8-bf16"].precision == "int8"
    assert groups["tiny-cifar-0.5"].preprocess is None
    assert groups["tiny-cifar-0.5-random"].eval_images == SPEED_ONLY_IMAGES
    # a speed-only group's preprocess is the contract its files record (bench refuses every row otherwise)
    from rexnet_deploy.data.datasets import FASHION_MNIST_PREPROCESS

    assert groups["tiny-cifar-0.5-random"].preprocess.matches(FASHION_MNIST_PREPROCESS)
    for family in families:  # every precision, both prunes and the peers at 224
        rows = {a.name: a for a in groups[f"{family}-224"].artifacts}
        assert groups[f"{family}-224"].preprocess.size == 224
        assert {"openvino-default", "ort-default", "ort-fp32", "ort-int8", "openvino-fp32", "openvino-bf16",
                "openvino-int8", "openvino-int8-pointwise", "openvino-int8-pointwise-bf16", "executorch-fp32",
                "executorch-int8"} <= set(rows)
        assert "int8-nncf-pointwise" in rows["openvino-int8-pointwise"].path.name
        for prune in ("w0.5", "macs0.5"):  # each prune in a group of its own, against the unpruned model's peer
            group = groups[f"{family}-224-{prune}"]
            pruned = {a.name: a for a in group.artifacts}
            assert group.preprocess.size == 224 and pruned["openvino-default"] == rows["openvino-default"]
            assert {f"{prune}-openvino-default", f"{prune}-openvino-int8-pointwise", f"{prune}-executorch-int8"} \
                <= set(pruned)
            assert f"{prune}-224" in str(pruned[f"{prune}-openvino-default"].path.parent)
    # the pruned model's rows are measured against the unpruned source's FP32 ONNX in OpenVINO
    pruned = {a.name: a for a in groups["pipeline-pruned"].artifacts}
    reference = pruned["openvino-default"]
    assert "pipeline-fmnist-cpu-source" in str(reference.path) and reference.mode == "defaults"
    assert {"pruned-openvino-bf16", "pruned-openvino-int8", "pruned-ort-int8"} <= set(pruned)
    for group in suite.groups:
        assert group.reference_name() == "openvino-default"
        assert all(a.optional for a in group.artifacts)  # a machine without some file still records the rest
    suite.check_files()


# ---- OpenVINO native INT8 (NNCF) -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(request, tmp_path_factory, fmnist_available):
    """A trained ReXNet w=0.5 on Fashion-MNIST: conftest's ``fmnist_trained``, else the same recipe trained here
    through the public API (the shared fixture follows the training refactor and may lag behind it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on two cores other work also uses stall (see test_bench.py)
    try:
        try:
            return request.getfixturevalue("fmnist_trained")
        except Exception:  # noqa: BLE001  (whatever broke the shared fixture, the test needs the model, not it)
            from rexnet_deploy.train import TrainRequest, fit, load_recipe

            recipe = load_recipe("fmnist-cpu", {"epochs": 2, "train_subset": 16000})  # 250 steps of 128
            data = (load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test").subset(2000))
            out = tmp_path_factory.mktemp("precision-trained")
            return fit(TrainRequest(recipe, out, data=data, progress=False)).best_checkpoint
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained_int8(trained, tmp_path_factory) -> dict:
    """The trained model's FP32 ONNX, and its FP32 and NNCF INT8 OpenVINO IRs made by `rexnet-deploy build` as a
    user makes them (the build CLI's own test, in a child process)."""
    from conftest import run_cli

    from rexnet_deploy.quant import CalibrationSet, build_calibration_set

    tmp = tmp_path_factory.mktemp("precision-nncf")
    # an exported FP32 ONNX names its dataset, so build's parity check runs on real test images
    exported = run_cli("export", "--checkpoint", str(trained), "--precision", "fp32", "--engines", "none",
                       "--eval-images", "0", "--out", str(tmp / "b"))
    assert exported.returncode == 0, exported.stderr[-2000:]
    onnx_path = next((tmp / "b").glob("*.fp32.onnx"))
    calib_path = build_calibration_set("fashion_mnist", num_images=300, out=tmp / "calib.pt")
    paths = {"fp32": tmp / "m.fp32.openvino.xml", "int8": tmp / "m.int8-nncf.openvino.xml"}
    for precision, out in paths.items():
        # the same calibration set file every runtime's INT8 is calibrated on
        int8 = ["--precision", "int8", "--calibration", str(calib_path)] if precision == "int8" else []
        proc = run_cli("build", str(onnx_path), "--backend", "openvino", *int8, "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
    return {"dir": tmp, "onnx": onnx_path, **paths, "calib": CalibrationSet.load(calib_path),
            "test": load_dataset("fashion_mnist", "test")}


@needs_nncf
def test_nncf_int8_of_a_trained_model_runs_in_openvino_within_a_point_of_fp32(trained_int8):
    manifest = read_manifest(trained_int8["int8"])
    q = manifest["quantization"]
    assert manifest["precision"] == "int8" and manifest["source_precision"] == "fp32" and manifest["parity"]["passed"]
    assert q["tool"] == "nncf" and q["preset"] == "mixed" and q["subset_size"] == 300 and q["nncf_version"]
    assert q["fast_bias_correction"] is False and q["calibration_source"] == str(trained_int8["calib"].path)
    assert manifest["parity"]["inputs"].startswith("fashion_mnist")
    # the SE gates (pool → fc → Sigmoid → Multiply) are out of INT8, and nothing but them
    assert q["ignored_scope"]["gates"] > 0 and all("/se/" in n for n in q["ignored_scope"]["names"])
    assert q["fake_quantize_ops"] > 0
    # measured as a user measures it, by `bench` in a child process, so a crash there fails this test only
    from conftest import run_cli

    out = trained_int8["dir"] / "bench"
    proc = run_cli("bench", "--engine", str(trained_int8["fp32"]), "--engine", str(trained_int8["int8"]),
                   "--dataset", "fashion_mnist", "--batches", "64", "--threads", "2", "--warmup-steps", "1",
                   "--steps", "3", "--min-steps", "1", "--max-seconds", "1", "--out", str(out))
    assert proc.returncode == 0, f"bench exited {proc.returncode}: {proc.stderr[-2000:]}"
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    fp32_row, int8_row = rows[trained_int8["fp32"].name], rows[trained_int8["int8"].name]
    assert int8_row["status"] == "ok" and int8_row["precision"] == "int8", int8_row
    fp32, int8 = fp32_row["accuracy"]["top1"], int8_row["accuracy"]["top1"]
    assert int8_row["accuracy"]["num_images"] == 10000
    assert fp32 >= 80.0, f"the model did not train ({fp32:.2f} %): the comparison would mean nothing"
    assert fp32 - int8 <= 1.0, f"NNCF INT8 {int8:.2f} % vs FP32 {fp32:.2f} % on 10,000 test images"


@needs_nncf
def test_an_nncf_ir_in_bf16_mode_keeps_int8_kernels_and_runs_its_float_parts_in_bf16(trained_int8, monkeypatch):
    """OpenVINO's own INT8 with what NNCF left in float (SE gates, SiLU, pooling) in BF16: the fastest file on the
    AVX-512 BF16 EPYC. An ONNX Runtime Q/DQ file is no NNCF IR and is refused in one line."""
    from rexnet_deploy.backends import evaluate
    from rexnet_deploy.quant import quantize_onnx

    qdq = trained_int8["dir"] / "m.int8.onnx"
    if not qdq.exists():
        quantize_onnx(trained_int8["onnx"], trained_int8["calib"].path, qdq, progress=False)
    monkeypatch.setattr(ov_backend, "has_native_bf16", lambda: True)
    with pytest.raises(UserError, match="pass the FP32 file or the NNCF IR") as exc:
        ov_backend.OpenVinoRunner(qdq, mode="bf16")
    assert "\n" not in str(exc.value)
    monkeypatch.undo()
    if not BF16_HERE:
        with pytest.raises(RuntimeUnavailable, match=NO_BF16):
            open_runner(trained_int8["int8"], threads=1, mode="bf16")
        pytest.skip(f"{NO_BF16}: the NNCF IR's bf16 mode is refused, as it should be; its kernels need BF16")
    test = trained_int8["test"].subset(2000)
    with open_runner(trained_int8["int8"], threads=2, mode="bf16") as mixed, \
            open_runner(trained_int8["int8"], threads=2) as plain:
        assert mixed.precision == "int8"  # still an INT8 file: its rows compare with INT8 rows
        assert {"int8", "bf16"} <= {layer["precision"] for layer in mixed.profile_layers(8, runs=2)}
        assert "bf16" not in {layer["precision"] for layer in plain.profile_layers(8, runs=2)}
        mixed_top1 = evaluate(mixed, test, progress=False)["top1"]
        plain_top1 = evaluate(plain, test, progress=False)["top1"]
        assert all(c["inference_precision"] == "bf16" for c in mixed.describe()["compiled"].values())
    assert abs(mixed_top1 - plain_top1) <= 0.5, (mixed_top1, plain_top1)


@pytest.mark.slow  # minutes on 2 cores: every precision of two backends built, checked and timed
@needs_nncf
def test_export_precision_auto_records_the_fastest_file_within_the_budget(trained, tmp_path):
    from conftest import run_cli

    out = tmp_path / "bundle-auto"
    proc = run_cli("export", "--checkpoint", str(trained), "--precision", "auto", "--batch", "8",
                   "--eval-images", "1000", "--engines", "openvino", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    bundle = json.loads((out / "bundle.json").read_text())
    auto = bundle["precision_auto"]
    rows = {c["name"]: c for c in auto["candidates"]}
    # every precision was built, OpenVINO's own NNCF INT8 among them, and FP32 again in BF16 arithmetic and
    # under OpenVINO's defaults (the peer: the pick is never slower than it in this timing)
    assert {"ort-fp32", "ort-fp16", "ort-int8", "openvino-fp32", "openvino-int8", "openvino-int8-nncf",
            "openvino-int8-nncf-bf16", "openvino-int8-nncf-pointwise", "openvino-int8-nncf-pointwise-bf16",
            "openvino-bf16", "openvino-default", "ort-default"} <= set(rows)
    assert rows["openvino-default"]["mode"] == rows["ort-default"]["mode"] == "defaults"
    assert auto["deploy_batch"] == 8 and auto["budget_points"] == 0.5 and auto["machine"]["isa_flags"] is not None
    if not BF16_HERE:
        assert rows["openvino-bf16"]["status"] == "skipped" and rows["openvino-bf16"]["reason"] == NO_BF16
    pick = rows[auto["recommended"]]
    assert pick["status"] == "ok" and pick["within_budget"] and pick["drop_points"] <= 0.5
    inside = [c for c in auto["candidates"] if c["within_budget"] and c["status"] == "ok"]
    assert pick["img_per_s"] == max(c["img_per_s"] for c in inside)
    assert bundle["recommended"]["name"] == auto["recommended"] and (out / bundle["recommended"]["path"]).is_file()
    assert f"{auto['recommended']} ← recommended" in (out / "bundle.md").read_text()
    assert "--precision auto:" in proc.stdout


def test_export_precision_auto_refuses_random_weights_in_one_line(tmp_path):
    from conftest import run_cli

    proc = run_cli("export", "--precision", "auto", "--out", str(tmp_path / "b"), "--engines", "none")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "needs a trained --checkpoint" in lines[0], proc.stderr
    assert not (tmp_path / "b").exists()


def test_an_onnxruntime_qdq_file_keeps_its_accuracy_in_openvino(trained_int8):
    """OpenVINO compiles a Q/DQ file for a static batch wrongly on this AVX2 CPU (40 % top-1 where ONNX Runtime
    gives 88 %), so the runner keeps such files dynamic; their top-1 must stay ONNX Runtime's."""
    from rexnet_deploy.backends import evaluate
    from rexnet_deploy.quant import quantize_onnx

    qdq = quantize_onnx(trained_int8["onnx"], trained_int8["calib"].path, trained_int8["dir"] / "m.int8.onnx",
                        progress=False)
    test = trained_int8["test"].subset(2000)
    parity = test.preprocess(test.images[:128]).numpy()
    xml = build_engine(qdq, trained_int8["dir"] / "m.int8.openvino.xml", "openvino", images=parity,
                       parity_source="test")
    assert read_manifest(xml)["quantization"]["tool"] == "onnxruntime Q/DQ" and read_manifest(xml)["parity"]["passed"]
    with open_runner(qdq) as ort, open_runner(xml, threads=2) as runner:
        ort_top1 = evaluate(ort, test, progress=False)["top1"]
        openvino_top1 = evaluate(runner, test, progress=False)["top1"]
        facts = runner.describe()
    assert runner.backend == "openvino" and not facts["static_shapes"] and "why_dynamic" in facts
    assert all(not c["static"] for c in facts["compiled"].values())
    assert abs(ort_top1 - openvino_top1) <= 1.0, (ort_top1, openvino_top1)


@needs_nncf
@pytest.mark.slow
def test_the_accuracy_budget_falls_back_to_nncf_accuracy_control(trained_int8, monkeypatch):
    """Plain INT8 over the budget → quantize_with_accuracy_control, recorded. The first check is made to fail
    (the trained model quantizes within budget), the restoring quantization and its final check are real."""
    real_top1 = ov_backend._top1
    calls = []

    def first_check_fails(ov, model, images, labels):
        calls.append(1)
        return {1: 90.0, 2: 80.0}.get(len(calls)) or real_top1(ov, model, images, labels)

    monkeypatch.setattr(ov_backend, "_top1", first_check_fails)
    test = trained_int8["test"]
    validation = (test.preprocess(test.images[:300]).numpy(), test.labels[:300].numpy())
    fields = ov_backend.build(trained_int8["onnx"], trained_int8["dir"] / "m.int8-ac.openvino.xml", precision="int8",
                              calibration=trained_int8["calib"].images.numpy()[:100], subset_size=100,
                              validation=validation, max_drop=0.5)
    control = fields["quantization"]["accuracy_control"]
    assert fields["quantization"]["api"] == control["api"] == "nncf.quantize_with_accuracy_control"
    assert control["restored"] and control["fp32_top1"] == 90.0 and control["int8_top1"] == 80.0
    assert 0 <= control["final_top1"] <= 100 and control["validation_images"] == 300
    with open_runner(trained_int8["dir"] / "m.int8-ac.openvino.xml", threads=1) as runner:
        assert runner.infer(validation[0][:4]).shape == (4, 10)


def test_openvino_int8_build_refuses_bad_input_in_one_line(random_rexnet):
    def refused(match, **options):
        with pytest.raises(UserError, match=match) as exc:
            ov_backend.build(random_rexnet["onnx"], random_rexnet["root"] / "x.xml", **options)
        assert "\n" not in str(exc.value)

    refused("needs calibration images", precision="int8")
    refused(r"calibration images are \[3, 16, 16\] but the model takes \[3, 32, 32\]", precision="int8",
            calibration=np.zeros((4, 3, 16, 16), np.float32))
    refused("float32 \\[N, C, H, W\\] array, got shape \\(3, 32, 32\\)", precision="int8",
            calibration=np.zeros((3, 32, 32), np.float32))
    refused("fp16 from fp32 is not a build", precision="fp16")
    refused("calibration/validation apply to an int8 build", calibration=np.zeros((4, 3, 32, 32), np.float32))


def _fake_quantized_inputs(model) -> dict[str, int]:
    """How many ops of each type read a FakeQuantize output (through reshapes and converts of weights)."""
    found: dict[str, int] = {}
    for op in model.get_ordered_ops():
        sources = set()
        for port in op.inputs():
            node = port.get_source_output().get_node()
            while node.get_type_name() in ("Reshape", "Convert", "Transpose", "Unsqueeze"):
                node = node.input(0).get_source_output().get_node()
            sources.add(node.get_type_name())
        if "FakeQuantize" in sources:
            found[op.get_type_name()] = found.get(op.get_type_name(), 0) + 1
    return found


@needs_nncf
def test_nncf_int8_scopes_quantize_every_convolution_or_the_pointwise_ones_only(random_rexnet, tmp_path):
    import openvino as ov

    calibration = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    quantized, records = {}, {}
    for scope in ov_backend.INT8_SCOPES:
        xml = tmp_path / f"m-{scope}.openvino.xml"
        records[scope] = ov_backend.build(random_rexnet["onnx"], xml, precision="int8", calibration=calibration,
                                          subset_size=8, int8_scope=scope)["quantization"]
        quantized[scope] = _fake_quantized_inputs(ov.Core().read_model(str(xml)))
        with open_runner(xml, threads=1) as runner:  # an NNCF IR, static per batch like every other
            assert runner.nncf and runner.infer(calibration[:4]).shape == (4, 10)
    assert records["all"]["scope"] == "all" and records["pointwise"]["scope"] == "pointwise"
    assert records["pointwise"]["scope_rule"] == ov_backend.INT8_SCOPES["pointwise"]
    assert records["pointwise"]["ignored_scope"]["types"] == list(ov_backend.POINTWISE_IGNORED_TYPES)
    # all: the depthwise convolutions are INT8 too; pointwise: none of them, the 1×1 convolutions are
    assert quantized["all"].get("GroupConvolution", 0) > 0 and quantized["all"]["Convolution"] > 0
    assert "GroupConvolution" not in quantized["pointwise"] and quantized["pointwise"]["Convolution"] > 0
    for options, message in (({"precision": "int8", "calibration": calibration, "int8_scope": "depthwise"},
                              "unknown INT8 scope 'depthwise': choose all or pointwise"),
                             ({"int8_scope": "pointwise"}, "--int8-scope applies to NNCF's int8 build")):
        with pytest.raises(UserError, match=message) as exc:
            ov_backend.build(random_rexnet["onnx"], tmp_path / "x.xml", **options)
        assert "\n" not in str(exc.value)


def test_auto_candidates_are_every_file_its_modes_the_peers_and_both_int8_scopes(tmp_path):
    from rexnet_deploy.backends import get_backend
    from rexnet_deploy.bundle.auto import candidate_files

    assert get_backend("openvino").own_int8_variants() == {"int8-nncf": "all", "int8-nncf-pointwise": "pointwise"}
    assert get_backend("onnxruntime").own_int8_variants() == {}
    files = [{"file": "m.fp32.onnx", "backend": "onnxruntime", "variant": "fp32", "precision": "fp32"},
             {"file": "m.fp32.uint8.onnx", "backend": "onnxruntime", "variant": "fp32-uint8", "precision": "fp32",
              "embedded_preprocess": True},
             {"file": "m.int8.onnx", "backend": "onnxruntime", "variant": "int8", "precision": "int8"},
             {"file": "m.fp32.openvino.xml", "backend": "openvino", "variant": "fp32", "precision": "fp32"},
             {"file": "m.int8-nncf.openvino.xml", "backend": "openvino", "variant": "int8-nncf", "precision": "int8"},
             {"file": "m.int8-nncf-pointwise.openvino.xml", "backend": "openvino", "variant": "int8-nncf-pointwise",
              "precision": "int8"},
             {"file": "m.int8.pte", "backend": "executorch", "variant": "int8", "precision": "int8"}]
    found = {c.name: c for c in candidate_files(files, tmp_path)}
    assert set(found) == {"ort-fp32", "ort-default", "ort-int8", "openvino-fp32", "openvino-bf16", "openvino-default",
                          "openvino-int8-nncf", "openvino-int8-nncf-bf16", "openvino-int8-nncf-pointwise",
                          "openvino-int8-nncf-pointwise-bf16", "executorch-int8"}
    assert found["ort-default"].mode == found["openvino-default"].mode == "defaults"
    assert found["openvino-int8-nncf-pointwise-bf16"].mode == "bf16"
    assert found["openvino-int8-nncf-pointwise"].path == tmp_path / "m.int8-nncf-pointwise.openvino.xml"


def test_int8_build_without_nncf_is_a_skip_with_the_install_line(random_rexnet, monkeypatch):
    monkeypatch.setattr(ov_backend, "nncf_unavailable_reason",
                        lambda: "NNCF is not installed (No module named 'nncf'): pip install 'rexnet-deploy[openvino]'")
    with pytest.raises(RuntimeUnavailable, match=r"NNCF is not installed .*rexnet-deploy\[openvino\]"):
        ov_backend.build(random_rexnet["onnx"], random_rexnet["root"] / "x.xml", precision="int8",
                         calibration=np.zeros((4, 3, 32, 32), np.float32))


# ---- --precision auto -----------------------------------------------------------------------------------------

TABLE = [
    {"name": "ort-fp32", "precision": "fp32", "status": "ok", "top1": 91.00, "img_per_s": 200.0},
    {"name": "openvino-fp32", "precision": "fp32", "status": "ok", "top1": 91.02, "img_per_s": 300.0},
    {"name": "openvino-int8", "precision": "int8", "status": "ok", "top1": 90.60, "img_per_s": 450.0},
    {"name": "ort-int8", "precision": "int8", "status": "ok", "top1": 89.90, "img_per_s": 900.0},  # 1.12 points off
    {"name": "openvino-bf16", "precision": "bf16", "status": "skipped", "reason": NO_BF16, "top1": None,
     "img_per_s": None},
    {"name": "broken", "precision": "int8", "status": "failed", "reason": "boom", "top1": 99.0, "img_per_s": 5000.0},
]


def test_auto_picks_the_fastest_row_within_the_budget_and_never_one_outside():
    pick = pick_recommended(TABLE)  # reference: the best FP32 row, 91.02
    assert pick["name"] == "openvino-int8" and pick["drop_points"] == pytest.approx(0.42)
    assert pick_recommended(TABLE, 0.0)["name"] == "openvino-fp32"  # only lossless rows: the fastest FP32
    assert pick_recommended(TABLE, 1.2)["name"] == "ort-int8"  # a wider budget admits the faster INT8
    for budget in (0.0, 0.1, 0.41, 0.5, 1.0, 1.11):
        assert pick_recommended(TABLE, budget)["name"] != "ort-int8"  # 1.12 points off: never inside these
    assert pick_recommended(TABLE, reference_top1_value=95.0) is None  # nothing within 0.5 of 95 %: keep FP32


def test_auto_ignores_failed_and_skipped_rows_and_breaks_ties():
    ok = [dict(r) for r in TABLE if r["name"] in ("ort-fp32", "openvino-fp32")]
    failed_fast = {"name": "fast-but-failed", "precision": "int8", "status": "failed", "top1": 91.0,
                   "img_per_s": 1e6}
    no_speed = {"name": "no-speed", "precision": "int8", "status": "ok", "top1": 91.0, "img_per_s": None}
    nan_top1 = {"name": "nan", "precision": "int8", "status": "ok", "top1": float("nan"), "img_per_s": 1e6}
    assert pick_recommended([*ok, failed_fast, no_speed, nan_top1])["name"] == "openvino-fp32"
    tie = [{"name": "a", "precision": "fp32", "status": "ok", "top1": 90.0, "img_per_s": 100.0},
           {"name": "b", "precision": "int8", "status": "ok", "top1": 89.8, "img_per_s": 100.0},
           {"name": "c", "precision": "int8", "status": "ok", "top1": 90.0, "img_per_s": 100.0}]
    assert pick_recommended(tie)["name"] == "a"  # same speed: higher top-1, then the earlier row
    assert pick_recommended(tie[1:], reference_top1_value=90.0)["name"] == "c"
    edge = [{"name": "fp32", "precision": "fp32", "status": "ok", "top1": 91.0, "img_per_s": 1.0},
            {"name": "int8", "precision": "int8", "status": "ok", "top1": 90.5, "img_per_s": 2.0}]
    assert pick_recommended(edge, 0.5)["name"] == "int8"  # exactly at the budget is within it
    assert pick_recommended([dict(r, status="failed") for r in edge], reference_top1_value=91.0) is None


def test_auto_refuses_a_table_it_cannot_judge_in_one_line():
    with pytest.raises(UserError, match="no FP32 row with a measured top-1"):
        pick_recommended([r for r in TABLE if r["precision"] != "fp32"])
    with pytest.raises(UserError, match="reference 'nope' is not among the candidates"):
        pick_recommended(TABLE, reference="nope")
    with pytest.raises(UserError, match="reference 'broken' has no measured top-1"):
        pick_recommended(TABLE, reference="broken")
    with pytest.raises(UserError, match="budget must be ≥ 0"):
        pick_recommended(TABLE, -0.1)
    summary = auto_summary(TABLE, 64)
    assert summary["recommended"] == "openvino-int8" and summary["reference_top1"] == pytest.approx(91.02)
    assert [c["within_budget"] for c in summary["candidates"]] == [True, True, True, False, False, False]
    assert "openvino-int8 ← recommended" in candidates_markdown(summary)


def test_auto_measures_candidate_files_with_the_bench_machinery(random_rexnet, fmnist_available):
    test = load_dataset("fashion_mnist", "test").subset(64)
    files = [CandidateFile("ort-fp32", random_rexnet["onnx"]),
             CandidateFile("openvino-fp32", random_rexnet["xml"]),
             CandidateFile("openvino-bf16", random_rexnet["xml"], mode="bf16"),
             CandidateFile("missing", random_rexnet["root"] / "missing.onnx")]
    rows = {r["name"]: r for r in measure_candidates(files, test, 8, threads=1, timing=Timing(**QUICK_TIMING))}
    for name in ("ort-fp32", "openvino-fp32"):
        assert rows[name]["status"] == "ok" and rows[name]["img_per_s"] > 0 and rows[name]["num_images"] == 64
        assert rows[name]["batch"] == 8 and rows[name]["precision"] == "fp32"
    assert rows["ort-fp32"]["top1"] == rows["openvino-fp32"]["top1"]
    # evaluated and timed at the deploy batch: no candidate holds a model compiled for a larger one
    assert set(rows["openvino-fp32"]["runner"]["compiled"]) == {"8"}
    assert rows["openvino-fp32"]["runner"]["compiled"]["8"]["hint"] == "THROUGHPUT"
    assert rows["missing"]["status"] == "failed" and "does not exist" in rows["missing"]["reason"]
    if not BF16_HERE:
        assert rows["openvino-bf16"]["status"] == "skipped" and rows["openvino-bf16"]["reason"] == NO_BF16
    pick = pick_recommended(list(rows.values()))
    assert pick["name"] in ("ort-fp32", "openvino-fp32", "openvino-bf16")


# ---- benchmark_app agrees with the bench under the same settings ---------------------------------------------

def _check_module():
    spec = importlib.util.spec_from_file_location("benchmark_app_check", ROOT / "scripts" / "benchmark_app_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_fp32(tmp_path_factory) -> dict:
    """tiny-cifar-0.5 (random weights) as FP32 ONNX and the IR built from it."""
    root = tmp_path_factory.mktemp("benchmark-app")
    torch.manual_seed(0)
    model = randomize_bn(create_model("rexnet_tiny_cifar", width=0.5, num_classes=10))
    onnx_path = export_onnx(model, root / "tiny.fp32.onnx", (3, 32, 32))
    return {"onnx": onnx_path, "xml": build_engine(onnx_path, root / "tiny.fp32.openvino.xml", "openvino")}


@pytest.mark.slow
@pytest.mark.parametrize("row,batch", [("peer", 32), ("peer", 1), ("pick", 32)])
def test_benchmark_app_agrees_with_the_peer_and_the_pick_within_15_percent(tiny_fp32, row, batch):
    """OpenVINO's own benchmark_app and the tool's rows on the same file and batch, run as a user runs it
    (``-shape [B,3,32,32] -hint throughput|latency -t 8``). The peer: the unchanged FP32 ONNX under OpenVINO's
    defaults. The pick: what ``--precision auto`` picked on the AVX-512 BF16 EPYC, the FP32 IR in BF16 arithmetic,
    where the CPU has native BF16; elsewhere the FP32 IR in the tool's f32. Alternating runs, best against best
    (see scripts/benchmark_app_check.py)."""
    check = _check_module()
    if check.benchmark_app_path() is None:
        pytest.skip("benchmark_app not found (it ships in the openvino wheel)")
    path, mode = (tiny_fp32["onnx"], "defaults") if row == "peer" else (tiny_fp32["xml"], "bf16" if BF16_HERE
                                                                           else None)
    result = check.cross_check(path, batch, mode, seconds=8, rounds=3)
    assert not result["mismatch"], result["mismatch"]
    assert result["compiled"]["hint"] == ("THROUGHPUT" if batch > 1 else "LATENCY")
    assert result["command"][result["command"].index("-hint") + 1] == result["compiled"]["hint"].lower()
    assert "-nthreads" not in result["command"] and "-nstreams" not in result["command"]
    assert abs(result["ratio"] - 1) <= check.TOLERANCE, result


def test_benchmark_app_check_finds_a_bundles_peer_and_pick_and_refuses_bad_input(tmp_path, capsys):
    check = _check_module()
    bundle = {"files": [{"file": "m.fp32.onnx", "variant": "fp32", "backend": "onnxruntime"},
                        {"file": "m.fp32.uint8.onnx", "variant": "fp32-uint8", "backend": "onnxruntime",
                         "embedded_preprocess": True},
                        {"file": "m.fp32.openvino.xml", "variant": "fp32", "backend": "openvino"}],
              "recommended": {"name": "openvino-bf16", "path": "m.fp32.openvino.xml", "mode": "bf16",
                              "backend": "openvino"}}
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    rows = check.bundle_rows(tmp_path)
    assert rows == [("peer (openvino-default)", tmp_path / "m.fp32.onnx", "defaults"),
                    ("pick (openvino-bf16)", tmp_path / "m.fp32.openvino.xml", "bf16")]
    bundle["recommended"] = {"name": "executorch-int8", "path": "m.int8.pte", "mode": None, "backend": "executorch"}
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    assert [label for label, _, _ in check.bundle_rows(tmp_path)] == ["peer (openvino-default)"]
    assert "benchmark_app measures OpenVINO files only" in capsys.readouterr().out
    for argv, message in (([], "pass a model file or --bundle DIR"),
                          (["--bundle", str(tmp_path / "none")], "is not a bundle"),
                          ([str(tmp_path / "missing.onnx")], "does not exist"),
                          ([str(tmp_path / "bundle.json"), "--batch", "0"], "--batch and --rounds must be")):
        assert check.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


# ---- build --precision int8: OpenVINO's own INT8 from the command line -------------------------------------------

@needs_nncf
def test_int8_of_random_weights_is_built_only_behind_the_flag_and_stays_marked_untrained(tmp_path, fmnist_available):
    """A speed study's INT8 of random weights: ``export --untrained-int8`` builds every INT8 (ONNX Runtime Q/DQ,
    NNCF in both scopes) calibrated on real images, every manifest says untrained, nothing is recommended; without
    the flag INT8 is skipped and says how to ask for it, and ``build --precision int8`` of such an ONNX is refused."""
    from conftest import run_cli

    from rexnet_deploy.quant import build_calibration_set

    calib = build_calibration_set("fashion_mnist", num_images=64, out=tmp_path / "calib.pt")
    common = ["--model", "rexnet_tiny_cifar", "--width", "0.25", "--engines", "openvino", "--eval-images", "0",
              "--parity-images", "16", "--calibration", str(calib)]
    plain = run_cli("export", *common, "--precision", "fp32,int8", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr[-2000:]
    skipped = json.loads((tmp_path / "plain" / "bundle.json").read_text())["skipped"]
    assert any(s["what"] == "int8" and "--untrained-int8" in s["reason"] for s in skipped), skipped
    assert not list((tmp_path / "plain").glob("*int8*"))

    out = tmp_path / "speed"
    proc = run_cli("export", *common, "--precision", "fp32,int8", "--untrained-int8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    bundle = json.loads((out / "bundle.json").read_text())
    variants = {f["variant"]: f for f in bundle["files"]}
    assert {"int8", "int8-nncf", "int8-nncf-pointwise"} <= set(variants)
    assert bundle["untrained"] and bundle.get("recommended") is None
    for f in bundle["files"]:
        manifest = read_manifest(out / f["file"])
        assert manifest["untrained"] is True, f["file"]
        if f["variant"].startswith("int8-nncf"):
            assert manifest["quantization"]["scope"] == {"int8-nncf": "all", "int8-nncf-pointwise": "pointwise"}[
                f["variant"]]
        if f["precision"] == "int8" and not manifest["parity"]["passed"]:
            assert manifest["parity"]["required"] is False  # random logits: recorded, not held to it

    onnx = out / "rexnet_tiny_cifar-0.25.fp32.onnx"
    refused = run_cli("build", str(onnx), "--backend", "openvino", "--precision", "int8", "--calibration", str(calib),
                      "--out", str(tmp_path / "x.openvino.xml"))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "--untrained-int8" in lines[0], refused.stderr
    built = run_cli("build", str(onnx), "--backend", "openvino", "--precision", "int8", "--calibration", str(calib),
                    "--int8-scope", "pointwise", "--untrained-int8", "--out", str(tmp_path / "x.openvino.xml"))
    assert built.returncode == 0, built.stderr[-2000:]
    manifest = read_manifest(tmp_path / "x.openvino.xml")
    assert manifest["untrained"] is True and manifest["quantization"]["scope"] == "pointwise"


def test_untrained_int8_on_a_trained_checkpoint_is_refused_in_one_line(random_rexnet, tmp_path):
    from conftest import run_cli

    proc = run_cli("export", "--checkpoint", str(random_rexnet["ckpt"]), "--untrained-int8", "--engines", "none",
                   "--out", str(tmp_path / "b"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "is trained: drop the flag" in lines[0], proc.stderr
    assert not (tmp_path / "b").exists()


@needs_nncf
def test_build_cli_int8_without_a_calibration_set_is_one_line(trained_int8, tmp_path):
    from conftest import run_cli

    missing = run_cli("build", str(trained_int8["onnx"]), "--backend", "openvino", "--precision", "int8",
                      "--out", str(tmp_path / "x.openvino.xml"))
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and "--calibration" in lines[0], missing.stderr
    assert not (tmp_path / "x.openvino.xml").exists()


# ---- training: the recipe's amp switch is bf16 autocast on a CPU with native BF16 --------------------------------

def test_amp_on_a_cpu_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    from rexnet_deploy import hardware
    from rexnet_deploy.train.trainer import autocast_dtype

    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "has_native_bf16", lambda flags=None: True)
    assert autocast_dtype(True, cpu) == torch.bfloat16 and autocast_dtype(False, cpu) is None
    monkeypatch.setattr(hardware, "has_native_bf16", lambda flags=None: False)
    assert autocast_dtype(True, cpu) is None  # emulated BF16 is slower than FP32: train in FP32
    assert autocast_dtype(True, torch.device("cuda")) == torch.float16


def test_a_cpu_run_records_the_arithmetic_it_trained_in(tmp_path, fmnist_available):
    from rexnet_deploy.data import load_dataset as load
    from rexnet_deploy.train import TrainRequest, fit, load_recipe

    recipe = load_recipe("fmnist-cpu", {"epochs": 1, "train_subset": 256, "val_subset": 128, "batch_size": 64,
                                        "amp": True})  # the recipe itself trains in FP32 (its layers are random_rexnet)
    data = (load("fashion_mnist", "train"), load("fashion_mnist", "test"))
    best = fit(TrainRequest(recipe, tmp_path / "run", data=data, progress=False)).best_checkpoint
    assert load_model(best)[1]["autocast"] == ("bfloat16" if BF16_HERE else None)
