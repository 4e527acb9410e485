"""Your own images through every stage (issue 13): an ImageFolder tree of real images (Fashion-MNIST test images
written as PNG, 10 classes × 30 train + 10 val, 32×32) through train, calib, prune, export (INT8 calibrated from
the tree), bench and the pipeline, with no dataset flags after training; and each bad input as one line, exit 2,
nothing written. Commands run in-process (``rexnet_deploy.cli.main``), as a user types them."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from rexnet_deploy.artifacts import read_manifest
from rexnet_deploy.cli import main
from rexnet_deploy.data import FASHION_MNIST_CLASSES, dataset_spec, load_fashion_mnist, load_split
from rexnet_deploy.models.checkpoint import read_metadata

TRAIN_PER_CLASS, VAL_PER_CLASS = 30, 10
CLASSES = sorted(c.replace("/", "_").replace(" ", "_") for c in FASHION_MNIST_CLASSES)
FAST_BENCH = ("--batches", "1", "--warmup-steps", "1", "--warmup-seconds", "0", "--steps", "3", "--min-steps", "1",
              "--max-seconds", "0.2")


@contextmanager
def _in(folder: Path):
    """Run in ``folder`` (export writes its default calibration set to ./calib/)."""
    before = os.getcwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def cli(capsys, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """``rexnet-deploy ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    if cwd is None:
        code = main([str(a) for a in args])
    else:
        with _in(cwd):
            code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args: str, cwd: Path | None = None) -> str:
    code, _, err = cli(capsys, *args, cwd=cwd)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def write_tree(root: Path, classes: list[str] | None = None, train: int = TRAIN_PER_CLASS,
               val: int = VAL_PER_CLASS) -> Path:
    """Fashion-MNIST test images as PNG: grey (the dataset's own mode), every 7th one RGBA, every 11th palette."""
    from PIL import Image

    test = load_fashion_mnist("test")
    names = [c.replace("/", "_").replace(" ", "_") for c in FASHION_MNIST_CLASSES]
    keep = set(classes or names)
    for label, name in enumerate(names):
        if name not in keep:
            continue
        members = torch.nonzero(test.labels == label).flatten()[:train + val].tolist()
        for i, index in enumerate(members):
            split = "train" if i < train else "val"
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(test.images[index, 0].numpy(), mode="L")
            if i % 7 == 3:
                image = image.convert("RGBA")
            elif i % 11 == 5:
                image = image.convert("P")
            image.save(folder / f"{index:05d}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory, fmnist_available) -> Path:
    return write_tree(tmp_path_factory.mktemp("imagefolder") / "tree")


@pytest.fixture(scope="module")
def trained(tree, tmp_path_factory) -> Path:
    """``train --dataset imagefolder --data-dir TREE --input-size 32``: the fmnist-cpu recipe, 6 short epochs (a
    model trained less has near-tied logits, and INT8 parity of its pruned form is a coin toss)."""
    run = tmp_path_factory.mktemp("train") / "run"
    code = main(["train", "--dataset", "imagefolder", "--data-dir", str(tree), "--input-size", "32", "--epochs", "6",
                 "--batch-size", "30", "--out", str(run), "--no-progress"])
    assert code == 0
    return run / "best.pt"


@pytest.fixture(scope="module")
def pruned(trained, tmp_path_factory) -> Path:
    """``prune CKPT --macs 0.5 --epochs 1``: no dataset flags, the checkpoint says where its data is."""
    out = tmp_path_factory.mktemp("prune") / "p"
    assert main(["prune", "--checkpoint", str(trained), "--macs", "0.5", "--epochs", "1", "--eval-images", "50",
                 "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def bundle(pruned, tmp_path_factory) -> Path:
    """``export --checkpoint finetuned.pt --precision fp32,int8``: INT8 calibrated from the tree, by default."""
    work = tmp_path_factory.mktemp("export")
    with _in(work):
        assert main(["export", "--checkpoint", str(pruned / "finetuned.pt"), "--precision", "fp32,int8",
                     "--engines", "none", "--parity-images", "32", "--eval-images", "50", "--out", "bundle"]) == 0
    return work / "bundle"


def test_training_records_the_dataset_spec(trained, tree):
    meta = read_metadata(trained)
    spec = meta["dataset_spec"]
    assert spec["name"] == "imagefolder" and spec["folder"] == str(tree.resolve()) and spec["input_size"] == 32
    assert spec["classes"] == CLASSES == meta["classes"] and meta["num_classes"] == 10
    pre = spec["preprocess"]
    assert pre["size"] == 32 and pre["crop_pct"] == 0.875 and pre["interpolation"] == "bicubic"
    assert pre["resize"] == "shorter-side-crop" and pre == meta["preprocess"]  # the whole contract, once
    assert meta["recipe"]["dataset"] == "imagefolder" and meta["recipe"]["input_size"] == 32


def test_a_small_tree_is_held_in_memory_with_the_model_input_size(tree, capsys):
    held = load_split(dataset_spec("imagefolder", tree, input_size=32), "train")
    assert held.in_memory and held.images.shape == (300, 3, 32, 32) and held.images.dtype == torch.uint8
    assert held.classes == tuple(CLASSES) and torch.bincount(held.labels).tolist() == [30] * 10
    # the default input size is the model's own (224 for rexnet): the tree streams, and one line says it is small
    capsys.readouterr()
    streamed = load_split(dataset_spec("imagefolder", tree, model="rexnet"), "val")
    assert not streamed.in_memory and streamed.preprocess.size == 224
    assert dataset_spec("imagefolder", tree, model="rexnet_tiny_cifar").input_size == 32
    note = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(note) == 1 and "at most 32×32 px" in note[0] and "--input-size 32" in note[0], note


def test_calib_reads_the_checkpoint_s_data(trained, tree, tmp_path, capsys):
    code, out, err = cli(capsys, "calib", "--checkpoint", trained, "--calibration-images", "64", "--seed", "3",
                         "--out", tmp_path / "c.pt")
    assert code == 0, err
    manifest = read_manifest(tmp_path / "c.pt")
    assert manifest["dataset"] == "imagefolder" and manifest["dataset_spec"]["folder"] == str(tree.resolve())
    assert manifest["class_counts"] == [7, 7, 7, 7, 6, 6, 6, 6, 6, 6] and manifest["classes"] == CLASSES
    assert manifest["preprocess"] == read_metadata(trained)["preprocess"] and manifest["shape"] == [64, 3, 32, 32]
    assert str(tree.resolve()) in out
    # the same draw from the flags alone
    code, _, err = cli(capsys, "calib", "--dataset", "imagefolder", "--data-dir", tree, "--input-size", "32",
                       "--calibration-images", "64", "--seed", "3", "--out", tmp_path / "d.pt")
    assert code == 0, err
    assert read_manifest(tmp_path / "d.pt")["indices"] == manifest["indices"]


def test_prune_and_fine_tune_find_the_data_without_flags(pruned, tree):
    report = json.loads((pruned / "report.json").read_text())
    assert report["dataset"] == "imagefolder" and report["eval_images"] == 50
    assert [r["stage"] for r in report["rows"]] == ["source", "pruned", "pruned + fine-tuned"]
    assert report["rows"][1]["macs"] <= 0.5 * report["rows"][0]["macs"]
    for name in ("pruned.pt", "finetuned.pt"):
        meta = read_metadata(pruned / name)
        assert meta["dataset_spec"]["folder"] == str(tree.resolve()) and meta["classes"] == CLASSES
        assert meta["dataset_spec"]["input_size"] == 32


def test_export_calibrates_int8_from_the_tree(bundle, tree):
    import onnx

    summary = json.loads((bundle / "bundle.json").read_text())
    assert summary["dataset"] == "imagefolder" and summary["classes"] == CLASSES
    assert summary["parity_inputs"].startswith("imagefolder val split") and "random" not in summary["parity_inputs"]
    variants = {f["variant"]: f for f in summary["files"]}
    assert "int8" in variants and not [s for s in summary["skipped"] if s["what"] == "int8"]
    int8 = read_manifest(bundle / variants["int8"]["file"])
    assert int8["dataset_spec"]["folder"] == str(tree.resolve()) and int8["accuracy"]["split"] == "imagefolder/val"
    calib = read_manifest(bundle.parent / int8["calibration"]["path"])  # drawn in export's folder, by default
    assert calib["dataset_spec"]["folder"] == str(tree.resolve()) and calib["num_images"] == 300
    props = {p.key: p.value for p in onnx.load(str(bundle / variants["fp32"]["file"])).metadata_props}
    assert json.loads(props["classes"]) == CLASSES and props["dataset"] == "imagefolder"
    assert json.loads(props["dataset_spec"])["folder"] == str(tree.resolve())


def test_bench_measures_accuracy_on_val(pruned, bundle, tree, tmp_path, capsys):
    fp32 = next(bundle.glob("*.fp32.onnx"))
    code, _, err = cli(capsys, "bench", "--checkpoint", pruned / "finetuned.pt", "--onnx", fp32, "--eval-images", "50",
                       *FAST_BENCH, "--out", tmp_path / "r")
    assert code == 0, err
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["dataset"]["dataset"] == "imagefolder" and results["dataset"]["root"] == str(tree.resolve() / "val")
    assert results["dataset"]["classes"] == CLASSES and results["dataset"]["num_images"] == 100
    rows = {r["kind"]: r for r in results["rows"]}
    assert all(r["status"] == "ok" and r["preprocess_checked"] for r in rows.values())
    assert rows["checkpoint"]["accuracy"]["num_images"] == 50
    assert abs(rows["checkpoint"]["accuracy"]["top1"] - rows["onnx"]["accuracy"]["top1"]) <= 2.0


def test_pipeline_runs_end_to_end_on_an_image_folder(tree, tmp_path, capsys):
    out = tmp_path / "pipe"
    code, stdout, err = cli(capsys, "pipeline", "--dataset", "imagefolder", "--data-dir", tree, "--input-size", "32",
                            "--epochs", "1", "--finetune-epochs", "1", "--calibration-images", "32",
                            "--eval-images", "40", "--batches", "1", "--engines", "none", "--out", out, cwd=tmp_path)
    # --engines none: the ONNX Runtime rows show the data reached every stage; lowering to ExecuTorch alone takes
    # minutes on 2 cores. No --baseline: the check stage holds each artifact to the default baseline's drop
    # budgets against this run's own reference rows (a 1-epoch model may fail them: exit 1, every file written)
    assert code in (0, 1), err
    results = json.loads((out / "bench" / "results.json").read_text())
    assert results["dataset"]["root"] == str(tree.resolve() / "val") and results["dataset"]["classes"] == CLASSES
    names = {r["name"] for r in results["rows"]}
    assert {"torch-source-fp32", "torch-pruned-fp32", "ort-fp32", "ort-int8"} <= names
    assert all(r["status"] != "failed" for r in results["rows"])
    assert all(r["accuracy"]["num_images"] == 40 for r in results["rows"] if r["status"] == "ok")
    junit = (out / "bench" / "junit.xml").read_text()
    assert "drop vs" in junit and "top-1 ≥" not in junit  # relative budgets, no Fashion-MNIST floors
    assert read_metadata(out / "train" / "best.pt")["dataset_spec"]["folder"] == str(tree.resolve())
    assert read_manifest(out / "calib" / "calib.pt")["dataset_spec"]["folder"] == str(tree.resolve())


def test_pipeline_flags_override_the_recipe_only_where_given():
    from rexnet_deploy.pipeline.run import PipelineConfig, pipeline_recipe

    assert pipeline_recipe(PipelineConfig.quick()).epochs == 2  # quick's own schedule, not the recipe's 6
    assert pipeline_recipe(PipelineConfig.quick(epochs=1)).epochs == 1
    folder = pipeline_recipe(PipelineConfig(dataset="imagefolder", input_size=48))
    assert (folder.dataset, folder.input_size, folder.epochs) == ("imagefolder", 48, 6)


def test_own_reference_baseline_keeps_the_drop_budgets_only():
    from rexnet_deploy.pipeline.run import own_reference_baseline

    derived = own_reference_baseline("pipeline-fmnist-cpu")
    entries = derived["artifacts"]
    assert entries["pipeline/ort-int8"] == {"max_drop": 0.5}
    assert entries["pipeline/torch-pruned-fp32"] == {"max_drop": 1.0, "versus": None}
    assert not any(k.startswith("min_top") for e in entries.values() for k in e)


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written
def _broken_copy(tree: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bad"
    shutil.copytree(tree, copy)
    return copy


def test_a_root_without_val_is_one_line(tree, tmp_path, capsys):
    bad = _broken_copy(tree, tmp_path)
    shutil.rmtree(bad / "val")
    line = one_line_error(capsys, "calib", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--calibration-images", "32", "--out", tmp_path / "c.pt")
    assert str(bad) in line and "no val/" in line and "train/ and val/" in line
    assert not (tmp_path / "c.pt").exists()
    shutil.rmtree(bad / "train")
    line = one_line_error(capsys, "train", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--out", tmp_path / "run")
    assert "no train/ and no val/" in line and not (tmp_path / "run").exists()


def test_an_empty_class_folder_is_one_line(tree, tmp_path, capsys):
    bad = _broken_copy(tree, tmp_path)
    for f in (bad / "val" / "Bag").iterdir():
        f.unlink()
    line = one_line_error(capsys, "train", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--out", tmp_path / "run")
    assert f"class folder {bad / 'val' / 'Bag'} holds no images" in line and not (tmp_path / "run").exists()


def test_a_class_missing_from_one_split_is_one_line(tree, tmp_path, capsys):
    bad = _broken_copy(tree, tmp_path)
    shutil.rmtree(bad / "val" / "Coat")
    line = one_line_error(capsys, "pipeline", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--out", tmp_path / "pipe")
    assert f"class 'Coat' is in {bad / 'train'}/ but not in {bad / 'val'}/" in line
    assert not (tmp_path / "pipe").exists()
    shutil.rmtree(bad / "train" / "Coat")
    shutil.copytree(tree / "val" / "Coat", bad / "val" / "Coat-new")
    line = one_line_error(capsys, "calib", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--calibration-images", "32", "--out", tmp_path / "c.pt")
    assert f"class 'Coat-new' is in {bad / 'val'}/ but not in {bad / 'train'}/" in line
    assert not (tmp_path / "c.pt").exists()


def test_a_file_that_is_not_an_image_is_named(tree, tmp_path, capsys):
    bad = _broken_copy(tree, tmp_path)
    (bad / "train" / "Sandal" / "broken.png").write_text("this is not a PNG")
    line = one_line_error(capsys, "calib", "--dataset", "imagefolder", "--data-dir", bad, "--input-size", "32",
                          "--calibration-images", "32", "--out", tmp_path / "c.pt")
    assert f"image {bad / 'train' / 'Sandal' / 'broken.png'} cannot be decoded" in line and "remove or replace" in line
    assert not (tmp_path / "c.pt").exists()


def test_fewer_images_than_the_calibration_size_is_one_line(trained, tree, tmp_path, capsys):
    line = one_line_error(capsys, "calib", "--checkpoint", trained, "--calibration-images", "400",
                          "--out", tmp_path / "c.pt")
    assert "has 300 training images, fewer than the 400 calibration images asked for" in line
    assert str(tree.resolve() / "train") in line and not (tmp_path / "c.pt").exists()


def test_a_checkpoint_for_other_classes_is_one_line(trained, tree, tmp_path, capsys):
    three = write_tree(tmp_path / "three", CLASSES[:3], train=12, val=4)
    line = one_line_error(capsys, "export", "--checkpoint", trained, "--data-dir", three, "--engines", "none",
                          "--out", tmp_path / "b", cwd=tmp_path)
    assert f"checkpoint {trained} has 10 classes but {three.resolve() / 'val'} has 3" in line
    assert not (tmp_path / "b").exists() and not (tmp_path / "calib").exists()
    line = one_line_error(capsys, "bench", "--checkpoint", trained, "--data-dir", three, *FAST_BENCH,
                          "--out", tmp_path / "r")
    assert "has 10 classes" in line and "has 3" in line and not (tmp_path / "r").exists()


def test_grey_palette_and_rgba_images_are_converted(tree):
    from PIL import Image

    modes = {Image.open(p).mode for p in (tree / "train" / "Bag").iterdir()}
    assert modes == {"L", "RGBA", "P"}
    held = load_split(dataset_spec("imagefolder", tree, input_size=32), "train")
    assert held.images.shape[1] == 3 and torch.equal(held.images[:, 0], held.images[:, 2])


def test_a_moved_tree_is_named_by_every_stage(trained, tree, tmp_path, capsys):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    gone = tmp_path / "moved-away"
    ckpt["dataset_spec"]["folder"] = str(gone)
    moved = tmp_path / "moved.pt"
    torch.save(ckpt, moved)
    expected = f"was trained on the ImageFolder tree {gone}, which is not there any more: pass --data-dir"
    for args in (("export", "--checkpoint", moved, "--engines", "none", "--out", tmp_path / "b"),
                 ("calib", "--checkpoint", moved, "--calibration-images", "32", "--out", tmp_path / "c.pt"),
                 ("bench", "--checkpoint", moved, *FAST_BENCH, "--out", tmp_path / "r"),
                 ("prune", "--checkpoint", moved, "--macs", "0.5", "--epochs", "0", "--out", tmp_path / "p")):
        line = one_line_error(capsys, *args, cwd=tmp_path)
        assert expected in line, (args[0], line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moved.pt"]
    # pointed at where the tree is now, the same checkpoint exports (a trained model never gets random inputs)
    code, _, err = cli(capsys, "export", "--checkpoint", moved, "--data-dir", tree, "--precision", "fp32",
                       "--engines", "none", "--parity-images", "8", "--eval-images", "0", "--out", tmp_path / "b",
                       cwd=tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "bundle.json").read_text())["parity_inputs"].startswith("imagefolder val")


def test_numpy_is_real(tree):  # the tree holds the dataset's own pixels, not noise
    from PIL import Image

    first = sorted((tree / "train" / "Trouser").iterdir())[0]
    index = int(first.stem)
    original = load_fashion_mnist("test").images[index, 0].numpy()
    assert np.array_equal(np.asarray(Image.open(first).convert("L")), original)
