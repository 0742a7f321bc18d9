"""Augmented views of uint8 images (C, H, W), built from torchvision.transforms.v2.

SimCLR (Chen et al., 2020, https://arxiv.org/abs/2002.05709) learns by pulling two random views of one
image together. Its ImageNet recipe (crop, flip, colour jitter, blur) is adapted here to small images such as
digits: no horizontal flip (it changes a digit's meaning), mild affine warps, and random erasing.
"""

import torch
from torchvision.transforms import v2

from sslflow.config import Augment


def normalize() -> v2.Transform:
    """uint8 (C, H, W) -> float32 in [-1, 1]; the same for training, evaluation and serving."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])])


def augment(cfg: Augment, size: tuple[int, int]) -> v2.Transform:
    """One random view: uint8 (C, H, W) -> float32 (C, H, W) in [-1, 1]."""
    blur_kernel = 3 if min(size) < 32 else 5
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=(0.8, 1.25), antialias=True),
            v2.RandomAffine(degrees=cfg.rotation, translate=(cfg.translate, cfg.translate), shear=cfg.shear),
            v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast),
            v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 1.0))], p=cfg.blur_p),
            normalize(),
            v2.RandomErasing(p=cfg.erase_p, scale=(0.02, 0.15), value=-1.0),
        ]
    )


class TwoViews:
    """Callable returning [view0, view1] of one image, each drawn independently."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(image), self.transform(image)]
