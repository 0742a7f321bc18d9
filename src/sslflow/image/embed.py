"""Embeddings and class probabilities in evaluation mode, batch by batch."""

import numpy as np
import torch

from sslflow.image.views import normalize
from sslflow.runtime import Runtime


@torch.no_grad()
def apply(model: torch.nn.Module, images: np.ndarray, runtime: Runtime, batch_size: int = 512) -> np.ndarray:
    """model(normalized images) in eval mode: uint8 (N, C, H, W) -> float32 (N, D)."""
    was_training = model.training
    model.eval()
    norm = normalize()
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.array(images[i : i + batch_size])  # a copy: a memmap's slice is read-only
        x = norm(torch.from_numpy(batch)).to(runtime.device)
        with runtime.autocast():
            out.append(model(x).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
