"""A convolutional autoencoder (Hinton & Salakhutdinov, 2006, https://doi.org/10.1126/science.1127647; convolutional
as in Masci et al., 2011, https://doi.org/10.1007/978-3-642-21735-7_7): the encoder f compresses an image to its
embedding, a decoder g rebuilds the image from it, and the loss is the reconstruction's mean squared error."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvDecoder(nn.Module):
    """The mirror of encoders.SmallCNN: (B, in_dim) -> (B, C, H, W) in [-1, 1], the range of views.normalize().

    A linear map to a (4w, H/4, W/4) grid, then two 2x transposed-conv upsamplings; odd sizes are cropped.
    """

    def __init__(self, in_dim: int, out_channels: int, width: int, size: tuple[int, int]):
        super().__init__()
        self.size = size
        self.grid = (4 * width, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        w = width
        self.fc = nn.Linear(in_dim, math.prod(self.grid))
        self.net = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, out_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.net(self.fc(z).view(len(z), *self.grid))  # (B, C, 4 * ceil(H/4), 4 * ceil(W/4))
        return x[:, :, : self.size[0], : self.size[1]]


class Autoencoder(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, out_channels: int, width: int, size: tuple[int, int]):
        super().__init__()
        self.backbone = backbone
        self.decoder = ConvDecoder(feature_dim, out_channels, width, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(x))


def reconstruction_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch and every pixel of (x_hat - x)^2; x, x_hat: (B, C, H, W)."""
    return F.mse_loss(x_hat, x)


def autoencoder_step(model: nn.Module):
    """The training step: batch is one view (B, C, H, W); the target is the view itself."""

    def step(x: torch.Tensor) -> torch.Tensor:
        return reconstruction_mse(model(x).float(), x.float())

    return step


@torch.no_grad()
def show(model: Autoencoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows for a picture: the normalized images and their reconstructions, (n, C, H, W) each."""
    was_training = model.training
    model.eval()
    rows = {"original": x, "reconstruction": model(x)}
    model.train(was_training)
    return rows
