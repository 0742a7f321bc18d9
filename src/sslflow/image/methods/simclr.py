"""SimCLR (Chen et al., 2020, https://arxiv.org/abs/2002.05709) assembled from its parts:
two augmented views, an encoder f, a projection head g and the NT-Xent loss on g(f(x))."""

import torch
from torch import nn

from sslflow.heads import ProjectionHead
from sslflow.image.methods.losses import ntxent


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, proj_dim: int):
        super().__init__()
        self.backbone = backbone
        self.projection_head = ProjectionHead(feature_dim, feature_dim, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))


def simclr_step(model: nn.Module, temperature: float):
    """The training step: batch is [x0, x1], two views (B, C, H, W) of the same B images."""

    def step(batch) -> torch.Tensor:
        x0, x1 = batch
        z = model(torch.cat([x0, x1]))  # one pass, so BatchNorm sees both views together
        z0, z1 = z.chunk(2)
        return ntxent(z0.float(), z1.float(), temperature, gather=True)  # negatives from all ranks under torchrun

    return step
