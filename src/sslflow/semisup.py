"""Semi-supervised fine-tuning: the labeled budget and the unlabeled pool in every step.

- FixMatch (Sohn et al., NeurIPS 2020, https://arxiv.org/abs/2001.07685): a weak view of each pool image gives
  a pseudo-label where the model is confident (max probability >= threshold); the model learns to predict it
  from a strong view of the same image.
- Self-distillation (Chen et al., NeurIPS 2020, SimCLRv2, https://arxiv.org/abs/2006.10029): a fine-tuned
  teacher labels the pool with soft targets at a temperature; a fresh student learns them.

Both only ever see pool images, never pool labels. The losses take tensors only; `fixmatch_step` and
`distill_step` are the training steps that `train.fit` runs over a `Paired` loader.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


def fixmatch_loss(
    logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unlabeled term of FixMatch, and the mask of pool images that passed the threshold.

    logits_weak, logits_strong: (U, K), row i of both is the same pool image. The pseudo-label is the weak
    view's argmax (no gradient); the loss is the mean over all U rows, masked rows counting zero.
    """
    probs = torch.softmax(logits_weak.detach().float(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= threshold).float()
    per_image = F.cross_entropy(logits_strong.float(), pseudo, reduction="none")
    return (per_image * mask).mean(), mask


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLRv2 eq. 3: -sum_y P_T(y|x; tau) log P_S(y|x; tau), averaged over the batch.

    student_logits: (B, K); teacher_probs: (B, K), the teacher's softmax at the same temperature.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    return -(teacher_probs * log_student).sum(dim=1).mean()


def soft_targets(teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's P_T(y|x; tau): (N, K) logits -> (N, K) probabilities."""
    return torch.softmax(teacher_logits.float() / temperature, dim=1)


class Paired:
    """`steps` batches, each (labeled batch, pool batch); both loaders restart (reshuffled) when they run out.

    FixMatch's step pairs B labeled images with mu * B pool images; the labeled budget is small, so it is
    cycled many times per pass over the pool.
    """

    def __init__(self, labeled: DataLoader, pool: DataLoader, steps: int):
        self.labeled, self.pool, self.steps = labeled, pool, steps
        self.batch_size = labeled.batch_size

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator:
        labeled, pool = _forever(self.labeled), _forever(self.pool)
        for _ in range(self.steps):
            yield next(labeled), next(pool)


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


class MaskRate:
    """The running fraction of pool images above the threshold, for the log (FixMatch's "mask rate")."""

    def __init__(self):
        self.total, self.n = 0.0, 0

    def add(self, mask: torch.Tensor) -> None:
        self.total, self.n = self.total + float(mask.sum()), self.n + mask.numel()

    @property
    def value(self) -> float:
        return self.total / max(self.n, 1)


def fixmatch_step(
    model: nn.Module, weak: nn.Module, strong: nn.Module, threshold: float, weight: float, rate: MaskRate
):
    """batch: ((x (B, C, H, W), y (B,), w (B,)), u (U, C, H, W)), normalized images; the views are made here,
    on the device: weak(x), and weak(u) and strong(u), so row i of both is pool image i."""

    def step(batch) -> torch.Tensor:
        (x, y, w), u = batch
        x, u_weak, u_strong = weak(x), weak(u), strong(u)
        logits = model(torch.cat([x, u_weak, u_strong]))  # one pass, so BatchNorm sees all three together
        logits_x, logits_weak, logits_strong = logits.split([len(x), len(u_weak), len(u_strong)])
        labeled = (F.cross_entropy(logits_x.float(), y, reduction="none") * w).sum() / w.sum()
        unlabeled, mask = fixmatch_loss(logits_weak, logits_strong, threshold)
        rate.add(mask)
        return labeled + weight * unlabeled

    return step


def distill_step(model: nn.Module, view: nn.Module, temperature: float, labeled_weight: float):
    """batch: ((x (B, C, H, W), y (B,), w (B,)), (u (U, C, H, W), p_teacher (U, K))), normalized images; the
    student sees view(x) and view(u)."""

    def step(batch) -> torch.Tensor:
        (x, y, w), (u, p_teacher) = batch
        x, u = view(x), view(u)
        logits = model(torch.cat([x, u]))
        logits_x, logits_u = logits.split([len(x), len(u)])
        loss = distillation_loss(logits_u, p_teacher, temperature)
        if labeled_weight > 0:
            loss = loss + labeled_weight * (F.cross_entropy(logits_x.float(), y, reduction="none") * w).sum() / w.sum()
        return loss

    return step
