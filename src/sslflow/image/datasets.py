"""Torch datasets over uint8 image arrays (N, C, H, W): in memory, memory-mapped, or rows read on demand
(sslflow.image.npyrows)."""

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class Images(Dataset):
    """Unlabeled images through a transform (e.g. two SimCLR views)."""

    def __init__(self, images: np.ndarray, transform: Callable):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        # np.array copies the one row out (of a memory map, or a read-only buffer), so the file is never loaded
        return self.transform(torch.from_numpy(np.array(self.images[i])))


class LabeledImages(Images):
    """(transformed image, label, weight); the weight lets pseudo-labels count less than real ones."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable, weights: np.ndarray | None = None):
        super().__init__(images, transform)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.weights = torch.ones(len(labels)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)

    def __getitem__(self, i: int):
        return super().__getitem__(i), self.labels[i], self.weights[i]


class SoftLabeledImages(Images):
    """(transformed image, soft target (K,)): a teacher's probabilities for self-distillation."""

    def __init__(self, images: np.ndarray, transform: Callable, targets: torch.Tensor):
        super().__init__(images, transform)
        self.targets = targets

    def __getitem__(self, i: int):
        return super().__getitem__(i), self.targets[i]
