"""Random views of a whole batch at once, on the batch's device, each image with its own random parameters.

Semi-supervised fine-tuning augments several hundred pool images per step, twice; per-image
torchvision.transforms.v2 pipelines cost about 1.2 ms an image on one CPU core, more than the model's step.
As batch tensor ops (one affine_grid / grid_sample for the batch) the same kinds of change cost a few ms a
batch, on CPU or GPU. Images are float (B, C, H, W) in [-1, 1] (views.normalize); the background is -1.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sslflow.config import Augment, StrongAugment


class BatchAugment(nn.Module):
    """Per-image random affine warp (rotation, shear, zoom, shift), brightness and contrast, then cutout.

    zoom: the range of the magnification (1 = none, 1.2 = 20% larger); cutout: the largest side of the one
    square set to the background, as a fraction of the image side, applied with probability `cutout_p`.
    """

    def __init__(self, *, rotation: float, shear: float, zoom: tuple[float, float], translate: float,
                 brightness: float, contrast: float, cutout: float = 0.0, cutout_p: float = 0.0):  # fmt: skip
        super().__init__()
        self.rotation, self.shear, self.zoom, self.translate = math.radians(rotation), math.radians(shear), zoom, translate
        self.brightness, self.contrast, self.cutout, self.cutout_p = brightness, contrast, cutout, cutout_p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, dev = x.shape[0], x.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.empty(b, *shape).uniform_(lo, hi).to(dev)

        angle, shear = uniform(-self.rotation, self.rotation), uniform(-self.shear, self.shear)
        zoom = uniform(*self.zoom)
        # theta maps output coordinates to input coordinates (both in [-1, 1]): rotate, shear, then divide by zoom
        cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
        theta = torch.stack([torch.stack([cos, cos * tan - sin], 1), torch.stack([sin, sin * tan + cos], 1)], 1)
        theta = torch.cat([theta / zoom[:, None, None], 2 * uniform(-self.translate, self.translate, 2, 1)], 2)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x + 1, grid, padding_mode="zeros", align_corners=False) - 1  # outside: background -1
        # brightness scales the intensity in [0, 2]; contrast moves it towards (or away from) the image's mean
        out = (out + 1) * uniform(1 - self.brightness, 1 + self.brightness, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (mean + (out - mean) * uniform(1 - self.contrast, 1 + self.contrast, 1, 1, 1)).clamp(0, 2) - 1
        if self.cutout > 0 and self.cutout_p > 0:
            out = self._cutout(out)
        return out

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """DeVries and Taylor (2017): one square per image, side up to `cutout` of the image, set to -1."""
        b, _, h, w = x.shape
        side = (torch.rand(b) * self.cutout * min(h, w)).round()
        cy, cx = torch.rand(b) * h, torch.rand(b) * w
        rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
        inside_r = (rows - cy[:, None]).abs() <= side[:, None] / 2
        inside_c = (cols - cx[:, None]).abs() <= side[:, None] / 2
        hole = inside_r[:, :, None] & inside_c[:, None, :] & (torch.rand(b) < self.cutout_p)[:, None, None]
        return x.masked_fill(hole[:, None].to(x.device), -1.0)


def weak(cfg: Augment) -> BatchAugment:
    """The fine-tuning augmentation as a batch op: its crop scale (area) becomes a zoom of up to 1/sqrt(scale)."""
    return BatchAugment(
        rotation=cfg.rotation, shear=cfg.shear, zoom=(1.0, 1.0 / math.sqrt(cfg.crop_scale[0])), translate=cfg.translate,
        brightness=cfg.brightness, contrast=cfg.contrast,
    )  # fmt: skip


def strong(cfg: StrongAugment) -> BatchAugment:
    """FixMatch's strong view for digits and other oriented images: large warps and cutout, never a flip."""
    return BatchAugment(
        rotation=cfg.rotation, shear=cfg.shear, zoom=cfg.zoom, translate=cfg.translate, brightness=cfg.brightness,
        contrast=cfg.contrast, cutout=cfg.cutout, cutout_p=cfg.cutout_p,
    )  # fmt: skip
