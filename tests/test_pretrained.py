"""Start from pretrained weights (issue 25): timm's layout, the official clovaai layout and this project's
checkpoints start a run on an ImageFolder tree of other classes with a new head (kept when the classes are the
same), every other weight loaded, and the run records where its weights came from; the finetune recipe's lower
backbone rate and head-only first epochs survive an exact resume; bad inputs are one line, exit 2. Commands run
in-process (``rexnet_deploy.cli.main``) on tiny trees of real Fashion-MNIST PNGs, a few steps each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, randomize_bn
from test_imagefolder import CLASSES, cli, one_line_error, write_tree
from test_models import _official_state_dict

from rexnet_deploy.artifacts import read_manifest, sha256_file
from rexnet_deploy.cli import main
from rexnet_deploy.data import load_split
from rexnet_deploy.models import create_model, load_model, save_model_checkpoint
from rexnet_deploy.models.checkpoint import read_checkpoint, read_metadata
from rexnet_deploy.models.rexnet import CLASSIFIER
from rexnet_deploy.pipeline.run import PipelineConfig, pipeline_recipe
from rexnet_deploy.prune import FinetuneSpec, PruneRequest, prune_checkpoint
from rexnet_deploy.train import TrainRequest, fit, fit_stage, load_recipe
from rexnet_deploy.train.pretrained import pretrained_recipe, start_from
from rexnet_deploy.train.trainer import build_phase

THREE = CLASSES[:3]  # the run's classes: three of Fashion-MNIST's, as a user's folder names them
# 1 epoch of 3 steps of 8 images: the finetune recipe's first epoch trains the classifier alone. One thread: on 2
# cores shared with other work, 2 threads of these tiny models ran many times slower than one.
RUN = ("--dataset", "imagefolder", "--epochs", "1", "--batch-size", "8", "--no-progress", "--threads", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """These tiny models on one thread (the API calls too); the tests after them get the count they started with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, fmnist_available) -> Path:
    return write_tree(tmp_path_factory.mktemp("pretrained") / "tree", THREE, train=8, val=4)


def _timm_file(root: Path) -> Path:
    """A timm ``rexnet_100`` state_dict with random weights (BatchNorm statistics too), as timm users save one."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    path = root / "rexnet_100-timm.pth"
    torch.save(randomize_bn(timm.create_model("rexnet_100", pretrained=False)).state_dict(), path)
    return path


def _ours(root: Path, classes: tuple[str, ...] | None, input_size: int = 32) -> Path:
    """This project's checkpoint of a random ReXNet w=0.25 for ``classes`` (10 unnamed ones when None), recording
    an ImageFolder tree at ``input_size`` as the trainer records its data."""
    from rexnet_deploy.data import dataset_spec

    torch.manual_seed(1)
    model = randomize_bn(create_model("rexnet", width=0.25, num_classes=len(classes) if classes else 10))
    spec = dataset_spec("imagefolder", root, input_size=input_size).replace(classes=classes)
    meta = {"dataset": "imagefolder", "dataset_spec": spec.to_dict(), "preprocess": spec.preprocess.to_dict()}
    if classes:
        meta["classes"] = list(classes)
    return save_model_checkpoint(model, root / f"ours-{len(classes) if classes else 10}.pt", **meta)


def _tree_spec(tree: Path):
    from rexnet_deploy.data import dataset_spec

    return dataset_spec("imagefolder", tree, input_size=32)


def _backbone_unchanged(source: dict[str, torch.Tensor], run: Path) -> dict[str, torch.Tensor]:
    """After the head-only epoch every tensor but the classifier's equals the source's, BatchNorm statistics
    included (so every one of them was loaded); returns the run's weights."""
    trained = read_checkpoint(run / "last.pt")["model"]
    rest = [k for k in trained if not k.startswith(CLASSIFIER + ".")]
    assert rest and set(rest) == {k for k in source if not k.startswith(CLASSIFIER + ".")}
    assert all(torch.equal(trained[k], source[k]) for k in rest), "a backbone tensor was not loaded or moved"
    return trained


def test_timm_rexnet_100_fine_tunes_with_a_new_head(tree, tmp_path, capsys):
    """Two epochs at 32 px: the new 3-class head alone, then every layer, the pretrained ones at 0.1× lr; they
    end near the file's weights (a fresh rexnet_100 is nowhere near them), but not on them."""
    path = _timm_file(tmp_path)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--pretrained", path, "--model", "rexnet_100", "--data-dir", tree,
                       "--input-size", "32", *RUN, "--epochs", "2", "--set", "backbone_lr_scale=0.1", "--out", run)
    assert code == 0, err
    model = load_model(path, "rexnet_100")[0]
    source = model.state_dict()
    trained = read_checkpoint(run / "last.pt")["model"]
    assert trained[f"{CLASSIFIER}.weight"].shape == (3, 1280)
    # the trained weights (BatchNorm's running statistics follow the new data at any lr)
    backbone = [k for k, _ in model.named_parameters() if not k.startswith(CLASSIFIER + ".")]

    def distance(weights: dict[str, torch.Tensor]) -> float:
        return float(torch.cat([(weights[k] - source[k]).flatten() for k in backbone]).norm() /
                     torch.cat([source[k].flatten() for k in backbone]).norm())

    fresh = create_model("rexnet_100").state_dict()
    assert 0 < distance(trained) < 0.01 < 0.5 < distance(fresh)
    meta = read_metadata(run / "last.pt")
    assert meta["pretrained"] == {"checkpoint": str(path), "sha256": sha256_file(path), "layout": "timm",
                                  "model_name": "rexnet_100", "width": 1.0, "head": "replaced",
                                  "source_num_classes": 1000, "source_classes": None, "num_classes": 3}
    assert meta["classes"] == list(THREE) and meta["dataset_spec"]["input_size"] == 32
    assert read_manifest(run / "best.pt")["pretrained"] == meta["pretrained"]  # the manifest says it too
    model, _ = load_model(run / "best.pt")  # a run of it loads as any checkpoint of this tool
    assert (model.model_name, model.num_classes) == ("rexnet_100", 3)


def test_official_layout_starts_a_run_with_a_new_head(tree, tmp_path, capsys):
    src = randomize_bn(create_model("rexnet_100"), seed=3)
    path = tmp_path / "rexnetv1_1.0.pth"
    torch.save({f"module.{k}": v for k, v in _official_state_dict(src).items()}, path)  # DataParallel names
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--pretrained", path, "--model", "rexnet_100", "--data-dir", tree,
                       "--input-size", "32", *RUN, "--out", run)
    assert code == 0, err
    _backbone_unchanged(src.state_dict(), run)
    record = read_metadata(run / "last.pt")["pretrained"]
    assert (record["layout"], record["head"], record["source_num_classes"]) == ("official", "replaced", 1000)


def test_own_checkpoint_gives_its_architecture_and_input_size(tree, tmp_path, capsys):
    """10 classes onto the tree's 3 (refused before issue 25), at the 32 px the file records, not the
    family's 224; the recipe names the file's model and width, whatever the default recipe says."""
    path = _ours(tmp_path, None)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--pretrained", path, "--data-dir", tree, *RUN, "--out", run)
    assert code == 0, err
    _backbone_unchanged(read_checkpoint(path)["model"], run)
    meta = read_metadata(run / "last.pt")
    assert meta["pretrained"]["layout"] == "rexnet-deploy" and meta["pretrained"]["head"] == "replaced"
    assert meta["dataset_spec"]["input_size"] == 32 and (meta["model_name"], meta["width"]) == ("rexnet", 0.25)
    recipe = load_recipe(run / "recipe.yaml")
    assert (recipe.name, recipe.input_size, recipe.width, recipe.freeze_epochs) == ("finetune", 32, 0.25, 1)


def test_head_is_kept_when_the_classes_are_the_same(tree, tmp_path):
    """The same class names: the file's classifier stays. The same count of other names (or a count that
    differs): a fresh one, drawn from the recipe's seed."""
    same = pretrained_recipe(load_recipe("finetune", {"epochs": 1, "batch_size": 8}), _ours(tmp_path, tuple(THREE)))
    source = read_checkpoint(tmp_path / "ours-3.pt")["model"]
    model, record = start_from(tmp_path / "ours-3.pt", same, tuple(THREE))
    assert record["pretrained"]["head"] == "kept" and record["pretrained"]["source_classes"] == list(THREE)
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())

    model, record = start_from(tmp_path / "ours-3.pt", same, ("a", "b", "c"))
    assert record["pretrained"]["head"] == "replaced"
    assert not torch.equal(model.classifier.weight, source[f"{CLASSIFIER}.weight"])
    again, _ = start_from(tmp_path / "ours-3.pt", same, ("a", "b", "c"))
    assert torch.equal(again.classifier.weight, model.classifier.weight)  # seeded: the same new head each time

    # through the trainer: its checkpoints record the kept head
    data = (load_split(_tree_spec(tree), "train"), load_split(_tree_spec(tree), "val"))
    run = tmp_path / "run"
    fit(TrainRequest(same, run, data=data, progress=False, pretrained=tmp_path / "ours-3.pt"))
    assert read_metadata(run / "best.pt")["pretrained"]["head"] == "kept"


def test_backbone_lr_scale_splits_the_optimizer_and_keeps_its_ratio_through_the_schedule():
    recipe = load_recipe("finetune", {"lr": 0.05, "backbone_lr_scale": 0.1, "warmup_epochs": 1})
    model = create_model("rexnet", width=0.25, num_classes=3)
    phase = build_phase(model, recipe, 0, steps_per_epoch=4)
    head = {id(p) for p in model.classifier.parameters()}
    groups = phase.optimizer.param_groups
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for updates in (2, 4, 20):  # mid warm-up, its end, into the cosine decay
        phase.scheduler.step_update(num_updates=updates)
        head_lr = {g["lr"] for g in groups if all(id(p) in head for p in g["params"])}
        rest_lr = {g["lr"] for g in groups if not any(id(p) in head for p in g["params"])}
        assert len(head_lr) == len(rest_lr) == 1 and head_lr.pop() == pytest.approx(10 * rest_lr.pop())
    assert all(id(p) in head for p in groups[0]["params"])  # the lr each epoch logs is the classifier's
    # scale 1: timm's own grouping, as before (one group where biases and BN decay too), so older runs resume
    plain = build_phase(model, load_recipe("finetune", {"backbone_lr_scale": 1.0}), 0, steps_per_epoch=4)
    assert len(plain.optimizer.param_groups) == 1


def test_finetune_run_resumes_exactly(tmp_path, fmnist_available):
    """Killed after its head-only epoch and resumed, a finetune run (two optimizer rates, momentum only for the
    classifier so far) ends with the weights and metrics of an uninterrupted one."""
    tree = write_tree(tmp_path / "tree", THREE, train=100, val=4)  # epochs of some seconds: time to kill one
    path = _ours(tmp_path, None)
    args = ["train", "--pretrained", str(path), "--data-dir", str(tree), "--epochs", "2", "--batch-size", "8",
            "--set", "backbone_lr_scale=0.1", "--deterministic", "--threads", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rexnet_deploy", *args, "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/2"):  # epoch 1 (the classifier alone) is checkpointed; epoch 2 has begun
                break
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert main(["train", "--resume", str(run), "--data-dir", str(tree), "--threads", "1", "--no-progress"]) == 0
    a, b = read_checkpoint(tmp_path / "straight" / "last.pt"), read_checkpoint(run / "last.pt")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items()), "resumed weights differ"
    assert [g["lr"] for g in a["training"]["optimizer"]["param_groups"]] == \
        [g["lr"] for g in b["training"]["optimizer"]["param_groups"]]
    assert [r["val_top1"] for r in a["training"]["history"]] == [r["val_top1"] for r in b["training"]["history"]]


def test_pruning_a_transfer_fine_tunes_the_whole_network(tree, tmp_path):
    """prune fine-tunes with the checkpoint's recipe, less what protected the new head: the pruned model has no
    new head, and every layer recovers at the recipe's rate from the first step."""
    data = (load_split(_tree_spec(tree), "train"), load_split(_tree_spec(tree), "val"))
    path = _ours(tmp_path, None)
    recipe = pretrained_recipe(load_recipe("finetune", {"epochs": 1, "batch_size": 8}), path)
    fit(TrainRequest(recipe, tmp_path / "run", data=data, progress=False, pretrained=path))
    final = prune_checkpoint(PruneRequest(tmp_path / "run" / "best.pt", tmp_path / "pruned", macs_ratio=0.7,
                                          finetune=FinetuneSpec(epochs=1), progress=False))
    tuned = read_metadata(final)["recipe"]
    assert (tuned["backbone_lr_scale"], tuned["freeze_epochs"], tuned["name"]) == (1.0, 0, "finetune")


def test_pipeline_stage_key_covers_the_pretrained_file(tree, tmp_path):
    """The training stage is reused for the same file content, retrained for another file at the same path."""
    data = (load_split(_tree_spec(tree), "train"), load_split(_tree_spec(tree), "val"))
    path = _ours(tmp_path, None)
    recipe = pretrained_recipe(load_recipe("finetune", {"epochs": 1, "batch_size": 8}), path)
    request = TrainRequest(recipe, tmp_path / "stage", data=data, progress=False, pretrained=path)
    quiet = lambda _: None  # noqa: E731
    assert fit_stage(request, log=quiet)[1] is False
    assert fit_stage(request, log=quiet)[1] is True
    model, meta = load_model(path)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # other weights, same architecture, same file name
    save_model_checkpoint(model, path, **meta)
    best, reused = fit_stage(request, log=quiet)
    assert reused is False and read_metadata(best)["pretrained"]["sha256"] == sha256_file(path)


def test_pipeline_starts_from_the_pretrained_file(tree, tmp_path, capsys):
    """pipeline --pretrained: the training stage's recipe is the file's architecture at its input size; a file of
    another width is one line before anything is written."""
    path = _ours(tmp_path, None)
    recipe = pipeline_recipe(PipelineConfig(recipe="finetune", data_dir=str(tree), pretrained=path))
    assert (recipe.model, recipe.width, recipe.input_size) == ("rexnet", 0.25, 32)
    out = tmp_path / "never"
    line = one_line_error(capsys, "pipeline", "--pretrained", path, "--data-dir", tree, "--width", "0.5", "--out",
                          out)
    assert "holds rexnet width 0.25, not 0.5" in line and not out.exists()


def test_bad_inputs_are_one_line(tree, tmp_path, capsys):
    """A file of another width or family names what it holds; a missing or unreadable file, --pretrained with
    --resume and a freeze longer than the run: one line each, exit 2, nothing written."""
    timm_file = _timm_file(tmp_path)
    out = tmp_path / "never"
    base = ("train", "--data-dir", tree, *RUN, "--out", out)
    line = one_line_error(capsys, *base, "--pretrained", timm_file, "--model", "rexnet_150")
    assert "rexnet_100-timm.pth does not fit rexnet_150" in line and "ReXNetV1 (or tiny-cifar) of width 1 " in line
    line = one_line_error(capsys, *base, "--pretrained", timm_file, "--model", "rexnet_lite_100")
    assert "does not fit rexnet_lite_100" in line and "ReXNetV1 (or tiny-cifar) of width 1 " in line
    # a file that names no model is read as the recipe's (fmnist-cpu: rexnet w0.5), which it does not fit
    line = one_line_error(capsys, *base, "--pretrained", timm_file, "--recipe", "fmnist-cpu")
    assert "does not fit rexnet width 0.5" in line and "of width 1 " in line
    ours = _ours(tmp_path, None)
    assert "holds rexnet width 0.25, not 0.5" in one_line_error(capsys, *base, "--pretrained", ours, "--width", "0.5")
    assert "holds rexnet, not rexnet_lite" in one_line_error(capsys, *base, "--pretrained", ours, "--model",
                                                             "rexnet_lite")
    assert "missing.pth does not exist" in one_line_error(capsys, *base, "--pretrained", tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert "not a readable PyTorch checkpoint" in one_line_error(capsys, *base, "--pretrained", junk)
    line = one_line_error(capsys, *base, "--pretrained", ours, "--resume", tmp_path)
    assert "--pretrained" in line and "--resume" in line
    line = one_line_error(capsys, *base, "--pretrained", ours, "--set", "freeze_epochs=2")
    assert "freeze_epochs" in line and "2 of 1" in line
    assert not out.exists()
