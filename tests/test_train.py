"""The trainer on the real Fashion-MNIST: loss goes down, SIGKILL + resume is exact, torchrun DDP, bad input."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, run_cli

from rexnet_deploy.artifacts import sha256_file
from rexnet_deploy.data import load_dataset
from rexnet_deploy.errors import UserError
from rexnet_deploy.models import create_model, load_model
from rexnet_deploy.models.checkpoint import read_checkpoint
from rexnet_deploy.train import Distillation, TrainRequest, fit, list_recipes, load_recipe
from rexnet_deploy.train.trainer import build_phase, distillation_loss

# small, quick runs: ImageNet-layout ReXNet w=0.5 at 32×32 trains at hundreds of img/s on 2 cores
QUICK = ["--recipe", "fmnist-cpu", "--width", "0.5", "--batch-size", "64", "--eval-images", "256", "--no-progress"]


def _quick_recipe(**overrides):
    values = {"batch_size": 64, "val_subset": 256, "warmup_epochs": 0.0}
    values.update(overrides)
    return load_recipe("fmnist-cpu", values)


# ---------------------------------------------------------------- recipes
def test_every_packaged_recipe_loads():
    names = list_recipes()
    assert {"fmnist-cpu", "rexnet-imagenet", "tiny-cifar-sgd", "tiny-cifar-sgdp", "tiny-cifar-sgdmix-step",
            "tiny-cifar-sgdmix-multistep", "tiny-cifar-sgdmix-cosine", "tiny-cifar-adam",
            "tiny-cifar-adam-cutmix", "tiny-cifar-adam-randaugment-cutmix"} <= set(names)
    for name in names:
        assert load_recipe(name).name == name  # a derived recipe keeps its own name, not its base's
    mix = load_recipe("tiny-cifar-sgdmix-multistep")  # base chain: sgdmix-step → sgd
    assert (mix.optimizer, mix.schedule, mix.milestones, mix.switch_epoch, mix.switch_weight_decay) == \
        ("sgdmix", "multistep", [30.0, 60.0, 90.0], 28, 1e-5)
    assert (mix.lr, mix.weight_decay, mix.batch_size, mix.model, mix.width) == (0.1, 5e-4, 128, "rexnet_tiny_cifar",
                                                                                0.7)
    ra = load_recipe("tiny-cifar-adam-randaugment-cutmix")
    assert (ra.optimizer, ra.randaugment_n, ra.randaugment_m, ra.cutmix_alpha, ra.mix_prob) == ("adam", 1, 2, 1.0, 0.5)
    imagenet = load_recipe("rexnet-imagenet")
    assert (imagenet.lr, imagenet.batch_size, imagenet.epochs, imagenet.warmup_epochs, imagenet.weight_decay,
            imagenet.label_smoothing, imagenet.randaugment_m, imagenet.random_erasing, imagenet.dropout) == \
        (0.5, 512, 400, 5.0, 1e-5, 0.1, 9, 0.2, 0.2)


def test_recipe_overrides_and_unknown_keys(tmp_path):
    r = load_recipe("fmnist-cpu", {"epochs": "3", "lr": "0.05", "ema": "true", "width": None})
    assert (r.epochs, r.lr, r.ema, r.width) == (3, 0.05, True, 0.5)
    with pytest.raises(UserError, match="unknown recipe key 'lr_max'"):
        load_recipe("fmnist-cpu", {"lr_max": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: fmnist-cpu\nwarmup_epoch: 2\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown recipe key 'warmup_epoch' \(did you mean 'warmup_epochs'"):
        load_recipe(bad)
    bad.write_text("epochs: many\n")
    with pytest.raises(UserError, match="epochs must be int"):
        load_recipe(bad)
    with pytest.raises(UserError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(UserError, match="optimizer 'lion'"):
        load_recipe("fmnist-cpu", {"optimizer": "lion"})


def test_sgdmix_switches_to_sgdp_with_its_own_lr_and_decay():
    recipe = load_recipe("tiny-cifar-sgdmix-step")
    model = create_model("rexnet", width=0.5, num_classes=10)
    before = build_phase(model, recipe, 27, steps_per_epoch=10)
    after = build_phase(model, recipe, 28, steps_per_epoch=10)
    assert type(before.optimizer).__name__ == "SGD" and before.optimizer.param_groups[0]["weight_decay"] == 5e-4
    assert type(after.optimizer).__name__ == "SGDP" and after.optimizer.param_groups[0]["weight_decay"] == 1e-5
    assert after.optimizer.param_groups[0]["nesterov"] and after.start_epoch == 28
    # the fresh step schedule decays 30 epochs after the switch
    after.scheduler.step_update(num_updates=299)
    assert after.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    after.scheduler.step_update(num_updates=300)
    assert after.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_distillation_loss_is_zero_only_for_equal_logits():
    a = torch.randn(8, 10)
    assert distillation_loss(a, a, 4.0).abs() < 1e-6
    assert distillation_loss(a, torch.randn(8, 10), 4.0) > 0.01


# ---------------------------------------------------------------- training
def test_few_steps_reduce_the_loss(fmnist_available, tmp_path):
    recipe = _quick_recipe(epochs=2, train_subset=1024, lr=0.05)
    train = load_dataset("fashion_mnist", "train")
    held = train.subset(256, seed=99)
    torch.manual_seed(0)
    model = create_model("rexnet", width=0.5, num_classes=10, dropout=recipe.dropout)

    def held_loss(m):
        m = copy.deepcopy(m).train()  # batch statistics: the running ones lag after a few steps
        with torch.no_grad():
            x, y = next(held.batches(256))
            return torch.nn.functional.cross_entropy(m(x), y).item()

    before = held_loss(model)
    test = load_dataset("fashion_mnist", "test")
    result = fit(TrainRequest(recipe, tmp_path / "run", model=model, data=(train, test), progress=False))
    assert [r["epoch"] for r in result.metrics] == [1, 2]
    assert result.metrics[1]["train_loss"] < result.metrics[0]["train_loss"]
    assert held_loss(model) < before - 0.3
    # the run folder: checkpoints loadable by load_model, manifests, resolved recipe, metrics, curves
    run = tmp_path / "run"
    for name in ("best.pt", "best.pt.json", "last.pt", "last.pt.json", "recipe.yaml", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    best, meta = load_model(result.best_checkpoint)
    assert (best.model_name, best.width, meta["dataset"], meta["preprocess"]["size"]) == ("rexnet", 0.5,
                                                                                         "fashion_mnist", 32)
    assert meta["metrics"]["top1"] == pytest.approx(result.best_top1)
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train_subset"] == 1024
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_teacher_distillation_and_ema_run(fmnist_trained, tmp_path):
    teacher, _ = load_model(fmnist_trained)
    recipe = _quick_recipe(epochs=1, train_subset=256, ema=True, ema_decay=0.9)
    student = create_model("rexnet", width=0.5, num_classes=10)
    result = fit(TrainRequest(recipe, tmp_path / "kd", model=student, distill=Distillation(teacher, 0.7),
                              progress=False))
    row = result.metrics[0]
    assert "ema_top1" in row and result.best_top1 == row["ema_top1"]
    _, meta = load_model(result.best_checkpoint)
    assert meta["distilled_from"]["kd_weight"] == 0.7
    assert read_checkpoint(result.last_checkpoint)["training"]["ema"] is not None


@pytest.mark.parametrize("width", [0.7, 0.5])
def test_tiny_cifar_sgdmix_smoke(fmnist_available, tmp_path, width):
    """tiny-cifar w=0.7 and 0.5 with the SGDMix recipe across the switch (the full run needs a GPU)."""
    recipe = load_recipe("tiny-cifar-sgdmix-multistep", {"dataset": "fashion_mnist", "width": width, "epochs": 2,
                                                         "switch_epoch": 1, "train_subset": 64, "batch_size": 32,
                                                         "val_subset": 64})
    result = fit(TrainRequest(recipe, tmp_path / "mix", progress=False))
    assert [r["optimizer"] for r in result.metrics] == ["sgd", "sgdp"]
    assert result.metrics[1]["lr"] == pytest.approx(0.1)


def _state(path: Path) -> dict:
    return read_checkpoint(path)["model"]


def test_pipeline_and_train_command_start_from_the_same_weights(fmnist_available, tmp_path):
    """One training path: the pipeline's training step and ``rexnet-deploy train`` with the same recipe and seed
    end two steps in bit-identical weights, whatever the RNG held before (each seeds before building)."""
    from rexnet_deploy.cli import main
    from rexnet_deploy.pipeline.run import PipelineConfig, train_stage

    tiny = {"epochs": 1, "train_subset": 128, "batch_size": 64, "val_subset": 64}
    assert main(["train", "--recipe", "fmnist-cpu", *(f for k, v in tiny.items() for f in ("--set", f"{k}={v}")),
                 "--no-progress", "--out", str(tmp_path / "train")]) == 0
    torch.manual_seed(12345)  # what ran before must not matter
    cfg = PipelineConfig(out=tmp_path / "pipeline", train_overrides=tiny)
    best = train_stage(cfg, load_recipe(cfg.recipe, cfg.train_overrides), log=lambda line: None)
    a, b = _state(tmp_path / "train" / "last.pt"), _state(best.with_name("last.pt"))
    assert read_checkpoint(best.with_name("last.pt"))["training"]["history"][0]["steps"] == 2
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the pipeline trained other weights"


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(fmnist_available, tmp_path):
    args = [*QUICK, "--epochs", "2", "--train-subset", "2048", "--threads", "1", "--deterministic"]
    straight = run_cli("train", *args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "rexnet_deploy", "train", *args, "--out", str(run)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/2"):  # epoch 1 is checkpointed; epoch 2 has begun
                break
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert read_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob(".*.tmp-*"))  # atomic writes leave no half files behind

    resumed = run_cli("train", "--resume", str(run), "--threads", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout
    a, b = _state(tmp_path / "straight" / "last.pt"), _state(run / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    straight_rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(resumed_rows) == 2
    assert [r["val_top1"] for r in straight_rows] == [r["val_top1"] for r in resumed_rows]


WORKER = textwrap.dedent("""
    import sys, torch
    import torch.distributed as dist
    from rexnet_deploy.models import create_model
    from rexnet_deploy.train import TrainRequest, fit, load_recipe
    torch.set_num_threads(1)
    out = sys.argv[1]
    recipe = load_recipe("fmnist-cpu", {"epochs": 1, "train_subset": 256, "batch_size": 64, "val_subset": 128})
    model = create_model("rexnet", width=0.5, num_classes=10)
    if int(__import__("os").environ["RANK"]) == 1:
        torch.nn.init.normal_(model.head.fc.weight)  # DDP must broadcast rank 0's weights
    fit(TrainRequest(recipe, out, model=model, progress=False, device="cpu"))
    torch.save({k: v for k, v in model.state_dict().items()}, f"{out}/rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
""")


def test_torchrun_two_process_gloo_keeps_ranks_identical(fmnist_available, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", str(script), str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # weights by DDP, BN statistics averaged at epoch end
    init = create_model("rexnet", width=0.5, num_classes=10).state_dict()
    assert not torch.equal(r0["head.fc.weight"], init["head.fc.weight"])  # it trained
    # rank 0 alone wrote the run: one metrics line with images from both shards (2 × 2 steps of 32)
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and (out / "last.pt").is_file()
    assert read_checkpoint(out / "last.pt")["training"]["world_size"] == 2


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing overwritten
def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rexnet-deploy train: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_init_trains_on_from_a_checkpoints_weights(fmnist_trained, tmp_path):
    """--init, the old name of --pretrained: the checkpoint's architecture and weights and its own head (the same
    ten classes), a fresh schedule; at lr 1e-9 no weight moves far. A --width the file does not hold: one line."""
    run = tmp_path / "init"
    args = ["--recipe", "fmnist-cpu", "--epochs", "1", "--train-subset", "256", "--eval-images", "256", "--lr", "1e-9",
            "--set", "warmup_epochs=0", "--threads", "1", "--no-progress", "--out", str(run)]
    _one_line_error(run_cli("train", "--pretrained", str(fmnist_trained), *args, "--width", "0.7"),
                    "holds rexnet width 0.5, not 0.7")
    proc = run_cli("train", "--init", str(fmnist_trained), *args)
    assert proc.returncode == 0, proc.stderr
    assert "--init is deprecated, use --pretrained" in proc.stderr
    source, _ = load_model(fmnist_trained)
    trained, meta = load_model(run / "last.pt")
    assert trained.width == 0.5 and load_recipe(run / "recipe.yaml").width == 0.5
    moved = [k for k, v in source.state_dict().items()
             if "running" not in k and "num_batches" not in k
             and not torch.allclose(v, trained.state_dict()[k], rtol=0, atol=1e-6)]
    assert not moved
    record = meta["pretrained"]
    assert (record["checkpoint"], record["sha256"], record["head"]) == \
        (str(fmnist_trained), sha256_file(fmnist_trained), "kept")
    _one_line_error(run_cli("train", "--pretrained", str(fmnist_trained), "--resume", str(run), "--epochs", "2"),
                    "--pretrained", "--resume")


def test_bad_dataset_folders_exit_2(tmp_path):
    _one_line_error(run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--out",
                            str(tmp_path / "r")), "CIFAR-10 not found", "--download")
    bad = tmp_path / "bad" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    (bad / "batches.meta").write_bytes(b"\x80\x02garbage")
    _one_line_error(run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "bad"), "--out",
                            str(tmp_path / "r")), "batches.meta")
    (tmp_path / "tree" / "train").mkdir(parents=True)
    _one_line_error(run_cli("train", "--recipe", "rexnet-imagenet", "--data-dir", str(tmp_path / "tree"),
                            "--out", str(tmp_path / "r")), "has no val/ folder")
    (tmp_path / "tree" / "val").mkdir()
    _one_line_error(run_cli("train", "--recipe", "rexnet-imagenet", "--data-dir", str(tmp_path / "tree"),
                            "--out", str(tmp_path / "r")), "no class folders")
    _one_line_error(run_cli("train", "--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "none"),
                            "--out", str(tmp_path / "r")), "dataset-fashion-mnist")
    assert not (tmp_path / "r").exists()


def test_unknown_recipe_key_exits_2(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("base: fmnist-cpu\nlearning_rate: 0.1\n")
    _one_line_error(run_cli("train", "--recipe", str(recipe), "--out", str(tmp_path / "r")), "learning_rate")
    _one_line_error(run_cli("train", "--set", "momentun=0.8", "--out", str(tmp_path / "r")), "momentun",
                    "momentum")
    assert not (tmp_path / "r").exists()


def test_unwritable_out_folder_exits_2(fmnist_available, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_line_error(run_cli("train", *QUICK, "--epochs", "1", "--train-subset", "64", "--out", str(blocker / "run")),
                    "not writable")
    assert blocker.read_text() == "not a folder"


def test_resume_with_another_width_or_existing_run_exits_2(fmnist_available, tmp_path):
    run = tmp_path / "run"
    first = run_cli("train", *QUICK, "--epochs", "1", "--train-subset", "128", "--out", str(run))
    assert first.returncode == 0, first.stderr
    before = {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()}
    _one_line_error(run_cli("train", "--resume", str(run), "--width", "0.75", "--epochs", "2"),
                    "width 0.5", "--width 0.5")
    _one_line_error(run_cli("train", *QUICK, "--epochs", "1", "--train-subset", "128", "--out", str(run)),
                    "already holds a run", "--resume")
    _one_line_error(run_cli("train", "--resume", str(run)), "already trained", "--epochs")
    _one_line_error(run_cli("train", "--resume", str(run / "best.pt"), "--epochs", "2"), "no training state")
    assert {p.name: sha256_file(p) for p in run.iterdir() if p.is_file()} == before


def test_augmenting_recipes_run_in_memory(fmnist_available, tmp_path):
    """RandAugment(1,2) + CutMix + random erasing + Adam on the in-memory fast path."""
    recipe = load_recipe("tiny-cifar-adam-randaugment-cutmix",
                         {"model": "rexnet", "width": 0.5, "dataset": "fashion_mnist", "epochs": 1,
                          "train_subset": 64, "batch_size": 32, "val_subset": 64, "random_erasing": 0.25,
                          "label_smoothing": 0.1})
    result = fit(TrainRequest(recipe, tmp_path / "aug", progress=False))
    assert torch.isfinite(torch.tensor(result.metrics[0]["train_loss"]))


def test_imagenet_recipe_runs_on_an_image_folder(tmp_path):
    from test_data import _image_tree

    from rexnet_deploy.data.imagefolder import load_image_folder_splits
    from rexnet_deploy.models.registry import IMAGENET_MEAN, IMAGENET_STD
    from rexnet_deploy.preprocess import Preprocess

    _image_tree(tmp_path / "tree", per_class=4)
    recipe = load_recipe("rexnet-imagenet", {"input_size": 32, "epochs": 1, "batch_size": 4, "workers": 0,
                                             "width": 0.5, "warmup_epochs": 0})
    train, val = load_image_folder_splits(tmp_path / "tree", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD))
    model = create_model("rexnet", width=0.5, num_classes=2)
    result = fit(TrainRequest(recipe, tmp_path / "run", model=model, data=(train, val), progress=False))
    _, meta = load_model(result.best_checkpoint)
    assert meta["dataset"] == "imagefolder" and meta["preprocess"]["crop_pct"] == 0.875
    assert meta["classes"] == ["cat", "dog"]
    # a broken image inside a DataLoader worker still comes out as one line. Loading already refuses one it
    # reads (a small tree is decoded, a streamed one's headers sampled), so the file breaks after loading
    train, val = load_image_folder_splits(tmp_path / "tree", Preprocess(32, IMAGENET_MEAN, IMAGENET_STD),
                                          in_memory=False)
    (tmp_path / "tree" / "train" / "dog" / "1.png").write_bytes(b"not a png")
    recipe = load_recipe("rexnet-imagenet", {"input_size": 32, "epochs": 1, "batch_size": 8, "workers": 1,
                                             "width": 0.5})
    with pytest.raises(UserError, match=r"^image .*1\.png cannot be decoded") as err:
        fit(TrainRequest(recipe, tmp_path / "run2", model=create_model("rexnet", width=0.5, num_classes=2),
                         data=(train, val), progress=False))
    assert "\n" not in str(err.value)
