"""Backbones that map images (B, C, H, W) to embeddings (B, feature_dim), rebuilt from a saved config."""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models import resnet18


@dataclass(frozen=True)
class EncoderConfig:
    arch: str
    in_channels: int
    width: int  # vit: the hidden size
    feature_dim: int  # vit: equal to width (the mean of the patch tokens)
    # vit only: the ViTMAE encoder's geometry
    image_size: int | None = None
    patch_size: int | None = None
    depth: int | None = None
    heads: int | None = None

    def to_dict(self) -> dict:
        # CNN configs stay as they were written before vit existed
        return {k: v for k, v in asdict(self).items() if v is not None}


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three stages of two 3x3 convs; two 2x poolings, then global average pooling. Fast on a CPU."""

    def __init__(self, in_channels: int, width: int, feature_dim: int):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(in_channels, w), _block(w, w), nn.MaxPool2d(2),
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), _block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _resnet18_cifar(in_channels: int, feature_dim: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem of the SimCLR paper (3x3 stride-1 conv, no max-pool)."""
    net = resnet18(num_classes=feature_dim)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def vit_mae_config(cfg: EncoderConfig, **overrides):
    """The transformers ViTMAEConfig of a vit encoder; `overrides` set the masking and the MAE decoder."""
    from transformers import ViTMAEConfig  # imported here, so CNN encoders (and their serving) need no transformers

    return ViTMAEConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.in_channels, hidden_size=cfg.width,
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.heads, intermediate_size=4 * cfg.width, **overrides,
    )


class ViTEncoder(nn.Module):
    """The encoder of a masked autoencoder (He et al., 2022) without masking: (B, C, H, W) -> (B, width), the mean
    of the patch tokens, which the MAE paper fine-tunes from."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        from transformers import ViTMAEModel

        self.vit = ViTMAEModel(vit_mae_config(cfg, mask_ratio=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.vit.embeddings.patch_embeddings.num_patches
        # ViTMAE shuffles patches by argsort(noise) even at mask_ratio 0: ascending noise keeps their order
        # and draws no random numbers, so embedding does not move the RNG
        noise = torch.arange(n, device=x.device, dtype=torch.float32).expand(len(x), n)
        tokens = self.vit(pixel_values=x, noise=noise).last_hidden_state  # (B, 1 + L, D), CLS first
        return tokens[:, 1:].mean(1)


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    if cfg.arch == "small_cnn":
        return SmallCNN(cfg.in_channels, cfg.width, cfg.feature_dim)
    if cfg.arch == "resnet18":
        return _resnet18_cifar(cfg.in_channels, cfg.feature_dim)
    if cfg.arch == "vit":
        return ViTEncoder(cfg)
    raise ValueError(f"unknown encoder arch {cfg.arch!r}")
