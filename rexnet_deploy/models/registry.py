"""Named ReXNet variants, their metadata, and ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..preprocess import Preprocess
from .checkpoint import extract_state_dict, load_state_dict_checked, read_checkpoint
from .rexnet import CIFAR_STRIDES, ChannelPlan, ReXNet, rexnet_lite_plan, rexnet_plan

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class Family:
    """A ReXNet family: how its channel plan follows from the width, and its defaults."""

    name: str
    variant: str  # ReXNet(variant=...)
    plan: Callable[[float], ChannelPlan]
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    default_width: float
    resize: str = "shorter-side-crop"  # timm's pretrained_cfg for ImageNet ReXNets: crop_pct 0.875, bicubic
    crop_pct: float = 0.875

    @property
    def preprocess(self) -> Preprocess:
        """The family's own preprocessing contract (a model that records none takes it)."""
        return Preprocess(self.input_size[1], self.mean, self.std, resize=self.resize, crop_pct=self.crop_pct,
                          interpolation="bicubic")


FAMILIES: dict[str, Family] = {
    "rexnet": Family("rexnet", "v1", rexnet_plan, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD, 1000, 1.0),
    "rexnet_lite": Family("rexnet_lite", "lite", rexnet_lite_plan, (3, 224, 224), IMAGENET_MEAN, IMAGENET_STD,
                          1000, 1.0),
    "rexnet_tiny_cifar": Family("rexnet_tiny_cifar", "tiny_cifar", lambda w: rexnet_plan(w, CIFAR_STRIDES),
                                (3, 32, 32), CIFAR_MEAN, CIFAR_STD, 10, 0.7, resize="exact", crop_pct=1.0),
}


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: a family at a width, with the published figures where they exist."""

    name: str
    family: str
    width: float | None  # None: any width (tiny-cifar), ``default_width`` when not given
    top1: float | None = None
    top5: float | None = None
    params_m: float | None = None  # published, millions
    macs_g: float | None = None  # published, GMACs at the family's input size
    source: str = ""

    @property
    def spec(self) -> Family:
        return FAMILIES[self.family]

    def to_dict(self) -> dict:
        d = asdict(self)
        fam = self.spec
        d.update(input_size=list(fam.input_size), mean=list(fam.mean), std=list(fam.std),
                 num_classes=fam.num_classes, default_width=self.width or fam.default_width)
        return d


_REGISTRY: dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> ModelInfo:
    _REGISTRY[info.name] = info
    return info


# (width, top-1, top-5, params M, GMACs) — clovaai/rexnet README; see shared/reference/REXNET.md
for _w, _t1, _t5, _p, _m in [
    (0.9, 77.2, 93.5, 4.091, 0.348), (1.0, 77.9, 93.9, 4.797, 0.398), (1.3, 79.5, 94.7, 7.557, 0.662),
    (1.5, 80.3, 95.2, 9.729, 0.876), (2.0, 81.6, 95.7, 16.367, 1.529), (2.2, None, None, 19.485, 1.843),
    (3.0, 82.8, 96.2, 34.709, 3.396),
]:
    register(ModelInfo(f"rexnet_{round(_w * 100):03d}", "rexnet", _w, _t1, _t5, _p, _m, "clovaai/rexnet"))
for _w, _t1, _t5, _p, _m in [
    (1.0, 76.2, 92.8, 4.740, 0.407), (1.3, 77.8, 93.8, 6.748, 0.646), (1.5, 78.6, 94.2, 8.332, 0.836),
    (2.0, 80.2, 95.0, 12.966, 1.498),
]:
    register(ModelInfo(f"rexnet_lite_{round(_w * 100):03d}", "rexnet_lite", _w, _t1, _t5, _p, _m,
                       "clovaai/rexnet (lite)"))
# Any-width entries: a family at a width of your choice (pruning targets, small CPU models).
register(ModelInfo("rexnet", "rexnet", None, source="ReXNetV1 at any width (default 1.0)"))
register(ModelInfo("rexnet_lite", "rexnet_lite", None, source="ReXNetV1-Lite at any width (default 1.0)"))
# tiny-cifar: CIFAR-10 top-1 of the SGDMix multistep recipe (ysbsb/ReXNet-PyTorch), 1.94M params at w=0.7
register(ModelInfo("rexnet_tiny_cifar", "rexnet_tiny_cifar", None, 95.13, None, 1.944, 0.232,
                   "ysbsb/ReXNet-PyTorch (CIFAR-10, w=0.7)"))


def list_models() -> list[ModelInfo]:
    return list(_REGISTRY.values())


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(_REGISTRY)} "
                        f"(see `rexnet-deploy models`)") from None


def resolve_width(name: str, width: float | None) -> tuple[ModelInfo, float]:
    """The registry entry and the width to build. A named width (``rexnet_100``) is fixed."""
    info = get_model_info(name)
    if info.width is None:
        return info, float(width if width is not None else info.spec.default_width)
    if width is not None and abs(width - info.width) > 1e-9:
        raise UserError(f"{name} has width {info.width}, not {width}: pick the entry of that width "
                        f"(`rexnet-deploy models`)")
    return info, info.width


def create_model(name: str, *, width: float | None = None, num_classes: int | None = None,
                 checkpoint: str | Path | None = None, plan: ChannelPlan | None = None,
                 dropout: float = 0.2) -> ReXNet:
    """Build a registered ReXNet; load ``checkpoint`` (any supported layout) if given.

    ``plan`` overrides the width's channel plan (pruned models are rebuilt from theirs).
    """
    info, width = resolve_width(name, width)
    if not 0.1 <= width <= 4.0:
        raise UserError(f"width {width} is outside 0.1–4.0 for {name}")
    fam = info.spec
    ckpt = read_checkpoint(checkpoint) if checkpoint is not None else None
    if ckpt is not None and plan is None and isinstance(ckpt.get("plan"), dict):
        plan = ChannelPlan.from_dict(ckpt["plan"])  # a pruned model carries its own channel plan
    model = ReXNet(plan or fam.plan(width), fam.variant, num_classes or fam.num_classes, dropout)
    model.model_name = name
    model.width = width
    if ckpt is not None:
        load_state_dict_checked(model, extract_state_dict(ckpt), str(checkpoint))
    return model
