"""Self-supervised objectives. They take tensors only."""

import torch
import torch.nn.functional as F


def ntxent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, the normalized temperature-scaled cross entropy of SimCLR (Chen et al., 2020, eq. 1).

    z0, z1: (B, D), row i of each is a view of the same image. Every other of the 2B - 2 embeddings in the
    batch is a negative. Returns the mean over all 2B anchors.
    """
    b = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)  # (2B, D), rows i and i+B are views of one image
    sim = z @ z.T / temperature  # (2B, 2B) cosine similarities
    sim.fill_diagonal_(float("-inf"))  # k != i in the denominator
    positive = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, positive)
