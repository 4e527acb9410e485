"""The trainer: one process or many under ``torchrun`` (DDP: nccl on GPU, gloo on CPU).

Every epoch ends with an atomically written ``last.pt`` (model, optimizer, scheduler, AMP scaler, EMA,
every rank's RNG states, epoch, recipe, metric history) and, when validation top-1 improved,
``best.pt``. Both are :func:`~rexnet_deploy.models.save_model_checkpoint` files, so
``load_model(best.pt)`` rebuilds the model; the training state lives under the ``training`` key.
Resuming restores all of it, so a run killed mid-epoch and resumed ends with the weights an
uninterrupted run would have (on a deterministic device).
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
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
from ..data import ImageDataset
from ..data.imagefolder import FolderDataset
from ..errors import UserError
from ..models import save_model_checkpoint
from ..models.checkpoint import load_state_dict_checked, read_checkpoint
from .augment import BatchAugment
from .recipe import Recipe, write_recipe

LAST, BEST = "last.pt", "best.pt"


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: list[dict[str, Any]]
    best_top1: float
    run_dir: Path = field(default_factory=Path)


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
    dev = torch.device(f"cuda:{local_rank}" if cuda and world > 1 else ("cuda" if cuda else "cpu"))
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
def build_optimizer(model: nn.Module, recipe: Recipe, name: str, lr: float, weight_decay: float):
    from timm.optim import create_optimizer_v2

    kwargs: dict[str, Any] = {}
    if name in ("sgd", "sgdp"):
        kwargs["nesterov"] = recipe.nesterov
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay, momentum=recipe.momentum,
                               filter_bias_and_bn=not recipe.decay_bias_and_bn, **kwargs)


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
def worker_errors(loader: DataLoader):
    """Iterate ``loader``; a UserError from a worker (a broken image) comes out as its own one line."""
    try:
        yield from loader
    except UserError as exc:  # the DataLoader re-raises it with the worker's traceback in the message
        raise UserError(str(exc).strip().splitlines()[-1].split("UserError: ", 1)[-1]) from None


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


@torch.no_grad()
def evaluate_model(model: nn.Module, data: EvalData, env: DistEnv, amp: bool) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) over the whole split, summed over the ranks."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=env.device)  # loss, top-1, top-5, images
    for x, y in data:
        with torch.autocast(env.device.type, enabled=amp):
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
    if not path.is_file():
        raise UserError(f"nothing to resume: {path} does not exist (run without --resume to start)")
    return path


# ---------------------------------------------------------------- the loop
def train_model(model: nn.Module, recipe: Recipe, train_set: ImageDataset | FolderDataset,
                val_set: ImageDataset | FolderDataset, out_dir: str | Path, *, resume: bool | str | Path = False,
                teacher: nn.Module | None = None, kd_temperature: float = 4.0, kd_weight: float = 0.0,
                progress: bool = True, device: str | None = None,
                provenance: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` (built by ``create_model``) with ``recipe``; checkpoints and metrics go to ``out_dir``.

    ``resume``: ``True`` continues ``out_dir/last.pt``; a path continues that checkpoint. With a
    ``teacher`` and ``kd_weight`` > 0 the loss is ``(1 - kd_weight) · CE + kd_weight · T² · KL``
    on temperature-``kd_temperature`` logits (knowledge distillation). Under ``torchrun`` every
    process calls this; rank 0 writes the files. ``provenance`` (e.g. the checkpoint the weights
    started from) is stored in every checkpoint's metadata.
    """
    if train_set.num_classes != model.num_classes or val_set.num_classes != model.num_classes:
        raise UserError(f"{train_set.name} has {train_set.num_classes} classes but the model has "
                        f"{model.num_classes}: build it with num_classes={train_set.num_classes}")
    if not 0.0 <= kd_weight <= 1.0 or kd_temperature <= 0:
        raise UserError(f"kd_weight must lie in 0..1 and kd_temperature be positive (got {kd_weight}, "
                        f"{kd_temperature})")
    if recipe.train_subset:
        train_set = train_set.subset(recipe.train_subset, seed=recipe.seed)
    if recipe.val_subset:
        val_set = val_set.subset(recipe.val_subset, seed=recipe.seed)
    env = distributed_env(device)
    run_dir = Path(out_dir)
    resume_from = _resume_path(resume, run_dir)
    if env.main:
        ensure_writable_dir(run_dir)
    ckpt = _check_resume(resume_from, model) if resume_from is not None else None

    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if ckpt is None:
        seed_everything(recipe.seed + env.rank)

    # channels-last: about 2× the training throughput of NCHW on this project's CPU, and the fast layout for AMP
    model.to(env.device, memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(env.device).eval()
    use_amp = recipe.amp and env.device.type == "cuda"
    train_data = TrainData(train_set, recipe, env)
    val_data = EvalData(val_set, max(256, train_data.batch_size), env, recipe.workers)
    spe = train_data.steps_per_epoch

    ema = None
    if recipe.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=recipe.ema_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, history, best_top1 = 0, [], -1.0
    if ckpt is not None:
        state = ckpt["training"]
        start_epoch, history, best_top1 = int(ckpt["epoch"]), list(state["history"]), float(state["best_top1"])
        if start_epoch >= recipe.epochs:
            raise UserError(f"{resume_from} is already trained for {start_epoch} of {recipe.epochs} epochs: "
                            f"raise --epochs to train further")
    phase = build_phase(model, recipe, start_epoch, spe)
    if ckpt is not None:
        if state["phase"] == phase.name:
            phase.optimizer.load_state_dict(state["optimizer"])
            phase.scheduler.load_state_dict(state["scheduler"])
            phase.updates = int(state["updates"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        if len(state["rng"]) == env.world:
            _set_rng_state(state["rng"][env.rank], env.device)
        else:  # another process count: the run goes on, but no longer bit for bit
            seed_everything(recipe.seed + 1000 * start_epoch + env.rank)
        if env.main:
            print(f"resumed {resume_from} at epoch {start_epoch}/{recipe.epochs}")

    net: nn.Module = model
    if env.world > 1:
        if env.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[env.device.index] if env.device.type == "cuda"
                                                  else None)
    if env.main:
        write_recipe(recipe, run_dir / "recipe.yaml")
    meta_base = {"dataset": train_set.name, "preprocess": train_set.preprocess.to_dict(),
                 "classes": list(train_set.classes), "recipe": recipe.to_dict(), **(provenance or {})}
    if isinstance(train_set, FolderDataset):
        meta_base.update(crop_pct=train_set.crop_pct, interpolation=train_set.interpolation)
    if teacher is not None and kd_weight > 0:
        meta_base["distilled_from"] = {"model_name": getattr(teacher, "model_name", None),
                                       "width": getattr(teacher, "width", None),
                                       "kd_weight": kd_weight, "kd_temperature": kd_temperature}

    for epoch in range(start_epoch, recipe.epochs):
        if recipe.optimizer == "sgdmix" and epoch == recipe.switch_epoch and phase.name != "sgdp":
            phase = build_phase(model, recipe, epoch, spe)
            if env.main:
                print(f"epoch {epoch + 1}: switching to SGDP (lr {recipe.switch_lr:g}, "
                      f"weight decay {recipe.switch_weight_decay:g}) with a fresh {recipe.schedule} schedule")
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=env.device)
        bar = tqdm(total=spe, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="step", leave=False,
                   disable=not (progress and env.main))
        for step, (x, target) in enumerate(train_data.epoch(epoch)):
            x = _channels_last(x)
            with torch.autocast(env.device.type, enabled=use_amp):
                logits = net(x)
                loss = classification_loss(logits.float(), target, recipe.label_smoothing)
                if teacher is not None and kd_weight > 0:
                    with torch.no_grad():
                        teacher_logits = teacher(x).float()
                    loss = (1 - kd_weight) * loss + kd_weight * distillation_loss(logits.float(), teacher_logits,
                                                                                  kd_temperature)
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1} step {step + 1}: lower --lr "
                                f"(now {phase.optimizer.param_groups[0]['lr']:.4g})")
            phase.optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(phase.optimizer)
            scaler.update()
            phase.updates += 1
            phase.scheduler.step_update(num_updates=phase.updates)
            if ema is not None:
                ema.update(model, step=epoch * spe + step)
            loss_sum += loss.detach()
            bar.update()
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{phase.optimizer.param_groups[0]['lr']:.3g}")
        bar.close()
        if env.world > 1:
            dist.all_reduce(loss_sum)
            if env.device.type != "cuda":  # no SyncBatchNorm here: average the ranks' running statistics
                from timm.utils import distribute_bn

                distribute_bn(model, env.world, reduce=True)
        train_time = time.perf_counter() - t0
        val = evaluate_model(model, val_data, env, use_amp)
        row = {"epoch": epoch + 1, "steps": spe, "lr": phase.optimizer.param_groups[0]["lr"], "optimizer": phase.name,
               "train_loss": loss_sum.item() / (spe * env.world), "val_loss": val["loss"],
               "val_top1": val["top1"], "val_top5": val["top5"]}
        tracked, eval_model = val, model
        if ema is not None:
            ema_val = evaluate_model(ema.module, val_data, env, use_amp)
            row.update(ema_top1=ema_val["top1"], ema_top5=ema_val["top5"])
            tracked, eval_model = ema_val, ema.module
        epoch_time = time.perf_counter() - t0
        row.update(epoch_time_s=epoch_time, train_img_s=spe * train_data.batch_size * env.world / train_time,
                   elapsed_s=(history[-1]["elapsed_s"] if history else 0.0) + epoch_time)
        history.append(row)
        improved = tracked["top1"] > best_top1
        best_top1 = max(best_top1, tracked["top1"])
        rng = _gather(_rng_state(env.device), env)
        if env.main:
            metrics = {"top1": tracked["top1"], "top5": tracked["top5"], "epoch": epoch + 1}
            training = {"optimizer": phase.optimizer.state_dict(), "scheduler": phase.scheduler.state_dict(),
                        "phase": phase.name, "updates": phase.updates, "scaler": scaler.state_dict(),
                        "ema": ema.module.state_dict() if ema is not None else None, "rng": rng,
                        "history": history, "best_top1": best_top1, "world_size": env.world}
            if improved:
                save_model_checkpoint(eval_model, run_dir / BEST, **meta_base, metrics=metrics, epoch=epoch + 1)
                write_manifest(run_dir / BEST, {"kind": "checkpoint", "model_name": model.model_name,
                                                "width": model.width, **meta_base, "metrics": metrics})
            save_model_checkpoint(model, run_dir / LAST, **meta_base, metrics=metrics, epoch=epoch + 1,
                                  training=training)
            write_manifest(run_dir / LAST, {"kind": "training-state", "model_name": model.model_name,
                                            "width": model.width, "epoch": epoch + 1, "metrics": metrics})
            write_metrics(history, run_dir)
            plot_curves(history, run_dir / "curves.png")
            line = _console_line(row, recipe.epochs)
            if progress:
                tqdm.write(line)
            else:
                print(line, flush=True)
        env.barrier()

    model.eval()
    return TrainResult(run_dir / BEST, run_dir / LAST, history, best_top1, run_dir)

