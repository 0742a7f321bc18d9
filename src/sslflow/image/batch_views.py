"""Random views of a whole batch at once, on the batch's device, each image with its own random parameters.

Semi-supervised fine-tuning augments several hundred pool images per step, twice; per-image
torchvision.transforms.v2 pipelines cost about 1.2 ms an image on one CPU core, more than the model's step.
As batch tensor ops (one affine_grid / grid_sample for the batch) the same kinds of change cost a few ms a
batch, on CPU or GPU. Images are float (B, C, H, W) in [-1, 1] (views.normalize); the background is -1.
`SimCLRView` is views.augment as such a batch op, so that pretraining on a GPU is not fed by CPU workers.
(torchvision.transforms.v2 given a batched tensor draws one set of random parameters for the whole batch:
every image would get the same crop, which SimCLR cannot learn from; hence these per-image draws.)
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

    def __init__(
        self,
        *,
        rotation: float,
        shear: float,
        zoom: tuple[float, float],
        translate: float,
        brightness: float,
        contrast: float,
        cutout: float = 0.0,
        cutout_p: float = 0.0,
    ):
        super().__init__()
        self.rotation, self.shear = math.radians(rotation), math.radians(shear)
        self.zoom, self.translate = zoom, translate
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
    )


def strong(cfg: StrongAugment) -> BatchAugment:
    """FixMatch's strong view for digits and other oriented images: large warps and cutout, never a flip."""
    return BatchAugment(
        rotation=cfg.rotation, shear=cfg.shear, zoom=cfg.zoom, translate=cfg.translate, brightness=cfg.brightness,
        contrast=cfg.contrast, cutout=cfg.cutout, cutout_p=cfg.cutout_p,
    )


class SimCLRView(nn.Module):
    """views.augment (`pretrain.augment`) on a uint8 batch (B, C, H, W): float views in [-1, 1], drawn from the
    same distributions as the per-image torchvision pipeline (tests/test_views.py compares them).

    Random resized crop and the affine warp are one sampling grid; then brightness and contrast (in a random
    order, as ColorJitter), Gaussian blur with probability `blur_p`, normalisation, and random erasing.
    """

    def __init__(self, cfg: Augment, ratio: tuple[float, float] = (0.8, 1.25)):
        super().__init__()
        self.cfg, self.log_ratio = cfg, (math.log(ratio[0]), math.log(ratio[1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c, x = self.cfg, images.float() / 255
        b, _, h, w = x.shape

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.empty(b, *shape).uniform_(lo, hi)

        # the crop (RandomResizedCrop), resized bilinearly
        half, centre = self._crop(b, h, w)
        theta = torch.cat([torch.diag_embed(half), centre[:, :, None]], 2)
        x = _levels(F.grid_sample(x, _grid(theta, x), align_corners=False))
        # the affine warp (RandomAffine about the centre, nearest pixel, black outside): output p = R·Sh·q + t
        angle, shear = torch.deg2rad(uniform(-c.rotation, c.rotation)), torch.deg2rad(uniform(-c.shear, c.shear))
        cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
        inverse = torch.stack([torch.stack([cos + tan * sin, sin - tan * cos], 1), torch.stack([-sin, cos], 1)], 1)
        side = torch.tensor([w, h], dtype=torch.float32)
        inverse = inverse * side[None, None, :] / side[None, :, None]  # in pixel units, as on a non-square image
        shift = 2 * (uniform(-c.translate, c.translate, 2) * side).round() / side  # whole pixels
        theta = torch.cat([inverse, -inverse @ shift[:, :, None]], 2)
        x = F.grid_sample(x, _grid(theta, x), mode="nearest", align_corners=False)
        brightness = uniform(1 - c.brightness, 1 + c.brightness).clamp(min=0)
        x = _jitter(x, brightness, uniform(1 - c.contrast, 1 + c.contrast).clamp(min=0))
        x = _levels(_blur(x, uniform(0.1, 1.0), torch.rand(b) < c.blur_p, 3 if min(h, w) < 32 else 5))
        return _erase(x * 2 - 1, torch.rand(b) < c.erase_p)

    def _crop(self, b: int, h: int, w: int, tries: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised half-sizes and centres (B, 2) of whole-pixel boxes drawn as RandomResizedCrop draws them:
        area fraction and log-aspect uniform, the first of `tries` draws that fits, else the whole image."""
        area = torch.empty(b, tries).uniform_(*self.cfg.crop_scale) * h * w
        aspect = torch.empty(b, tries).uniform_(*self.log_ratio).exp()
        size = torch.stack([(area * aspect).sqrt().round(), (area / aspect).sqrt().round()], -1)  # (B, tries, [w, h])
        side = torch.tensor([w, h], dtype=torch.float32)
        fits = (size <= side).all(-1)
        size = torch.where(fits.any(1)[:, None], size[torch.arange(b), fits.int().argmax(1)], side)
        corner = (torch.rand(b, 2) * (side - size + 1)).floor()
        return size / side, (2 * corner + size) / side - 1


def _grid(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.affine_grid(theta, list(x.shape), align_corners=False).to(x)


def _levels(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 grey levels that the per-image pipeline keeps until it normalises (it works on uint8)."""
    return (x * 255).round() / 255


def _floor_levels(x: torch.Tensor) -> torch.Tensor:
    """As a float result cast to uint8 (truncation), with a margin for float error."""
    return (x * 255 + 1e-3).floor() / 255


def _jitter(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """ColorJitter's brightness (a factor) and contrast (a blend with the mean grey level), each clamped to
    [0, 1] and cut to a grey level as on uint8, in a random order per image."""
    brightness, contrast = brightness.to(x)[:, None, None, None], contrast.to(x)[:, None, None, None]

    def bright(y: torch.Tensor) -> torch.Tensor:
        return _floor_levels((y * brightness).clamp(0, 1))

    def contrasted(y: torch.Tensor) -> torch.Tensor:
        if y.shape[1] == 1:
            grey = y.mean(1, keepdim=True)
        else:
            grey = (y * _LUMA.to(y)[None, :, None, None]).sum(1, keepdim=True)
        mean = grey.mean(dim=(2, 3), keepdim=True)
        return _floor_levels((mean + (y - mean) * contrast).clamp(0, 1))

    first = (torch.rand(x.shape[0]) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(first, contrasted(bright(x)), bright(contrasted(x)))


_LUMA = torch.tensor([0.2989, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights


def _blur(x: torch.Tensor, sigma: torch.Tensor, chosen: torch.Tensor, kernel: int) -> torch.Tensor:
    """A separable Gaussian blur (reflect padding, as torchvision's) of the chosen images, each its own sigma."""
    b, c, h, w = x.shape
    offsets = torch.arange(kernel, dtype=torch.float32) - kernel // 2
    weights = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    weights = (weights / weights.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x)  # (B*C, k)
    y = F.pad(x.reshape(1, b * c, h, w), (kernel // 2,) * 4, mode="reflect")
    y = F.conv2d(y, weights[:, None, None, :], groups=b * c)
    y = F.conv2d(y, weights[:, None, :, None], groups=b * c).reshape(b, c, h, w)
    return torch.where(chosen.to(x.device)[:, None, None, None], y, x)


def _erase(x: torch.Tensor, chosen: torch.Tensor, scale=(0.02, 0.15), ratio=(0.3, 3.3)) -> torch.Tensor:
    """RandomErasing(value=-1): one box of area fraction `scale` and aspect `ratio` per chosen image; a box
    that does not fit (RandomErasing tries 10 times) leaves the image as it is."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale) * h * w
    aspect = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    eh, ew = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()
    fits = (eh < h) & (ew < w) & chosen
    top = (torch.rand(b) * (h - eh + 1)).floor()
    left = (torch.rand(b) * (w - ew + 1)).floor()
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    inside = ((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None] & (
        (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    )[:, None, :]
    return x.masked_fill((inside & fits[:, None, None])[:, None].to(x.device), -1.0)
