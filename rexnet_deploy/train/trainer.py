"""The trainer: one process or many under ``torchrun`` (DDP: nccl on GPU, gloo on CPU).

Every epoch ends with an atomically written ``last.pt`` (model, optimizer, scheduler, AMP scaler, EMA,
every rank's RNG states, epoch, recipe, metric history) and, when validation top-1 improved,
``best.pt``. Both are :func:`~rexnet_deploy.models.save_model_checkpoint` files, so
``load_model(best.pt)`` rebuilds the model; the training state lives under the ``training`` key.
Resuming restores all of it, so a run killed mid-epoch and resumed ends with the weights an
uninterrupted run would have (on a deterministic device).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from ..artifacts import atomic_path, ensure_writable_dir, write_manifest
from ..data import ImageDataset, data_record
from ..data.imagefolder import FolderDataset, worker_errors
from ..errors import UserError, require_file
from ..models import save_model_checkpoint
from ..models.checkpoint import load_state_dict_checked, read_checkpoint
from ..models.rexnet import CLASSIFIER
from .augment import BatchAugment
from .recipe import Recipe, write_recipe

LAST, BEST = "last.pt", "best.pt"


Split = ImageDataset | FolderDataset


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: list[dict[str, Any]]
    best_top1: float
    run_dir: Path
    model: nn.Module  # the trained model (its last epoch's weights), in eval mode


def check_distillation(weight: float, temperature: float) -> None:
    """The distillation settings' one check (``train --teacher`` and ``prune --kd-weight`` share the flags)."""
    if not 0.0 <= weight <= 1.0 or temperature <= 0:
        raise UserError(f"--kd-weight must lie in 0..1 and --kd-temperature be positive "
                        f"(got {weight:g}, {temperature:g})")


@dataclass(frozen=True)
class Distillation:
    """Learn from ``teacher`` too: the loss is ``(1 - weight) · CE + weight · T² · KL(teacher ‖ student)``
    on temperature-T logits (Hinton et al.); ``weight`` 0 trains on the labels alone."""

    teacher: nn.Module
    weight: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check_distillation(self.weight, self.temperature)


@dataclass
class TrainRequest:
    """One training run, for :func:`~rexnet_deploy.train.fit`.

    ``model`` None: a fresh ``recipe.model`` at ``recipe.width``, its weights seeded with ``recipe.seed``, or
    with ``pretrained`` (a checkpoint of any supported layout) that file's weights and, where the classes
    differ, a fresh classifier (:func:`~rexnet_deploy.train.pretrained.start_from`; the recipe must name
    the file's architecture: :func:`~rexnet_deploy.train.pretrained.pretrained_recipe`); a given model (a
    pruned one) trains as it is. ``data`` None: ``recipe.dataset`` loaded from ``data_dir`` (CIFAR fetched
    first with ``download``). ``resume``: True continues ``out_dir/last.pt``; a path continues that
    checkpoint. ``provenance`` (e.g. the checkpoint a pruned model came from) is stored in every
    checkpoint's metadata.
    """

    recipe: Recipe
    out_dir: str | Path
    model: nn.Module | None = None
    data: tuple[Split, Split] | None = None
    data_dir: str | None = None
    download: bool = False
    resume: bool | str | Path = False
    distill: Distillation | None = None
    progress: bool = True
    device: str | None = None
    provenance: dict[str, Any] | None = None
    pretrained: str | Path | None = None


@dataclass
class DistEnv:
    """Where this process sits: rank, world size, device; ``world == 1`` without torchrun."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def distributed_env(device: str | None = None) -> DistEnv:
    """Join the torchrun process group if there is one (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but no CUDA GPU is visible: use --device cpu")
    if cuda and world > 1:
        dev = torch.device(f"cuda:{local_rank}")
    elif cuda:  # one process: the GPU the user named (cuda:1 stays cuda:1), made current for every kernel
        dev = torch.device(device or "cuda")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} asked for but only {torch.cuda.device_count()} GPU(s) are visible: "
                            f"choose cuda:0…cuda:{torch.cuda.device_count() - 1}")
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistEnv(rank, world, dev)


# ---------------------------------------------------------------- RNG state (kept weights_only-loadable)
def _rng_state(device: torch.device) -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    """torch (CPU and CUDA), numpy and Python RNGs: timm's Mixup and erasing draw from the latter two."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _gather(obj: Any, env: DistEnv) -> list[Any]:
    if env.world == 1:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------- optimisation pieces (timm)
def classifier_groups(model: nn.Module, recipe: Recipe, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """timm's weight-decay parameter groups, each split in two: the classifier's parameters at ``lr`` (first, so
    the logged lr is the recipe's), every other one at ``lr × recipe.backbone_lr_scale``. Each group's own lr is
    the base its schedule scales, so warm-up and decay keep the ratio."""
    from timm.optim import param_groups_weight_decay

    head = {id(p) for p in model.get_submodule(CLASSIFIER).parameters()}
    groups = param_groups_weight_decay(model, weight_decay, weight_decay_exclude_1d=not recipe.decay_bias_and_bn)
    split = []
    for in_head, group_lr in ((True, lr), (False, lr * recipe.backbone_lr_scale)):
        for group in groups:
            params = [p for p in group["params"] if (id(p) in head) == in_head]
            if params:
                split.append({**group, "params": params, "lr": group_lr})
    return split


def build_optimizer(model: nn.Module, recipe: Recipe, name: str, lr: float, weight_decay: float):
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if name in ("sgd", "sgdp"):
        kwargs["nesterov"] = recipe.nesterov
    if recipe.backbone_lr_scale != 1.0:  # split only then: a run saved with timm's own groups resumes unchanged
        kwargs["param_group_fn"] = lambda m: classifier_groups(m, recipe, lr, weight_decay)
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay, momentum=recipe.momentum,
                               filter_bias_and_bn=not recipe.decay_bias_and_bn, **kwargs)


@contextlib.contextmanager
def head_only(model: nn.Module) -> Iterator[None]:
    """Train the classifier alone: no other weight gets a gradient (so the backward pass stops at the head) and
    every BatchNorm keeps its running statistics; all of it trainable again afterwards."""
    rest = [p for name, p in model.named_parameters() if not name.startswith(CLASSIFIER + ".")]
    for p in rest:
        p.requires_grad_(False)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        yield
    finally:
        for p in rest:
            p.requires_grad_(True)
        model.train()


def build_scheduler(optimizer, recipe: Recipe, steps_per_epoch: int, epochs: float, warmup: bool):
    """A timm scheduler stepped per update; every length in the recipe is in epochs."""
    from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, StepLRScheduler

    total = max(1, round(epochs * steps_per_epoch))
    warm = round(recipe.warmup_epochs * steps_per_epoch) if warmup else 0
    common = {"warmup_t": warm, "warmup_lr_init": recipe.warmup_lr, "t_in_epochs": False}
    if recipe.schedule == "cosine":
        return CosineLRScheduler(optimizer, t_initial=max(1, total - warm), lr_min=recipe.min_lr,
                                 warmup_prefix=True, **common)
    if recipe.schedule == "step":
        return StepLRScheduler(optimizer, decay_t=max(1, round(recipe.step_size * steps_per_epoch)),
                               decay_rate=recipe.gamma, **common)
    if recipe.schedule == "multistep":
        return MultiStepLRScheduler(optimizer, decay_t=[round(m * steps_per_epoch) for m in recipe.milestones],
                                    decay_rate=recipe.gamma, **common)
    return StepLRScheduler(optimizer, decay_t=total + 1, decay_rate=1.0, **common)  # constant


@dataclass
class Phase:
    """An optimizer and its schedule; ``sgdmix`` has two, the second starting at ``start_epoch``."""

    name: str
    start_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: Any
    updates: int = 0


def build_phase(model: nn.Module, recipe: Recipe, epoch: int, steps_per_epoch: int) -> Phase:
    if recipe.optimizer != "sgdmix":
        opt = build_optimizer(model, recipe, recipe.optimizer, recipe.lr, recipe.weight_decay)
        return Phase(recipe.optimizer, 0, opt, build_scheduler(opt, recipe, steps_per_epoch, recipe.epochs, True))
    if epoch < recipe.switch_epoch:
        # the first phase follows the schedule as if it ran the whole time; the switch cuts it
        opt = build_optimizer(model, recipe, "sgd", recipe.lr, recipe.weight_decay)
        return Phase("sgd", 0, opt, build_scheduler(opt, recipe, steps_per_epoch, recipe.epochs, True))
    opt = build_optimizer(model, recipe, "sgdp", recipe.switch_lr, recipe.switch_weight_decay)
    sched = build_scheduler(opt, recipe, steps_per_epoch, recipe.epochs - recipe.switch_epoch, False)
    return Phase("sgdp", recipe.switch_epoch, opt, sched)


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    if target.dim() == 2:  # CutMix/MixUp class distributions (label smoothing already in them)
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) on temperature-softened logits, scaled by T² (Hinton et al.)."""
    return F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature ** 2


# ---------------------------------------------------------------- data
class TrainData:
    """Batches for one rank: the in-memory fast path, or a DataLoader over an ImageFolder split."""

    def __init__(self, dataset: ImageDataset | FolderDataset, recipe: Recipe, env: DistEnv) -> None:
        if recipe.batch_size % env.world:
            raise UserError(f"batch_size {recipe.batch_size} does not split over {env.world} processes: "
                            f"pick a multiple of {env.world}")
        self.batch_size = recipe.batch_size // env.world
        self.env = env
        self.sampler = DistributedSampler(range(len(dataset)), num_replicas=env.world, rank=env.rank,
                                          shuffle=True, seed=recipe.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(f"{dataset.name} {dataset.split} has {len(dataset)} images, fewer than one batch of "
                            f"{recipe.batch_size}: lower --batch-size")
        in_memory = isinstance(dataset, ImageDataset)
        self.augment = BatchAugment(recipe, dataset.preprocess, dataset.num_classes, env.device,
                                    pixel_ops=in_memory)
        if in_memory:
            self.images = dataset.images.to(env.device)
            self.labels = dataset.labels.to(env.device)
            self.loader = None
        else:
            auto_augment = None
            if recipe.randaugment_n > 0:
                auto_augment = f"rand-m{recipe.randaugment_m}-n{recipe.randaugment_n}-mstd{recipe.randaugment_mstd}"
            transform = dataset.transform(True, auto_augment=auto_augment, random_erasing=recipe.random_erasing,
                                          hflip=0.5 if recipe.hflip else 0.0)
            self.loader = DataLoader(dataset.torch_dataset(transform), batch_size=self.batch_size,
                                     sampler=self.sampler, num_workers=recipe.workers, drop_last=True,
                                     pin_memory=env.device.type == "cuda", persistent_workers=recipe.workers > 0)

    def epoch(self, epoch: int):
        """(input, target) pairs on the device for one epoch of this rank's shard."""
        self.sampler.set_epoch(epoch)
        if self.loader is None:
            order = torch.tensor(list(self.sampler), device=self.env.device)
            for step in range(self.steps_per_epoch):
                idx = order[step * self.batch_size:(step + 1) * self.batch_size]
                yield self.augment(self.images[idx], self.labels[idx])
        else:
            for images, labels in worker_errors(self.loader):
                images = images.to(self.env.device, non_blocking=True)
                labels = labels.to(self.env.device, non_blocking=True)
                yield self.augment(images, labels)


class EvalData:
    """This rank's share of the validation split (every world-th image), normalised, on the device."""

    def __init__(self, dataset: ImageDataset | FolderDataset, batch_size: int, env: DistEnv, workers: int) -> None:
        self.env = env
        self.batch_size = batch_size
        if isinstance(dataset, ImageDataset):
            shard = torch.arange(env.rank, len(dataset), env.world)
            self.images = dataset.images[shard].to(env.device)
            self.labels = dataset.labels[shard].to(env.device)
            self.preprocess = dataset.preprocess
            self.loader = None
        else:
            items = torch.utils.data.Subset(dataset.torch_dataset(dataset.transform(False)),
                                            range(env.rank, len(dataset), env.world))
            self.loader = DataLoader(items, batch_size=batch_size, num_workers=workers,
                                     pin_memory=env.device.type == "cuda")

    def __iter__(self):
        if self.loader is None:
            for start in range(0, len(self.labels), self.batch_size):
                yield (self.preprocess(self.images[start:start + self.batch_size]),
                       self.labels[start:start + self.batch_size])
        else:
            for images, labels in worker_errors(self.loader):
                yield images.to(self.env.device, non_blocking=True), labels.to(self.env.device, non_blocking=True)


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The arithmetic the recipe's ``amp`` switch trains in: float16 on CUDA, bfloat16 on a CPU with native
    BF16 (AVX-512 BF16, AMX, ARM BF16: about 2× the FP32 throughput there), None (FP32) elsewhere, since
    emulated BF16 is slower than FP32."""
    from ..hardware import has_native_bf16

    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if device.type == "cpu" and has_native_bf16() else None


@torch.no_grad()
def evaluate_model(model: nn.Module, data: EvalData, env: DistEnv, amp: torch.dtype | None) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole split, summed over the ranks; ``amp``: the autocast type."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss, top-1, top-5, images
    for x, y in data:
        with torch.autocast(env.device.type, dtype=amp, enabled=amp is not None):
            logits = model(_channels_last(x)).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == y[:, None]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                             hit.any(dim=1).sum().double(), torch.tensor(float(len(y)), device=env.device,
                                                                         dtype=torch.float64)])
    if env.world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    loss, top1, top5, n = sums.tolist()
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- output
def write_metrics(history: list[dict], run_dir: Path) -> None:
    with atomic_path(run_dir / "metrics.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in history))


def plot_curves(history: list[dict], path: Path) -> Path:
    """Loss and top-1 per epoch, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [r["val_top1"] for r in history], "o-", label="val top-1")
    if "ema_top1" in history[0]:
        ax_acc.plot(epochs, [r["ema_top1"] for r in history], "o-", label="EMA val top-1")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def _console_line(row: dict, epochs: int) -> str:
    ema = f"  EMA top-1 {row['ema_top1']:.2f}" if "ema_top1" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  lr {row['lr']:.4g}  train loss {row['train_loss']:.4f}  "
            f"val loss {row['val_loss']:.4f}  top-1 {row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}{ema}  "
            f"{row['train_img_s']:.0f} img/s  {row['epoch_time_s']:.1f} s")


# ---------------------------------------------------------------- resume
def _check_resume(path: Path, model: nn.Module) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt.get("training"), dict):
        raise UserError(f"{path} has no training state (a best.pt or exported weights?): resume from a run's "
                        f"{LAST}")
    name, width = ckpt.get("model_name"), ckpt.get("width")
    if name != model.model_name or not isinstance(width, (int, float)) or abs(width - model.width) > 1e-9:
        raise UserError(f"{path} was trained as {name} width {width}, but this run builds {model.model_name} "
                        f"width {model.width:g}: pass --model {name} --width {width}, or use a new --out")
    load_state_dict_checked(model, ckpt["model"], str(path))
    return ckpt


def _resume_path(resume: bool | str | Path, run_dir: Path) -> Path | None:
    if resume is False or resume is None:
        if (run_dir / LAST).exists():
            raise UserError(f"{run_dir} already holds a run ({LAST}): pass --resume to continue it, or choose "
                            f"another --out")
        return None
    path = run_dir / LAST if resume is True else Path(resume)
    if path.is_dir():
        path = path / LAST
    return require_file(path, "nothing to resume: checkpoint", "run without --resume to start")


# ---------------------------------------------------------------- the loop
def _set_determinism(recipe: Recipe, env: DistEnv) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True


class Trainer:
    """One :class:`TrainRequest` on a built model and loaded splits: ``Trainer(...).run()`` trains it.

    The constructor checks the request and restores a resumed run's every state; :meth:`run` is the
    epoch loop: switch phase, train an epoch, evaluate, save. Under ``torchrun`` every process runs it
    and rank 0 writes the files.
    """

    def __init__(self, request: TrainRequest, model: nn.Module, train_set: Split, val_set: Split) -> None:
        recipe = request.recipe
        if train_set.num_classes != model.num_classes or val_set.num_classes != model.num_classes:
            raise UserError(f"{train_set.name} has {train_set.num_classes} classes but the model has "
                            f"{model.num_classes}: build it with num_classes={train_set.num_classes}")
        if recipe.train_subset:
            train_set = train_set.subset(recipe.train_subset, seed=recipe.seed)
        if recipe.val_subset:  # the first N, as every --eval-images takes them
            val_set = val_set.select(range(min(recipe.val_subset, len(val_set))))
        self.recipe, self.model, self.progress = recipe, model, request.progress
        self.kd = request.distill if request.distill is not None and request.distill.weight > 0 else None
        self.env = env = distributed_env(request.device)
        if recipe.freeze_epochs and env.world > 1:
            # DDP registers the trainable parameters once, when it wraps the model; it cannot follow a freeze
            raise UserError(f"freeze_epochs {recipe.freeze_epochs} trains the classifier alone in one process, not "
                            f"under torchrun: set freeze_epochs 0 (--set freeze_epochs=0) or run one process")
        self.run_dir = Path(request.out_dir)
        resume_from = _resume_path(request.resume, self.run_dir)
        if env.main:
            ensure_writable_dir(self.run_dir)
        ckpt = _check_resume(resume_from, model) if resume_from is not None else None
        _set_determinism(recipe, env)
        if ckpt is None:
            seed_everything(recipe.seed + env.rank)

        # channels-last: about 2× the training throughput of NCHW on a CPU, and the fast layout for AMP
        model.to(env.device, memory_format=torch.channels_last)
        if request.distill is not None:
            request.distill.teacher.to(env.device).eval()
        self.amp = autocast_dtype(recipe.amp, env.device)
        self.train_data = TrainData(train_set, recipe, env)
        self.val_data = EvalData(val_set, max(256, self.train_data.batch_size), env, recipe.workers)
        self.steps = self.train_data.steps_per_epoch
        self.ema = None
        if recipe.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=recipe.ema_decay)
        # loss scaling is float16's: bfloat16 has float32's exponent range
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.start_epoch, self.history, self.best_top1 = 0, [], -1.0
        self.phase = self._restore(ckpt, resume_from)
        self.net = self._wrap()
        self.meta = self._metadata(train_set, request.provenance)

    # ------------------------------------------------------------ setup steps
    def _restore(self, ckpt: dict[str, Any] | None, path: Path | None) -> Phase:
        """The optimizer phase to start in; from a checkpoint, with every state it saved (bit-exact resume)."""
        recipe, env = self.recipe, self.env
        if ckpt is None:
            return build_phase(self.model, recipe, 0, self.steps)
        state = ckpt["training"]
        self.start_epoch, self.history = int(ckpt["epoch"]), list(state["history"])
        self.best_top1 = float(state["best_top1"])
        if self.start_epoch >= recipe.epochs:
            raise UserError(f"{path} is already trained for {self.start_epoch} of {recipe.epochs} epochs: "
                            f"raise --epochs to train further")
        phase = build_phase(self.model, recipe, self.start_epoch, self.steps)
        if state["phase"] == phase.name:
            phase.optimizer.load_state_dict(state["optimizer"])
            phase.scheduler.load_state_dict(state["scheduler"])
            phase.updates = int(state["updates"])
        if state.get("scaler"):  # a CPU or AMP-off run saved {}: an enabled scaler would refuse it; it starts fresh
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        if len(state["rng"]) == env.world:
            _set_rng_state(state["rng"][env.rank], env.device)
        else:  # another process count: the run goes on, but no longer bit for bit
            seed_everything(recipe.seed + 1000 * self.start_epoch + env.rank)
        if env.main:
            print(f"resumed {path} at epoch {self.start_epoch}/{recipe.epochs}")
        return phase

    def _wrap(self) -> nn.Module:
        """The module the steps run: DDP (with SyncBatchNorm on GPUs) under torchrun, else the model."""
        net: nn.Module = self.model
        if self.env.world > 1:
            cuda = self.env.device.type == "cuda"
            if cuda:
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            net = nn.parallel.DistributedDataParallel(net, device_ids=[self.env.device.index] if cuda else None)
        return net

    def _metadata(self, train_set: Split, provenance: dict[str, Any] | None) -> dict[str, Any]:
        """What every checkpoint of the run records besides weights and metrics."""
        meta = {**data_record(train_set), "recipe": self.recipe.to_dict(), **(provenance or {}),
                "autocast": str(self.amp).removeprefix("torch.") if self.amp is not None else None}
        if self.kd is not None:
            teacher = self.kd.teacher
            meta["distilled_from"] = {"model_name": getattr(teacher, "model_name", None),
                                      "width": getattr(teacher, "width", None),
                                      "kd_weight": self.kd.weight, "kd_temperature": self.kd.temperature}
        return meta

    # ------------------------------------------------------------ the epoch loop
    def run(self) -> TrainResult:
        """Train from the start (or resumed) epoch to ``recipe.epochs``; the model ends in eval mode."""
        if self.env.main:
            write_recipe(self.recipe, self.run_dir / "recipe.yaml")
        for epoch in range(self.start_epoch, self.recipe.epochs):
            self._switch_phase(epoch)
            started = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            train_time = time.perf_counter() - started
            row, tracked, eval_model = self._evaluate(epoch, train_loss)
            epoch_time = time.perf_counter() - started
            row.update(epoch_time_s=epoch_time,
                       train_img_s=self.steps * self.train_data.batch_size * self.env.world / train_time,
                       elapsed_s=(self.history[-1]["elapsed_s"] if self.history else 0.0) + epoch_time)
            self.history.append(row)
            improved = tracked["top1"] > self.best_top1
            self.best_top1 = max(self.best_top1, tracked["top1"])
            self._save(epoch, row, tracked, eval_model, improved)
            self.env.barrier()
        self.model.eval()
        return TrainResult(self.run_dir / BEST, self.run_dir / LAST, self.history, self.best_top1, self.run_dir,
                           self.model)

    def _switch_phase(self, epoch: int) -> None:
        recipe = self.recipe
        if recipe.optimizer == "sgdmix" and epoch == recipe.switch_epoch and self.phase.name != "sgdp":
            self.phase = build_phase(self.model, recipe, epoch, self.steps)
            if self.env.main:
                print(f"epoch {epoch + 1}: switching to SGDP (lr {recipe.switch_lr:g}, "
                      f"weight decay {recipe.switch_weight_decay:g}) with a fresh {recipe.schedule} schedule")

    def _loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.env.device.type, dtype=self.amp, enabled=self.amp is not None):
            logits = self.net(x)
            loss = classification_loss(logits.float(), target, self.recipe.label_smoothing)
            if self.kd is not None:
                with torch.no_grad():
                    teacher_logits = self.kd.teacher(x).float()
                loss = (1 - self.kd.weight) * loss + self.kd.weight * distillation_loss(
                    logits.float(), teacher_logits, self.kd.temperature)
        return loss

    def _train_epoch(self, epoch: int) -> float:
        """One pass over this rank's shard; the mean training loss over every rank's steps."""
        env, phase, recipe = self.env, self.phase, self.recipe
        self.net.train()
        loss_sum = torch.zeros((), device=env.device)
        bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="step", leave=False,
                   disable=not (self.progress and env.main))
        with head_only(self.model) if epoch < recipe.freeze_epochs else contextlib.nullcontext():
            for step, (x, target) in enumerate(self.train_data.epoch(epoch)):
                loss = self._loss(_channels_last(x), target)
                if not torch.isfinite(loss):
                    raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1} step {step + 1}: lower "
                                    f"--lr (now {phase.optimizer.param_groups[0]['lr']:.4g})")
                phase.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(phase.optimizer)
                self.scaler.update()
                phase.updates += 1
                phase.scheduler.step_update(num_updates=phase.updates)
                if self.ema is not None:
                    self.ema.update(self.model, step=epoch * self.steps + step)
                loss_sum += loss.detach()
                bar.update()
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{phase.optimizer.param_groups[0]['lr']:.3g}")
        bar.close()
        if env.world > 1:
            dist.all_reduce(loss_sum)
            if env.device.type != "cuda":  # no SyncBatchNorm here: average the ranks' running statistics
                from timm.utils import distribute_bn

                distribute_bn(self.model, env.world, reduce=True)
        return loss_sum.item() / (self.steps * env.world)

    def _evaluate(self, epoch: int, train_loss: float) -> tuple[dict[str, Any], dict[str, float], nn.Module]:
        """The epoch's metrics row, the metrics that pick best.pt (the EMA's when there is one) and their model."""
        val = evaluate_model(self.model, self.val_data, self.env, self.amp)
        row = {"epoch": epoch + 1, "steps": self.steps, "lr": self.phase.optimizer.param_groups[0]["lr"],
               "optimizer": self.phase.name, "train_loss": train_loss, "val_loss": val["loss"],
               "val_top1": val["top1"], "val_top5": val["top5"]}
        if self.ema is None:
            return row, val, self.model
        ema_val = evaluate_model(self.ema.module, self.val_data, self.env, self.amp)
        row.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"])
        return row, ema_val, self.ema.module

    def _save(self, epoch: int, row: dict[str, Any], tracked: dict[str, float], eval_model: nn.Module,
              improved: bool) -> None:
        """last.pt (with the training state), best.pt when top-1 improved, metrics, curves, the console line."""
        rng = _gather(_rng_state(self.env.device), self.env)  # every rank takes part in the gather
        if not self.env.main:
            return
        model, phase, run_dir = self.model, self.phase, self.run_dir
        metrics = {"top1": tracked["top1"], "top5": tracked["top5"], "epoch": epoch + 1}
        training = {"optimizer": phase.optimizer.state_dict(), "scheduler": phase.scheduler.state_dict(),
                    "phase": phase.name, "updates": phase.updates, "scaler": self.scaler.state_dict(),
                    "ema": self.ema.module.state_dict() if self.ema is not None else None, "rng": rng,
                    "history": self.history, "best_top1": self.best_top1, "world_size": self.env.world}
        if improved:
            save_model_checkpoint(eval_model, run_dir / BEST, **self.meta, metrics=metrics, epoch=epoch + 1)
            write_manifest(run_dir / BEST, {"kind": "checkpoint", "model_name": model.model_name,
                                            "width": model.width, **self.meta, "metrics": metrics})
        save_model_checkpoint(model, run_dir / LAST, **self.meta, metrics=metrics, epoch=epoch + 1,
                              training=training)
        write_manifest(run_dir / LAST, {"kind": "training-state", "model_name": model.model_name,
                                        "width": model.width, "epoch": epoch + 1, "metrics": metrics})
        write_metrics(self.history, run_dir)
        plot_curves(self.history, run_dir / "curves.png")
        line = _console_line(row, self.recipe.epochs)
        if self.progress:
            tqdm.write(line)
        else:
            print(line, flush=True)
