"""Checkpoint loading: our layout, timm's, and the official clovaai layout.

``checkpoint_filter_fn`` maps a foreign state_dict onto our module names (timm's layout, which we
share). Shapes are checked before ``load_state_dict`` so a wrong width, class count or family is
reported in one line that says what the file does fit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError, first_line
from .rexnet import ChannelPlan, ReXNet

# Our trainer writes {"model": state_dict, ...}; timm/others use these keys for the weights.
_STATE_KEYS = ("model", "state_dict", "model_state", "state_dict_ema", "model_ema")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``), with one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/foreign files
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({first_line(exc, 120)}); "
                        f"the file is truncated or of another kind: re-download or re-save it") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a state_dict: save model.state_dict()")
    return obj


def extract_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in _STATE_KEYS:
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _official_block_map(sd: dict[str, torch.Tensor], src: str, dst: str) -> dict[str, str]:
    """Map one official block ``features.K.out.*`` to ours by the order of its conv/BN pairs."""
    prefix = f"{src}.out."
    idx = sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})
    plain = [j for j in idx if not any(k.startswith(f"{prefix}{j}.fc.") for k in sd)]
    se = [j for j in idx if j not in plain]
    convs = [j for j in plain if f"{prefix}{j}.weight" in sd and sd[f"{prefix}{j}.weight"].dim() == 4]
    names = ["conv_exp", "conv_dw", "conv_pwl"] if len(convs) == 3 else ["conv_dw", "conv_pwl"]
    mapping = {}
    for name, j in zip(names, convs):
        mapping[f"{prefix}{j}."] = f"{dst}.{name}.conv."
        mapping[f"{prefix}{j + 1}."] = f"{dst}.{name}.bn."
    for j in se:
        mapping.update({f"{prefix}{j}.fc.0.": f"{dst}.se.fc1.", f"{prefix}{j}.fc.1.": f"{dst}.se.bn.",
                        f"{prefix}{j}.fc.3.": f"{dst}.se.fc2."})
    return mapping


def _map_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    block_ids = sorted({int(m.group(1)) for k in sd if (m := re.match(r"features\.(\d+)\.out\.", k))})
    prefixes = {"features.0.": "stem.conv.", "features.1.": "stem.bn."}
    for pos, k in enumerate(block_ids):
        prefixes.update(_official_block_map(sd, f"features.{k}", f"features.{pos}"))
    head = block_ids[-1] + 1
    prefixes.update({f"features.{head}.": f"features.{len(block_ids)}.conv.",
                     f"features.{head + 1}.": f"features.{len(block_ids)}.bn.",
                     "output.1.": "head.fc."})
    out = {}
    for key, value in sd.items():
        for src, dst in prefixes.items():
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            out[key] = value
    return out


def _is_official(sd: dict[str, torch.Tensor]) -> bool:
    return "features.0.weight" in sd and "output.1.weight" in sd


def checkpoint_layout(obj: dict[str, Any]) -> str:
    """The layout of a file read by :func:`read_checkpoint`: ``rexnet-deploy`` (this project's, naming its model),
    ``official`` (clovaai) or ``timm`` (timm's names, which are ours, without the metadata)."""
    if obj.get("model_name"):
        return "rexnet-deploy"
    return "official" if _is_official({k.removeprefix("module."): v for k, v in extract_state_dict(obj).items()}) \
        else "timm"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ReXNet | None = None) -> dict[str, torch.Tensor]:
    """Map a timm, official (clovaai) or DataParallel state_dict onto our names.

    timm's layout is ours; the official one is mapped by position; a 4-D 1×1-conv classifier
    becomes the 2-D linear weight.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if _is_official(sd):
        sd = _map_official(sd)
    fc = sd.get("head.fc.weight")
    if fc is not None and fc.dim() == 4:
        sd["head.fc.weight"] = fc.flatten(1)
    return sd


def describe_state_dict(sd: dict[str, torch.Tensor]) -> str:
    """Say which registered family/width a (mapped) state_dict fits, as far as shapes tell."""
    from .registry import FAMILIES

    try:
        outs = []
        i = 0
        while f"features.{i}.conv_pwl.conv.weight" in sd:
            outs.append(sd[f"features.{i}.conv_pwl.conv.weight"].shape[0])
            i += 1
        stem = sd["stem.conv.weight"].shape[0]
        classes = sd["head.fc.weight"].shape[0]
    except KeyError:
        return "it is not a ReXNet state_dict"
    lite = "head.conv.weight" in sd
    families = ["rexnet_lite"] if lite else ["rexnet", "rexnet_tiny_cifar"]
    for step in range(10, 401):
        w = step / 100
        plan = FAMILIES[families[0]].plan(w)
        if plan.stem == stem and [b.out_chs for b in plan.blocks] == outs:
            kind = "a ReXNetV1-Lite" if lite else "a ReXNetV1 (or tiny-cifar)"
            return f"it holds {kind} of width {w:g} with {classes} classes"
    kind = "ReXNetV1-Lite" if lite else "ReXNetV1"
    return f"it holds a {kind} with {classes} classes and a channel plan of no standard width (pruned?)"


def load_state_dict_checked(model: ReXNet, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load with every key and shape checked first; a mismatch is one line naming what fits."""
    sd = checkpoint_filter_fn(state_dict, model)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        target = f"{getattr(model, 'model_name', 'ReXNet')} width {getattr(model, 'width', '?'):g} " \
                 f"with {model.num_classes} classes"
        detail = (f"shape of {wrong[0]} {tuple(sd[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)}" if wrong
                  else f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise UserError(f"{source} does not fit {target} ({detail}); {describe_state_dict(sd)}: "
                        f"pick that model/width/--num-classes")
    model.load_state_dict(sd)


def load_checkpoint(model: ReXNet, path: str | Path) -> dict[str, Any]:
    """Load ``path`` into ``model``; returns the checkpoint's other entries (metadata)."""
    obj = read_checkpoint(path)
    load_state_dict_checked(model, extract_state_dict(obj), str(path))
    return {k: v for k, v in obj.items() if k not in _STATE_KEYS}


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata (everything but the weights): model, dataset spec, metrics, provenance."""
    return {k: v for k, v in read_checkpoint(path).items() if k not in _STATE_KEYS}


def save_model_checkpoint(model: ReXNet, path: str | Path, **meta: Any) -> Path:
    """Write ``{"model": state_dict, "model_name", "width", "num_classes", "plan", **meta}`` atomically.

    The channel plan is stored whenever it differs from the width's standard plan (a pruned model),
    so :func:`load_model` rebuilds the exact architecture; ``meta`` carries provenance (dataset,
    preprocess, metrics, source hash). Only tensors and plain Python values: loadable with
    ``weights_only=True``.

    ``meta["dataset_spec"]`` (``DatasetSpec.to_dict()`` of :mod:`rexnet_deploy.data`: name, folder, class
    names, input size, preprocessing, crop) is how later stages find the data without flags; the trainer
    and the prune stage write it, beside the older flat ``dataset``/``preprocess``/``classes`` keys. It
    is kept as plain values here: this layer does not import the data layer (which imports it).
    """
    from ..artifacts import atomic_path
    from .registry import get_model_info

    name = getattr(model, "model_name", None)
    if name is None:
        raise ValueError("model was not built by create_model (no model_name)")
    standard = get_model_info(name).spec.plan(model.width)
    ckpt = {"model": model.state_dict(), "model_name": name, "width": model.width,
            "num_classes": model.num_classes, **meta}
    if model.plan != standard:
        ckpt["plan"] = model.plan.to_dict()
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_model(path: str | Path, model_name: str | None = None, width: float | None = None) -> tuple[ReXNet, dict]:
    """Rebuild the model a checkpoint describes (name, width, classes, plan) and load it.

    Returns ``(model in eval mode, the checkpoint's metadata)``. ``model_name``/``width`` are needed
    only for files without that metadata (timm or official weights) and are checked against it.
    """
    from .registry import create_model

    obj = read_checkpoint(path)
    meta = {k: v for k, v in obj.items() if k not in _STATE_KEYS}
    name = meta.get("model_name") or model_name
    if name is None:
        raise UserError(f"{path} does not say which model it holds: pass --model (and --width)")
    if model_name and model_name != name:
        raise UserError(f"{path} holds {name}, not {model_name}: drop --model or pick the right file")
    saved_width = meta.get("width")
    if width is not None and saved_width is not None and abs(width - saved_width) > 1e-9:
        raise UserError(f"{path} holds {name} width {saved_width:g}, not {width:g}: pass --width {saved_width:g}")
    sd = checkpoint_filter_fn(extract_state_dict(obj))
    num_classes = meta.get("num_classes") or (sd["head.fc.weight"].shape[0] if "head.fc.weight" in sd else None)
    plan = ChannelPlan.from_dict(meta["plan"]) if isinstance(meta.get("plan"), dict) else None
    model = create_model(name, width=saved_width if saved_width is not None else width,
                         num_classes=num_classes, plan=plan)
    load_state_dict_checked(model, sd, str(path))
    return model.eval(), meta
