"""ReXNetV1, ReXNetV1-Lite and ReXNet-tiny-cifar.

Channel plans follow the official clovaai code exactly (``rexnetv1.py`` / ``rexnetv1_lite.py``):
Python ``round`` (halves to even), the ``w < 1`` rule that keeps the stem at 32 and the first block
at 16, Lite's ``make_divisible``. Module names follow timm's layout (``stem``, ``features.N``,
``head.fc``) so timm state_dicts map one-to-one; the official layout is mapped by position in
:mod:`rexnet_deploy.models.checkpoint`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import ceil

import torch
import torch.nn.functional as F
from torch import nn

LAYERS = (1, 2, 2, 3, 3, 5)
IMAGENET_STRIDES = (1, 2, 2, 2, 1, 2)
CIFAR_STRIDES = (1, 1, 1, 2, 1, 2)
SE_STAGES = (False, False, True, True, True, True)
# the one layer whose shape depends on the class count: what a transfer to other classes replaces
CLASSIFIER = "head.fc"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Lite's rounding: to the nearest multiple of ``divisor``, never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockSpec:
    """One bottleneck. ``mid_chs``/``se_chs`` are explicit so a pruned plan (any widths) can be rebuilt."""

    in_chs: int
    out_chs: int
    mid_chs: int  # expanded (depthwise) width; equals in_chs when the block has no expansion conv
    se_chs: int  # SE reduction width; 0 = no SE
    stride: int
    expand: bool
    shortcut: bool
    kernel_size: int = 3

    @classmethod
    def make(cls, in_chs: int, out_chs: int, exp_ratio: int, stride: int, use_se: bool,
             kernel_size: int = 3) -> "BlockSpec":
        mid = in_chs * exp_ratio
        return cls(in_chs, out_chs, mid, mid // 12 if use_se else 0, stride, exp_ratio != 1,
                   stride == 1 and in_chs <= out_chs, kernel_size)


@dataclass(frozen=True)
class ChannelPlan:
    """Every width the network has; what the pruner targets and what checkpoints are checked against."""

    stem: int
    blocks: tuple[BlockSpec, ...]
    head: int
    head_hidden: int = 0  # Lite's 1×1 conv after pooling (1024); 0 = none

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ChannelPlan":
        return cls(stem=d["stem"], blocks=tuple(BlockSpec(**b) for b in d["blocks"]), head=d["head"],
                   head_hidden=d.get("head_hidden", 0))


def _expand(per_stage: tuple, layers: tuple[int, ...]) -> list:
    return sum(([v] * n for v, n in zip(per_stage, layers)), [])


def _stage_strides(strides: tuple[int, ...], layers: tuple[int, ...]) -> list[int]:
    return sum(([s] + [1] * (n - 1) for s, n in zip(strides, layers)), [])


def rexnet_plan(width: float, strides: tuple[int, ...] = IMAGENET_STRIDES, depth_mult: float = 1.0) -> ChannelPlan:
    """ReXNetV1 channel plan, computed as the official code does (same float accumulation)."""
    layers = tuple(ceil(n * depth_mult) for n in LAYERS)
    num_blocks = sum(layers)
    stem_base = 32 / width if width < 1.0 else 32
    inplanes = 16 / width if width < 1.0 else 16
    stem = int(round(stem_base * width))
    ins, outs = [], []
    for i in range(num_blocks):
        if i == 0:
            ins.append(stem)
        else:
            ins.append(int(round(inplanes * width)))
            inplanes += 180 / (num_blocks * 1.0)
        outs.append(int(round(inplanes * width)))
    exp = [1] * layers[0] + [6] * sum(layers[1:])
    blocks = tuple(
        BlockSpec.make(i, o, t, s, se)
        for i, o, t, s, se in zip(ins, outs, exp, _stage_strides(strides, layers), _expand(SE_STAGES, layers))
    )
    return ChannelPlan(stem=stem, blocks=blocks, head=int(1280 * width))


def rexnet_lite_plan(width: float, kernel_conf: str = "333333") -> ChannelPlan:
    """ReXNetV1-Lite channel plan (official ``rexnetv1_lite.py``, ``fix_head_stem=False``)."""
    num_blocks = sum(LAYERS)
    inplanes = 16 / width if width < 1.0 else 16
    stem = make_divisible(int(round((32 / width if width < 1.0 else 32) * width)))
    ins, outs = [], []
    for i in range(num_blocks):
        divisible = make_divisible(int(round(inplanes * width)))
        if i == 0:
            ins.append(stem)
            outs.append(divisible)
        else:
            ins.append(divisible)
            inplanes += 164 / (num_blocks - 1.0)
            outs.append(make_divisible(int(round(inplanes * width))))
    exp = [1] * LAYERS[0] + [6] * sum(LAYERS[1:])
    kernels = _expand(tuple(int(k) for k in kernel_conf), LAYERS)
    blocks = tuple(
        BlockSpec.make(i, o, t, s, False, k)
        for i, o, t, s, k in zip(ins, outs, exp, _stage_strides(IMAGENET_STRIDES, LAYERS), kernels)
    )
    return ChannelPlan(stem=stem, blocks=blocks, head=int(1280 * width) if width > 1 else 1280, head_hidden=1024)


class ConvBnAct(nn.Sequential):
    """Conv → BN → optional activation; ``conv``/``bn`` names as timm's ConvNormAct."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        if act is not None:
            self.act = act()


class SqueezeExcite(nn.Module):
    """SE with BN in the reduction branch (ReXNet's variant); reduction ``channels // 12`` as official."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.bn = nn.BatchNorm2d(rd_channels)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.fc2(self.act(self.bn(self.fc1(scale))))
        return x * scale.sigmoid()


class LinearBottleneck(nn.Module):
    """Inverted residual with ReXNet's partial shortcut.

    The shortcut adds the input to the first ``in`` output channels. It is written as a zero-pad of
    the input to the output width plus an add: ONNX export gives Pad + Add (the in-place
    ``out[:, :c] += x`` exports as ScatterND), and the widths are read from the tensors, so a block
    whose channels torch-pruning removed still adds the right channels (a stored ``in_channels``
    would break after pruning).
    """

    def __init__(self, spec: BlockSpec, act: type[nn.Module], dw_act: type[nn.Module], lite: bool = False) -> None:
        super().__init__()
        self.use_shortcut = spec.shortcut
        dw_chs = spec.mid_chs
        self.conv_exp = ConvBnAct(spec.in_chs, dw_chs, act=act) if spec.expand else None
        # Lite puts its activation straight after the depthwise BN; V1 puts it after the SE.
        self.conv_dw = ConvBnAct(dw_chs, dw_chs, spec.kernel_size, spec.stride, groups=dw_chs,
                                 act=dw_act if lite else None)
        self.se = SqueezeExcite(dw_chs, spec.se_chs) if spec.se_chs else None
        self.act_dw = nn.Identity() if lite else dw_act()
        self.conv_pwl = ConvBnAct(dw_chs, spec.out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.conv_exp is not None:
            x = self.conv_exp(x)
        x = self.conv_dw(x)
        if self.se is not None:
            x = self.se(x)
        x = self.conv_pwl(self.act_dw(x))
        if self.use_shortcut:
            # int(): a constant in the exported graph. Traced shape arithmetic here is merged across
            # blocks by onnxslim 0.1.98 (every Pad got the first block's width): wrong logits.
            extra = int(x.shape[1] - shortcut.shape[1])
            x = x + F.pad(shortcut, (0, 0, 0, 0, 0, extra))
        return x


class ClassifierHead(nn.Module):
    """Global pool → (Lite: 1×1 conv to 1024, BN, ReLU6) → dropout → linear classifier."""

    def __init__(self, in_chs: int, num_classes: int, dropout: float, hidden: int | None = None) -> None:
        super().__init__()
        if hidden:
            self.conv = nn.Conv2d(in_chs, hidden, 1, bias=True)
            self.bn = nn.BatchNorm2d(hidden)
            self.act = nn.ReLU6()
            in_chs = hidden
        else:
            self.conv = None
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3), keepdim=True)
        if self.conv is not None:
            x = self.act(self.bn(self.conv(x)))
        # flatten, not squeeze: a squeeze would also drop the batch axis at batch size 1
        return self.fc(self.drop(x.flatten(1)))


class ReXNet(nn.Module):
    """ReXNet built from a :class:`ChannelPlan`.

    ``variant`` picks the activations: ``"v1"`` (SiLU, ReLU6 after the depthwise/SE), ``"lite"``
    (ReLU6 everywhere, no SE, 1024-wide head), ``"tiny_cifar"`` (as v1, but a plain ReLU after the
    depthwise/SE and a stride-1 stem for 32×32 inputs).
    """

    def __init__(self, plan: ChannelPlan, variant: str = "v1", num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if variant not in ("v1", "lite", "tiny_cifar"):
            raise ValueError(f"unknown ReXNet variant {variant!r}")
        self.plan = plan
        self.variant = variant
        self.num_classes = num_classes
        lite = variant == "lite"
        act = nn.ReLU6 if lite else nn.SiLU
        dw_act = nn.ReLU if variant == "tiny_cifar" else nn.ReLU6
        self.stem = ConvBnAct(3, plan.stem, 3, 1 if variant == "tiny_cifar" else 2, act=act)
        blocks = [LinearBottleneck(spec, act, dw_act, lite) for spec in plan.blocks]
        blocks.append(ConvBnAct(plan.blocks[-1].out_chs, plan.head, act=act))
        self.features = nn.Sequential(*blocks)
        self.head = ClassifierHead(plan.head, num_classes, dropout, hidden=plan.head_hidden or None)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def classifier(self) -> nn.Linear:
        return self.get_submodule(CLASSIFIER)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))
