"""The preprocessing contract: one record that fully determines image pixels → the model's input tensor.

Like timm's ``pretrained_cfg``, :class:`Preprocess` holds everything (colour rule, resize rule and
interpolation, center crop or pad, scaling, mean/std, layout, dtype, input name and shape), is written
identically into every manifest, ``bundle.json`` and ONNX ``metadata_props``, and is *executable*:
:meth:`Preprocess.load_image` + :meth:`Preprocess.pixels` + :meth:`Preprocess.to_input` are what the tool's
own evaluation, calibration, parity, bench accuracy and ``predict`` run on image files.

Standalone on purpose (the standard library, numpy and Pillow only; no import of the rest of the package):
every bundle ships this very file beside its ``predict.py``, so an application that reads only the bundle
runs the code the tool measured its accuracy with.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

CONTRACT_VERSION = 1
INPUT_NAME = "input"
#: how an image reaches the input size:
#: ``shorter-side-crop``: shorter side resized to ``floor(size / crop_pct)``, then center crop (timm's eval rule;
#: an image still smaller than ``size`` is zero-padded around the center first, as torchvision does);
#: ``pad``: resized exactly to ``source_size`` × ``source_size`` (a no-op for images of that size), then zero-padded
#: around the center to ``size`` (Fashion-MNIST: 28 → 32); ``exact``: resized exactly to ``size`` × ``size``.
RESIZE_MODES = ("shorter-side-crop", "pad", "exact")
#: Pillow's resampling filters by name (Pillow filters antialias when they shrink)
PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
COLOR_RULE = "RGB: grey repeated to 3 channels, palette expanded, alpha dropped"
#: the image files the tool reads (an ImageFolder tree, ``predict``, the bundle's kit)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Preprocess:
    """What turns an image into the model's input, complete; recorded in every artifact and compared.

    ``embedded``: the file takes uint8 NHWC pixels and scales/normalises inside its graph
    (``export --embed-preprocess``); :meth:`to_input` then hands it the pixels as they are.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "shorter-side-crop"
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    source_size: int | None = None  # "pad": the size images are resized to before padding
    embedded: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize {self.resize!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in PIL_FILTERS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(PIL_FILTERS)}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct {self.crop_pct} must lie in (0, 1]")
        if self.resize == "pad" and not (self.source_size and 0 < self.source_size <= self.size):
            raise ValueError(f"resize 'pad' needs a source_size between 1 and {self.size}")

    # ---------------------------------------------------------------- the record
    @property
    def layout(self) -> str:
        return "NHWC" if self.embedded else "NCHW"

    @property
    def dtype(self) -> str:
        return "uint8" if self.embedded else "float32"

    def input_shape(self, batch: int | str = "batch") -> list[int | str]:
        return [batch, self.size, self.size, 3] if self.embedded else [batch, 3, self.size, self.size]

    def to_dict(self) -> dict[str, Any]:
        """The whole contract as JSON-ready data (what manifests, ``bundle.json`` and ONNX metadata hold)."""
        return {"contract_version": CONTRACT_VERSION, "color": COLOR_RULE, "resize": self.resize,
                "size": self.size, "crop_pct": self.crop_pct, "resize_to": self.resize_target(),
                "interpolation": self.interpolation, "antialias": True, "source_size": self.source_size,
                "pad_value": 0, "scale": "1/255", "mean": list(self.mean), "std": list(self.std),
                "normalize": "in the graph" if self.embedded else "host",
                "layout": self.layout, "dtype": self.dtype, "input_name": INPUT_NAME,
                "input_shape": self.input_shape()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        """The contract a record holds; ``ValueError``/``KeyError``/``TypeError`` for one that is not one."""
        return cls(int(d["size"]), tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                   str(d.get("resize", "shorter-side-crop")), float(d.get("crop_pct", 0.875)),
                   str(d.get("interpolation", "bicubic")),
                   int(d["source_size"]) if d.get("source_size") else None,
                   d.get("normalize") == "in the graph")

    def matches(self, other: "Preprocess", tol: float = 1e-4) -> bool:
        """The same pixels → input mapping (an embedded file and a host-normalised one of it match)."""
        return (self.size, self.resize, self.interpolation, self.source_size) == (
            other.size, other.resize, other.interpolation, other.source_size) and all(
            abs(a - b) <= tol for a, b in zip((*self.mean, *self.std, self.crop_pct),
                                              (*other.mean, *other.std, other.crop_pct)))

    def with_embedded(self, embedded: bool = True) -> "Preprocess":
        return replace(self, embedded=embedded)

    def describe(self) -> str:
        """In words, for tables and messages."""
        how = {"shorter-side-crop": f"shorter side → {self.resize_target()}, center crop {self.size}",
               "pad": f"{self.source_size}×{self.source_size}, zero-pad to {self.size}",
               "exact": f"resize to {self.size}×{self.size}"}[self.resize]
        return f"{how}, {self.interpolation}, /255, mean {list(self.mean)}, std {list(self.std)}, {self.layout} " \
               f"{self.dtype}"

    def resize_target(self) -> int:
        """The side images are resized to before the crop or pad (timm's ``floor(size / crop_pct)``)."""
        if self.resize == "pad":
            return int(self.source_size or self.size)
        return math.floor(self.size / self.crop_pct) if self.resize == "shorter-side-crop" else self.size

    # ---------------------------------------------------------------- executing it
    @staticmethod
    def load_image(path: str) -> Any:
        """An image file as an RGB Pillow image (the colour rule); Pillow's own error for a file it cannot read."""
        from PIL import Image

        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
        return to_rgb(image)

    def pixels(self, image: Any) -> np.ndarray:
        """One image (Pillow, or a uint8 HxW / HxWx3 array) → uint8 [size, size, 3] by the resize rule."""
        from PIL import Image

        if isinstance(image, np.ndarray):
            array = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
            if self._needs_no_resize(array.shape[1], array.shape[0]):
                return self._place(array)
            image = Image.fromarray(np.ascontiguousarray(array))
        image = to_rgb(image)
        w, h = image.size
        if self.resize == "shorter-side-crop":
            target = self.resize_target()
            short, long = (w, h) if w <= h else (h, w)
            if short != target:  # torchvision's Resize(int): the longer side by int() of the same ratio
                new_long = int(target * long / short)
                image = image.resize((target, new_long) if w <= h else (new_long, target),
                                     PIL_FILTERS[self.interpolation])
        else:
            target = self.resize_target()
            if (w, h) != (target, target):
                image = image.resize((target, target), PIL_FILTERS[self.interpolation])
        return self._place(np.asarray(image, dtype=np.uint8))

    def pixels_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] or [N, H, W, 3] images of one size → uint8 [N, size, size, 3] (vectorised when no
        resize is needed: a dataset already at its source size)."""
        if images.ndim == 3:
            images = images[..., None].repeat(3, axis=-1)
        if len(images) and self._needs_no_resize(images.shape[2], images.shape[1]):
            return self._place(images)
        return np.stack([self.pixels(image) for image in images]) if len(images) else \
            np.zeros((0, self.size, self.size, 3), np.uint8)

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, size, size, 3] pixels → what the file takes: float32 NCHW, scaled and normalised (the same
        float32 operations in the same order as the tool's tensor path), or the pixels as they are (embedded)."""
        if self.embedded:
            return np.ascontiguousarray(pixels, dtype=np.uint8)
        x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: Any) -> Any:
        """uint8 NCHW torch tensor → normalised float32 NCHW on the images' device (the training fast path; the
        same arithmetic as :meth:`to_input`)."""
        x = images.float().div_(255.0)
        return (x - x.new_tensor(self.mean).view(1, -1, 1, 1)) / x.new_tensor(self.std).view(1, -1, 1, 1)

    def _needs_no_resize(self, width: int, height: int) -> bool:
        if self.resize == "shorter-side-crop":
            return min(width, height) == self.resize_target() and min(width, height) >= self.size
        return (width, height) == (self.resize_target(),) * 2

    def _place(self, array: np.ndarray) -> np.ndarray:
        """Center crop to ``size``, zero-padding around the center first where the image is smaller
        (torchvision's CenterCrop; the ``pad`` rule). Works on [H, W, 3] and [N, H, W, 3]."""
        h, w = array.shape[-3], array.shape[-2]
        if h < self.size or w < self.size:
            ph, pw = max(self.size - h, 0), max(self.size - w, 0)
            pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)]
            array = np.pad(array, [(0, 0)] * (array.ndim - 3) + pad)
            h, w = array.shape[-3], array.shape[-2]
        top, left = int(round((h - self.size) / 2.0)), int(round((w - self.size) / 2.0))
        return np.ascontiguousarray(array[..., top:top + self.size, left:left + self.size, :])


def to_rgb(image: Any) -> Any:
    """The colour rule: grey repeated, palette expanded (through RGBA when it has transparency), alpha dropped."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette image with transparency goes straight to RGB
    return image.convert("RGB")


def find_image_files(inputs: Sequence[str]) -> list[Path]:
    """The image files ``inputs`` name: files as given, folders searched recursively (sorted), glob patterns
    expanded, each file once; ``FileNotFoundError`` naming an input that is none of these."""
    found: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(given):
            found += sorted(Path(p) for p in glob.glob(given, recursive=True)
                            if os.path.isfile(p) and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise FileNotFoundError(f"{given} does not exist")
    return list(dict.fromkeys(found))
