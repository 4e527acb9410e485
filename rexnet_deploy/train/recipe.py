"""Training recipes: YAML files in ``rexnet_deploy/recipes/`` (or any path), overridable key by key.

A recipe may name a ``base`` recipe and change only some keys (the tiny-cifar variants do). Every
key must be a field of :class:`Recipe`; an unknown or mistyped one is a one-line error naming the
file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, first_line, require_file

OPTIMIZERS = ("sgd", "sgdp", "adam", "adamw", "adamp", "sgdmix")
SCHEDULES = ("cosine", "step", "multistep", "constant")


@dataclass
class Recipe:
    """Everything a training run needs besides the data path and the output folder."""

    name: str = "custom"
    description: str = ""
    # model and data
    model: str = "rexnet"
    width: float | None = None
    dataset: str = "fashion_mnist"
    train_subset: int | None = None  # train on this many images drawn at random (quick runs)
    val_subset: int | None = None  # validate on this many
    input_size: int | None = None  # ImageFolder only (None: the model's own); in-memory datasets keep theirs
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    workers: int = 4
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # global: split over the torchrun processes
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    decay_bias_and_bn: bool = True  # False: no weight decay on biases and BN (timm's default)
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    step_size: float = 30.0  # step: decay every step_size epochs
    milestones: list[float] = field(default_factory=lambda: [30.0, 60.0, 90.0])  # multistep
    gamma: float = 0.1
    # sgdmix: SGD until switch_epoch, then SGDP with its own lr/decay and a fresh schedule
    switch_epoch: int = 28
    switch_lr: float = 0.1
    switch_weight_decay: float = 1e-5
    # transfer learning (a run from --pretrained weights): the classifier trains at lr, every other weight at
    # lr × backbone_lr_scale; for the first freeze_epochs the classifier alone (the rest keeps its weights and
    # BatchNorm statistics)
    backbone_lr_scale: float = 1.0
    freeze_epochs: int = 0
    # regularisation and augmentation
    label_smoothing: float = 0.0
    dropout: float = 0.2
    crop_padding: int = 4  # in-memory datasets: random crop with this zero padding (0 = off)
    hflip: bool = True
    randaugment_n: int = 0  # 0 = off
    randaugment_m: int = 9
    randaugment_mstd: float = 0.0  # ImageFolder (timm): magnitude noise
    cutmix_alpha: float = 0.0
    mixup_alpha: float = 0.0
    mix_prob: float = 1.0
    mix_switch_prob: float = 0.5
    random_erasing: float = 0.0
    ema: bool = False
    ema_decay: float = 0.9998
    amp: bool = True  # float16 autocast on CUDA, bfloat16 on a CPU with native BF16 (AMX), off elsewhere
    seed: int = 0
    deterministic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self, source: str = "recipe") -> "Recipe":
        """Value checks a type cannot express; returns self."""
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{source}: optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"{source}: schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"{source}: epochs, batch_size and lr must be positive "
                            f"(got {self.epochs}, {self.batch_size}, {self.lr})")
        if self.optimizer == "sgdmix" and not 0 < self.switch_epoch < self.epochs:
            raise UserError(f"{source}: sgdmix switch_epoch {self.switch_epoch} must lie inside 1..{self.epochs - 1}"
                            f" (set switch_epoch or epochs)")
        if self.backbone_lr_scale < 0 or not 0 <= self.freeze_epochs <= self.epochs:
            raise UserError(f"{source}: backbone_lr_scale must be ≥ 0 and freeze_epochs lie in 0..epochs "
                            f"(got {self.backbone_lr_scale:g}, {self.freeze_epochs} of {self.epochs})")
        if (self.cutmix_alpha or self.mixup_alpha) and self.batch_size % 2:
            raise UserError(f"{source}: CutMix/MixUp need an even batch_size, not {self.batch_size}")
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def parse_set_overrides(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` flags as recipe overrides (VALUE read as YAML: numbers, lists, booleans)."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r} must look like KEY=VALUE")
        values[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return values


def recipe_dir() -> Path:
    return Path(str(resources.files("rexnet_deploy") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check ``value`` against the field's annotation (YAML gives ints for floats, strings for 1e-5)."""
    kind = _FIELDS[key].type
    optional = "None" in kind
    if value is None:
        if optional:
            return None
        raise UserError(f"{source}: {key} cannot be empty")
    try:
        if kind.startswith("list"):
            values = value if isinstance(value, (list, tuple)) else [value]
            return [float(v) for v in values]
        if kind.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {key} must be {kind.replace(' | None', '')}, not {value!r}") from None


def _unknown(key: str, source: str) -> UserError:
    near = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return UserError(f"{source}: unknown recipe key {key!r}{hint}: see the keys of rexnet_deploy/recipes/*.yaml")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"recipe {path} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {path} is not valid YAML ({first_line(exc)}): fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys to values")
    return data


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return require_file(path, "recipe file", "check the path")
    path = recipe_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(f"unknown recipe {name_or_path!r}: choose one of {', '.join(list_recipes())} "
                        f"or pass a YAML file")
    return path


def _load_values(name_or_path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = _resolve(name_or_path)
    if path in seen:
        raise UserError(f"recipe {path} inherits from itself through 'base'")
    data = _read_yaml(path)
    values: dict[str, Any] = {}
    if "base" in data:
        base = str(data.pop("base"))
        # a relative base names a packaged recipe or a file beside this one
        beside = path.parent / f"{base}.yaml"
        values = _load_values(beside if beside.is_file() else base, seen + (path,))
    for key, value in data.items():
        if key not in _FIELDS:
            raise _unknown(key, str(path))
        values[key] = _coerce(key, value, str(path))
    if "name" not in data:  # a derived recipe is named after its own file, not its base's
        values["name"] = path.stem
    return values


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """A packaged recipe by name (``fmnist-cpu``) or a YAML file, with ``overrides`` applied on top.

    ``None`` values in ``overrides`` mean "not given" and are skipped.
    """
    values = _load_values(name_or_path)
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise _unknown(key, "overrides")
        if value is not None:
            values[key] = _coerce(key, value, "overrides")
    return Recipe(**values).check(str(name_or_path))


def recipe_from_dict(values: dict[str, Any], source: str) -> Recipe:
    """Rebuild a recipe saved in a checkpoint or run folder."""
    for key in values:
        if key not in _FIELDS:
            raise _unknown(key, source)
    return Recipe(**{k: _coerce(k, v, source) for k, v in values.items()}).check(source)


def write_recipe(recipe: Recipe, path: str | Path) -> Path:
    from ..artifacts import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return Path(path)
