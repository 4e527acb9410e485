"""Batch augmentation for in-memory uint8 datasets, on the training device.

Random crop with zero padding and horizontal flip are done for the whole batch with one gather;
RandAugment is torchvision's (per image, on uint8 tensors); CutMix/MixUp (with label smoothing) and
random erasing are timm's, applied to the normalised batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data import Preprocess
from .recipe import Recipe


def random_crop_flip(images: torch.Tensor, padding: int, flip: bool) -> torch.Tensor:
    """Per-image random crop of the original size from the zero-padded batch, then random h-flip."""
    n, _, h, w = images.shape
    device = images.device
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device)
        left = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device)
        rows = top + torch.arange(h, device=device).view(1, h, 1)
        cols = left + torch.arange(w, device=device).view(1, 1, w)
        # advanced indices around a slice put the batch/row/col dims first: [N, H, W, C]
        images = padded[torch.arange(n, device=device).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirror = torch.rand(n, device=device) < 0.5
        images = torch.where(mirror.view(n, 1, 1, 1), images.flip(3), images)
    return images.contiguous()


class BatchAugment:
    """Turns a uint8 batch and its labels into the model's input and the loss target."""

    def __init__(self, recipe: Recipe, preprocess: Preprocess, num_classes: int, device: torch.device,
                 pixel_ops: bool = True) -> None:
        """``pixel_ops=False``: the batch arrives transformed and normalised (ImageFolder); only mix it."""
        self.pixel_ops = pixel_ops
        self.padding = recipe.crop_padding
        self.flip = recipe.hflip
        self.preprocess = preprocess
        self.randaugment = None
        if recipe.randaugment_n > 0 and pixel_ops:
            from torchvision.transforms import v2

            # 31 bins: magnitude M is M/30 of each op's range, as the tiny-cifar recipes define it
            self.randaugment = v2.RandAugment(num_ops=recipe.randaugment_n, magnitude=recipe.randaugment_m,
                                              num_magnitude_bins=31)
        self.mixup = None
        if recipe.cutmix_alpha > 0 or recipe.mixup_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                               prob=recipe.mix_prob, switch_prob=recipe.mix_switch_prob,
                               label_smoothing=recipe.label_smoothing, num_classes=num_classes)
        self.erasing = None
        if recipe.random_erasing > 0 and pixel_ops:
            from timm.data.random_erasing import RandomErasing

            self.erasing = RandomErasing(recipe.random_erasing, mode="pixel", device=str(device))

    @property
    def soft_targets(self) -> bool:
        """True when targets are class distributions (CutMix/MixUp), not indices."""
        return self.mixup is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images
        if self.pixel_ops:
            images = random_crop_flip(images, self.padding, self.flip)
            if self.randaugment is not None:
                images = torch.stack([self.randaugment(img) for img in images])
            x = self.preprocess(images)
            if self.erasing is not None:
                x = self.erasing(x)
        if self.mixup is not None:
            x, labels = self.mixup(x, labels)
        return x, labels
