"""Fitting a classifier on the labeled budget, optionally self-trained on pseudo-labels of the unlabeled pool.

Self-training (Lee, 2013, "Pseudo-Label"; Xie et al., 2020, "Noisy Student"): a trained model labels the
pool, its confident predictions join the labeled set with a weight, and a fresh student trains on both,
with augmentation as the noise. Pool labels are never read.
"""

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from sslflow.config import Augment, Optim
from sslflow.datasets import LabeledImages
from sslflow.distributed import shard
from sslflow.embed import apply
from sslflow.heads import Classifier
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import Runtime
from sslflow.train import Log, fit
from sslflow.views import augment


def _weighted_ce(model: torch.nn.Module):
    def step(batch) -> torch.Tensor:
        x, y, w = batch
        return (F.cross_entropy(model(x).float(), y, reduction="none") * w).sum() / w.sum()

    return step


def train_classifier(
    model: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    *,
    augment_cfg: Augment,
    optim: Optim,
    encoder_lr_scale: float,
    epochs: int,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> Classifier:
    size = tuple(images.shape[-2:])
    data = LabeledImages(images, labels, augment(augment_cfg, size), weights)
    sampler = shard(RandomSampler(data, generator=generator))  # under torchrun, this rank's share
    loader = DataLoader(
        data, batch_size=min(batch_size, len(sampler)), sampler=sampler, drop_last=len(sampler) > batch_size,
        generator=generator, num_workers=runtime.num_workers, pin_memory=runtime.pin_memory,
        persistent_workers=runtime.num_workers > 0,  # hundreds of short epochs: don't respawn workers each time
    )  # fmt: skip
    groups = [{"params": list(model.head.parameters())}]
    if not model.freeze_encoder:
        groups.append({"params": list(model.encoder.parameters()), "lr_scale": encoder_lr_scale})
    optimizer = build_optimizer(groups, optim)
    total = epochs * len(loader)
    fit(
        model=model, step=_weighted_ce(model), loader=loader, optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, total, len(loader)), epochs=epochs, runtime=runtime,
        log=log, prefix=prefix,
    )  # fmt: skip
    return model.eval()


def predict_proba(model: torch.nn.Module, images: np.ndarray, runtime: Runtime) -> np.ndarray:
    return torch.softmax(torch.from_numpy(apply(model, images, runtime)), dim=1).numpy()


def self_train(
    make_model: Callable[[], Classifier],
    labeled: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    rounds: int,
    threshold: float,
    weight: float,
    pseudo_epochs: int,
    train: Callable[..., Classifier],
    runtime: Runtime,
    log: Log,
    prefix: str,
) -> tuple[Classifier, list[dict[str, float]]]:
    """Round 0 fits the labeled set; each further round relabels the pool and fits a fresh `make_model()`.

    `train(model, images, labels, weights, epochs=..., prefix=...)` fits one model. Returns the last model and
    per-round statistics (how many pool images were pseudo-labeled, and their mean confidence).
    """
    images, labels = labeled
    model = train(make_model(), images, labels, None, prefix=f"{prefix}/round0")
    history = []
    for r in range(1, rounds + 1):
        proba = predict_proba(model, pool, runtime)
        keep = proba.max(1) >= threshold
        stats = {"pseudo_labeled": float(keep.sum()), "pseudo_confidence": float(proba.max(1)[keep].mean()) if keep.any() else 0.0}
        history.append(stats)
        log({f"{prefix}/{k}": v for k, v in stats.items()}, r)
        if not keep.any():  # nothing confident to learn from: keep the current model
            break
        x = np.concatenate([images, pool[keep]])
        y = np.concatenate([labels, proba.argmax(1)[keep]])
        w = np.concatenate([np.ones(len(images)), np.full(int(keep.sum()), weight)])
        model = train(make_model(), x, y, w, epochs=pseudo_epochs, prefix=f"{prefix}/round{r}")
    return model, history


def clone_init(model: Classifier) -> Callable[[], Classifier]:
    """A factory of identical fresh copies, so every self-training round starts from the same init."""
    state = copy.deepcopy(model)
    return lambda: copy.deepcopy(state)
