"""Self-supervised objectives. They take tensors only."""

import torch
import torch.nn.functional as F

from sslflow import distributed


def ntxent(z0: torch.Tensor, z1: torch.Tensor, temperature: float, gather: bool = False) -> torch.Tensor:
    """NT-Xent, the normalized temperature-scaled cross entropy of SimCLR (Chen et al., 2020, eq. 1).

    z0, z1: (B, D), row i of each is a view of the same image. Every other of the 2B - 2 embeddings in the
    batch is a negative. Returns the mean over all 2B anchors.

    With `gather` under torch.distributed, the batch is the global one: each rank's anchors are its own 2B
    rows, and the negatives are all 2 * B * world rows of every rank (gathered with gradient). The mean of
    the ranks' losses is then the single-process loss on the global batch, and DDP's averaging of the ranks'
    gradients gives its gradient. Every rank must pass the same B.
    """
    b = z0.shape[0]
    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    anchors = torch.cat([z0, z1])  # (2B, D), rows i and i+B are views of one image
    offset = 0
    if gather:
        z0, z1 = distributed.all_gather(z0), distributed.all_gather(z1)  # (N, D), N = B * world
        offset = distributed.rank() * b  # where this rank's rows sit in them
    n = z0.shape[0]
    sim = anchors @ torch.cat([z0, z1]).T / temperature  # (2B, 2N) cosine similarities
    own = torch.arange(offset, offset + b, device=sim.device)  # anchor i's row among the N
    self_col = torch.cat([own, own + n])
    positive = torch.cat([own + n, own])
    sim[torch.arange(2 * b, device=sim.device), self_col] = float("-inf")  # k != i in the denominator
    return F.cross_entropy(sim, positive)
