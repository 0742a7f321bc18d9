"""Heads that sit on an encoder's embeddings."""

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """SimCLR's MLP g(.): the loss is computed on its output, the encoder's embedding is kept (Chen et al., 2020)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class Classifier(nn.Module):
    """Encoder plus a linear layer; `freeze_encoder` makes it a linear probe."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int, freeze_encoder: bool = False):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        self.freeze(freeze_encoder)

    def freeze(self, frozen: bool) -> None:
        self.freeze_encoder = frozen
        self.encoder.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.freeze_encoder:
            self.encoder.eval()  # frozen BatchNorm statistics too
        return self.head(self.encoder(x))
