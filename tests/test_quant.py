"""Calibration sets, INT8 Q/DQ per target, the accuracy fallback and FP16, on a trained Fashion-MNIST model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from conftest import run_cli
from onnx import numpy_helper

from rexnet_deploy.artifacts import manifest_path, read_manifest, sha256_file, write_manifest
from rexnet_deploy.backends import evaluate
from rexnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from rexnet_deploy.data import Preprocess, load_fashion_mnist
from rexnet_deploy.errors import UserError
from rexnet_deploy.export import export_onnx
from rexnet_deploy.models import load_model
from rexnet_deploy.quant import (
    AccuracyBudget,
    CalibrationSet,
    build_calibration_set,
    convert_fp16,
    onnx_preprocess,
    quantize_onnx,
)
from rexnet_deploy.quant.calibration import stratified_indices
from rexnet_deploy.quant.int8 import quantizable_units

EVAL_IMAGES = 2000


@pytest.fixture(scope="module")
def test_split(fmnist_available):
    return load_fashion_mnist("test")


@pytest.fixture(scope="module")
def fp32_onnx(fmnist_trained, tmp_path_factory):
    """The shared trained model exported as the export stage does: preprocessing in the metadata."""
    model, meta = load_model(fmnist_trained)
    preprocess = meta.get("preprocess") or load_fashion_mnist("test").preprocess.to_dict()
    return export_onnx(model, tmp_path_factory.mktemp("quant") / "model.onnx", (3, 32, 32),
                       metadata={"preprocess": json.dumps(preprocess), "dataset": "fashion_mnist"})


@pytest.fixture(scope="module")
def calib(fmnist_available, tmp_path_factory):
    return build_calibration_set("fashion_mnist", 512, seed=0, out=tmp_path_factory.mktemp("calib") / "fm.pt")


def _top1(path, split, limit=EVAL_IMAGES) -> float:
    with OnnxRuntimeRunner(path) as runner:
        return evaluate(runner, split, limit=limit, progress=False)["top1"]


def test_stratified_indices_follow_class_shares():
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    picked = stratified_indices(labels, 100, seed=3)
    assert torch.bincount(labels[picked]).tolist() == [60, 30, 10]
    assert len(set(picked.tolist())) == 100
    assert torch.equal(picked, stratified_indices(labels, 100, seed=3))
    assert not torch.equal(picked, stratified_indices(labels, 100, seed=4))
    # 7 images over 3 classes: quotas 4.2, 2.1, 0.7; the leftover image goes to the largest remainder (class 2)
    assert torch.bincount(labels[stratified_indices(labels, 7, seed=0)], minlength=3).tolist() == [4, 2, 1]


def test_calibration_set_is_stratified_seeded_and_preprocessed_as_evaluation(fmnist_available, tmp_path):
    path = build_calibration_set("fashion_mnist", 100, seed=1, out=tmp_path / "c.pt")
    manifest = read_manifest(path)
    train = load_fashion_mnist("train")
    indices = torch.tensor(manifest["indices"])
    assert manifest["class_counts"] == [10] * 10 and manifest["dataset"] == "fashion_mnist"
    assert manifest["split"] == "train" and manifest["sha256"] == sha256_file(path)
    loaded = CalibrationSet.load(path)
    assert torch.equal(loaded.images, train.preprocess(train.images[indices]))
    assert torch.equal(loaded.labels, train.labels[indices])
    assert loaded.preprocess == train.preprocess
    again = build_calibration_set("fashion_mnist", 100, seed=1, out=tmp_path / "again.pt")
    other = build_calibration_set("fashion_mnist", 100, seed=2, out=tmp_path / "other.pt")
    assert read_manifest(again)["indices"] == manifest["indices"]
    assert read_manifest(other)["indices"] != manifest["indices"]


def test_int8_ort_cpu_runs_in_onnxruntime_within_one_point(fp32_onnx, calib, test_split, tmp_path):
    out = quantize_onnx(fp32_onnx, calib, tmp_path / "int8.onnx", method="minmax", target="ort-cpu",
                        budget=AccuracyBudget(test_split, EVAL_IMAGES), progress=False)
    fp32_top1, int8_top1 = _top1(fp32_onnx, test_split), _top1(out, test_split)
    assert fp32_top1 > 50, "the shared fixture should be a trained model"
    assert abs(fp32_top1 - int8_top1) <= 1.0, (fp32_top1, int8_top1)

    manifest = read_manifest(out)
    assert manifest["source_sha256"] == sha256_file(fp32_onnx)
    assert manifest["calibration"]["manifest_sha256"] == sha256_file(manifest_path(calib))
    assert (manifest["method"], manifest["target"]) == ("minmax", "ort-cpu")
    assert manifest["accuracy"]["int8"]["top1"] == pytest.approx(int8_top1)
    assert manifest["accuracy"]["fp32"]["top1"] == pytest.approx(fp32_top1)
    assert manifest["layout"]["found"]["activations"]["types"] == ["uint8"]
    assert manifest["layout"]["found"]["weights"]["types"] == ["int8"]
    graph = onnx.load(str(out)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 50
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["precision"] == "int8"


def test_tensorrt_target_has_only_symmetric_int8_qdq(fp32_onnx, calib, test_split, tmp_path):
    out = quantize_onnx(fp32_onnx, calib, tmp_path / "trt.onnx", method="percentile", target="tensorrt",
                        progress=False)
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 100
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:  # weights: int8 only, no int32 bias
            assert inits[node.input[0]].dtype == np.int8, node.name
    assert not any(i.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT32) for i in model.graph.initializer)
    # symmetric ranges do not clip at zero, so ReLU/ReLU6 must stay in the graph (ORT issue #11660)
    assert {"Relu", "Clip"} <= {n.op_type for n in model.graph.node}
    assert abs(_top1(fp32_onnx, test_split, 1000) - _top1(out, test_split, 1000)) <= 2.0


OUTLIER_UNITS = {"stem", "features.0/conv_dw"}
# 1 point of 500 images: with the outliers in float the rest of the model's INT8 noise cost 0.6 point on an
# AVX-512 VNNI EPYC (2 epochs of training), where 0.5 would take three more units, varying by CPU and weights
FALLBACK_MAX_DROP = 1.0


@pytest.fixture(scope="module")
def outlier_onnx(fmnist_trained, tmp_path_factory):
    """The trained model with one stem channel scaled ×100 (and the next depthwise conv scaled back).

    A real activation outlier: FP32 barely changes, but the stem output's one per-tensor uint8 range
    now spends its levels on that channel and crushes the other 31 — the tensor that the stem and
    ``features.0/conv_dw`` (its only consumer) quantize.
    """
    model, meta = load_model(fmnist_trained)
    with torch.no_grad():
        model.stem.bn.weight[0] *= 100.0
        model.stem.bn.bias[0] *= 100.0
        model.features[0].conv_dw.conv.weight[0] /= 100.0
    return export_onnx(model, tmp_path_factory.mktemp("outlier") / "outlier.onnx", (3, 32, 32),
                       metadata={"preprocess": json.dumps(meta["preprocess"])})


@pytest.fixture(scope="module")
def fallback_int8(outlier_onnx, calib, test_split, tmp_path_factory):
    return quantize_onnx(outlier_onnx, calib, tmp_path_factory.mktemp("fallback") / "fallback.onnx",
                         target="ort-cpu", budget=AccuracyBudget(test_split, 500, FALLBACK_MAX_DROP, 4),
                         progress=False)


def test_sensitivity_ranking_finds_the_outlier(fallback_int8, outlier_onnx, tmp_path):
    from rexnet_deploy.quant.int8 import prepare_for_quantization

    ranked = read_manifest(fallback_int8)["sensitivity"]
    units = quantizable_units(onnx.load(str(prepare_for_quantization(outlier_onnx, tmp_path / "prepared.onnx"))))
    assert {r["unit"] for r in ranked} == set(units) and {"stem", "head", "features.3/se"} <= set(units)
    errors = [r["logit_error"] for r in ranked]
    assert errors == sorted(errors, reverse=True)
    assert {r["unit"] for r in ranked[:2]} == OUTLIER_UNITS
    assert ranked[1]["logit_error"] > 10 * ranked[2]["logit_error"]


def test_fallback_keeps_sensitive_units_float_until_the_budget_holds(fallback_int8, test_split):
    manifest = read_manifest(fallback_int8)
    acc = manifest["accuracy"]
    steps = acc["fallback_steps"]
    assert steps[0]["float_units"] == [] and steps[0]["top1"] < acc["fp32"]["top1"] - FALLBACK_MAX_DROP
    # one more unit per step, in sensitivity order, stopping at the first step within budget
    ranked = [r["unit"] for r in manifest["sensitivity"]]
    assert [s["float_units"] for s in steps] == [ranked[:k] for k in range(len(steps))]
    assert all(s["top1"] < acc["fp32"]["top1"] - FALLBACK_MAX_DROP for s in steps[:-1])
    kept = [u["unit"] for u in manifest["float_units"]]
    # the outliers go first; whether the rest of the model's INT8 noise then needs one more unit depends on the
    # trained weights and the CPU's INT8 kernels, so a third unit may follow them
    assert kept == steps[-1]["float_units"] and set(kept[:len(OUTLIER_UNITS)]) <= OUTLIER_UNITS
    assert acc["within_budget"] and acc["fp32"]["top1"] - acc["int8"]["top1"] <= FALLBACK_MAX_DROP
    assert acc["int8"]["top1"] == pytest.approx(_top1(fallback_int8, test_split, 500))
    # the nodes kept in float really are: no dequantized weights feed them in the written model
    graph = onnx.load(str(fallback_int8)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    floats = [n for n in graph.node if n.name in manifest["nodes_in_float"]]
    assert {n.op_type for n in floats} >= {"Conv"}
    assert all(n.input[1] not in dequantized for n in floats if n.op_type == "Conv")


def test_fp16_runs_in_onnxruntime_with_float32_io(fp32_onnx, test_split, tmp_path):
    out = convert_fp16(fp32_onnx, tmp_path / "fp16.onnx", eval_set=test_split, eval_images=1000, progress=False)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    acc = read_manifest(out)["accuracy"]
    assert abs(acc["top1_drop"]) <= 0.3 and acc["fp16"]["top1"] == pytest.approx(_top1(out, test_split, 1000))


def _empty_calibration_set(path, template):
    torch.save({"images": torch.zeros(0, 3, 32, 32), "labels": torch.zeros(0, dtype=torch.long),
                "indices": torch.zeros(0, dtype=torch.long)}, path)
    manifest = {k: v for k, v in read_manifest(template).items() if k not in ("sha256", "size_bytes")}
    write_manifest(path, {**manifest, "num_images": 0, "indices": []})
    return path


def test_empty_and_mismatched_calibration_sets_are_refused(fp32_onnx, calib, tmp_path):
    empty = _empty_calibration_set(tmp_path / "empty.pt", calib)
    with pytest.raises(UserError, match="holds 0 images") as err:
        quantize_onnx(fp32_onnx, empty, tmp_path / "x.onnx", progress=False)
    assert "\n" not in str(err.value) and str(empty) in str(err.value)

    # the same network exported for ImageNet-normalised inputs: calibrating it on this set would be wrong
    imagenet = Preprocess(32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    other = tmp_path / "imagenet-normalised.onnx"
    model = onnx.load(str(fp32_onnx))
    for prop in model.metadata_props:
        if prop.key == "preprocess":
            prop.value = json.dumps(imagenet.to_dict())
    onnx.save(model, str(other))
    with pytest.raises(UserError, match="was preprocessed as .* but .* expects") as err:
        quantize_onnx(other, calib, tmp_path / "y.onnx", progress=False)
    assert "\n" not in str(err.value)

    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(UserError, match="records no preprocessing"):
        quantize_onnx(bare, calib, tmp_path / "z.onnx", progress=False)
    write_manifest(bare, {"preprocess": imagenet.to_dict()})  # the export stage's manifest is read first
    assert onnx_preprocess(bare) == imagenet

    torch.save({"images": torch.zeros(40, 3, 32, 32)}, tmp_path / "tampered.pt")
    (tmp_path / "tampered.pt.json").write_text(manifest_path(calib).read_text())
    with pytest.raises(UserError, match="does not match its manifest"):
        CalibrationSet.load(tmp_path / "tampered.pt")


def test_cli_refuses_bad_calibration_with_one_line(fp32_onnx, calib, tmp_path):
    empty = _empty_calibration_set(tmp_path / "empty.pt", calib)
    result = run_cli("quantize", str(fp32_onnx), "--calibration", str(empty), "--out", str(tmp_path / "q.onnx"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "holds 0 images" in result.stderr and "rexnet-deploy calib" in result.stderr

    result = run_cli("calib", "--calibration-images", "0", "--out", str(tmp_path / "c.pt"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr

    result = run_cli("quantize", str(fp32_onnx), "--out", str(tmp_path / "q.onnx"))
    assert result.returncode == 2 and "--calibration is required" in result.stderr


def test_cli_calib_then_quantize(fp32_onnx, tmp_path):
    calib_path = tmp_path / "cli.pt"
    result = run_cli("calib", "--dataset", "fashion_mnist", "--calibration-images", "64", "--seed", "5",
                     "--out", str(calib_path))
    assert result.returncode == 0, result.stderr
    assert read_manifest(calib_path)["class_counts"] == [7, 7, 7, 7, 6, 6, 6, 6, 6, 6]
    out = tmp_path / "cli-int8.onnx"
    result = run_cli("quantize", str(fp32_onnx), "--calibration", str(calib_path), "--target", "tensorrt",
                     "--eval-images", "300", "--max-drop", "100", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "kept in float: nothing" in result.stdout and "int8 symmetric" in result.stdout
    assert read_manifest(out)["accuracy"]["num_images"] == 300
