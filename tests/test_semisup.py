"""Semi-supervised fine-tuning: FixMatch's and the distillation's losses against hand computations, the batch
views, the paired loader, and a few steps of each method on a tiny model."""

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sslflow import semisup
from sslflow.config import Finetune
from sslflow.encoders import SmallCNN
from sslflow.heads import Classifier
from sslflow.image import batch_views
from sslflow.image.finetune import clone_init, fit_method, predict_proba, train_classifier
from sslflow.runtime import Runtime


def test_fixmatch_loss_by_hand():
    # pool image 0: weak view confident in class 1 (p = e^3 / (e^3 + 2) = 0.909); image 1: not confident
    weak = torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, 0.0]])
    strong = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    loss, mask = semisup.fixmatch_loss(weak, strong, threshold=0.9)
    assert mask.tolist() == [1.0, 0.0]
    # cross-entropy of strong row 0 against class 1, averaged over both rows (the masked one counts zero)
    ce0 = -(0.0 - math.log(math.exp(2.0) + 2.0))
    assert loss.item() == pytest.approx(ce0 / 2)
    # above the second row's confidence (0.42) both count; a threshold above both masks everything
    assert semisup.fixmatch_loss(weak, strong, threshold=0.4)[1].tolist() == [1.0, 1.0]
    loss, mask = semisup.fixmatch_loss(weak, strong, threshold=0.95)
    assert mask.sum() == 0 and loss.item() == 0.0


def test_fixmatch_pairs_each_strong_view_with_its_own_weak_view():
    # swapping the strong rows changes which pseudo-label each is scored against
    weak = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    strong = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    paired, _ = semisup.fixmatch_loss(weak, strong, threshold=0.5)
    swapped, _ = semisup.fixmatch_loss(weak, strong.flip(0), threshold=0.5)
    assert paired.item() < 0.1 < swapped.item()


def test_fixmatch_pseudo_labels_carry_no_gradient():
    weak = torch.tensor([[0.0, 3.0]], requires_grad=True)
    strong = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss, _ = semisup.fixmatch_loss(weak, strong, threshold=0.5)
    loss.backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0


def test_distillation_loss_is_its_formula():
    torch.manual_seed(0)
    student, teacher_logits, tau = torch.randn(4, 5), torch.randn(4, 5), 2.0
    p_teacher = semisup.soft_targets(teacher_logits, tau)

    def p_student(i: int, k: int) -> float:
        return math.exp(student[i, k].item() / tau) / sum(math.exp(v / tau) for v in student[i].tolist())

    expected = np.mean([-sum(p_teacher[i, k].item() * math.log(p_student(i, k)) for k in range(5)) for i in range(4)])
    assert semisup.distillation_loss(student, p_teacher, tau).item() == pytest.approx(expected, rel=1e-5)
    # the student that equals the teacher is the minimum: the loss is the teacher's entropy
    entropy = -(p_teacher * p_teacher.log()).sum(1).mean()
    assert semisup.distillation_loss(teacher_logits, p_teacher, tau).item() == pytest.approx(entropy.item(), rel=1e-5)


def test_paired_cycles_the_small_loader():
    labeled = DataLoader(TensorDataset(torch.arange(3)), batch_size=2, shuffle=True)
    pool = DataLoader(TensorDataset(torch.arange(10)), batch_size=4, shuffle=True)
    batches = list(semisup.Paired(labeled, pool, steps=7))
    assert len(batches) == 7 and len(semisup.Paired(labeled, pool, steps=7)) == 7
    seen = torch.cat([b[0][0] for b in batches[:2]])
    assert sorted(seen.tolist()) == [0, 1, 2]  # one pass over the labeled set, then it starts again


def test_batch_views_identity_and_independence():
    x = torch.full((6, 1, 12, 12), -1.0)
    x[:, :, 4:8, 5:7] = 1.0
    ident = batch_views.BatchAugment(rotation=0, shear=0, zoom=(1, 1), translate=0, brightness=0, contrast=0)
    assert torch.allclose(ident(x), x, atol=1e-5)
    view = batch_views.strong(Finetune().fixmatch.strong)
    out = view(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])  # the same image, different random parameters per row
    warp = batch_views.BatchAugment(rotation=30, shear=0, zoom=(1, 1), translate=0, brightness=0, contrast=0)
    corners = warp(x)[:, :, 0, 0]
    assert torch.allclose(corners, torch.tensor(-1.0))  # what comes in from outside is background


def _tiny_classifier() -> Classifier:
    torch.manual_seed(0)
    return Classifier(SmallCNN(1, 4, 8), 8, 3)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 12x12 uint8 images: a bright square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 40, (n, 1, 12, 12)).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = [(1, 1), (1, 7), (7, 4)][c]
        x[i, 0, r : r + 4, col : col + 4] = 255
    return x, y


@pytest.mark.parametrize("method", ["fixmatch", "distill", "self-training"])
def test_a_pool_method_learns_and_reports(method):
    x, y = _blobs(30, 0)
    pool, pool_y = _blobs(200, 1)
    runtime = Runtime(
        torch.device("cpu"), torch.float32, pin_memory=False, channels_last=False, compile=False, num_workers=0
    )
    cfg = Finetune.model_validate(
        {"method": method, "epochs": 20, "batch_size": 16, "pseudo_label_epochs": 3, "pseudo_label_threshold": 0.5,
         "fixmatch": {"steps": 20, "threshold": 0.5},
         "distill": {"steps": 60}}
    )
    losses = []

    def log(metrics, step):
        losses.extend(v for k, v in metrics.items() if k.endswith("/loss") and method in k)

    gen = torch.Generator().manual_seed(0)

    def train(model, images, labels, weights, epochs=cfg.epochs, prefix=""):
        return train_classifier(
            model, images, labels, weights, augment_cfg=cfg.augment, optim=cfg.optim, encoder_lr_scale=1.0,
            epochs=epochs, batch_size=16, runtime=runtime, log=log, generator=gen, prefix=prefix,
        )

    supervised, model, stats = fit_method(
        method, clone_init(_tiny_classifier()), (x, y), pool, cfg=cfg, train=train, teacher=None, batch_size=16,
        runtime=runtime, log=log, generator=gen, prefix="t",
    )
    assert model is not supervised
    accuracy = (predict_proba(model, pool, runtime).argmax(1) == pool_y).mean()
    assert accuracy > 0.9  # the blobs are easy: the method kept what the labels taught
    if method != "self-training":
        assert np.mean(losses[-5:]) < np.mean(losses[:5])  # its own loss went down
    if method == "fixmatch":
        assert 0 < stats["mask_rate"] <= 1
