"""Backbones that map images (B, C, H, W) to embeddings (B, feature_dim), rebuilt from a saved config."""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models import resnet18


@dataclass(frozen=True)
class EncoderConfig:
    arch: str
    in_channels: int
    width: int
    feature_dim: int

    def to_dict(self) -> dict:
        return asdict(self)


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
        )  # fmt: skip
        self.fc = nn.Linear(4 * w, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _resnet18_cifar(in_channels: int, feature_dim: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem of the SimCLR paper (3x3 stride-1 conv, no max-pool)."""
    net = resnet18(num_classes=feature_dim)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    if cfg.arch == "small_cnn":
        return SmallCNN(cfg.in_channels, cfg.width, cfg.feature_dim)
    if cfg.arch == "resnet18":
        return _resnet18_cifar(cfg.in_channels, cfg.feature_dim)
    raise ValueError(f"unknown encoder arch {cfg.arch!r}")
