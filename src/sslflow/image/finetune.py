"""Fitting a classifier on the labeled budget, then, by `finetune.method`, on the unlabeled pool too.

- supervised: the labeled budget only.
- self-training (Lee, 2013, "Pseudo-Label"; Xie et al., 2020, "Noisy Student"): a trained model labels the
  pool, its confident predictions join the labeled set with a weight, and a fresh student trains on both,
  with augmentation as the noise.
- fixmatch, distill: sslflow.semisup, each step a labeled batch and a pool batch.
Every method starts from the supervised model, so a stage fits that once and reports both. Pool labels are
never read: the pool is images only.
"""

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

from sslflow import semisup
from sslflow.config import Augment, Distill, Finetune, FinetuneMethod, FixMatch, Optim
from sslflow.distributed import shard
from sslflow.heads import Classifier
from sslflow.image import batch_views
from sslflow.image.datasets import Images, LabeledImages, SoftLabeledImages
from sslflow.image.embed import apply
from sslflow.image.views import augment, normalize
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import Runtime
from sslflow.train import Log, fit


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
    head_epochs: int = 0,
) -> Classifier:
    """`epochs` epochs on the labeled images; with `head_epochs`, the head alone first (encoder frozen).

    Linear probing, then fine-tuning (LP-FT, Kumar et al., ICLR 2022): a random head's gradients distort the
    pretrained features early in fine-tuning; a head fitted first keeps them, which matters most with few labels.
    """
    data = LabeledImages(images, labels, augment(augment_cfg, tuple(images.shape[-2:])), weights)
    loader = _loader(data, batch_size, runtime, generator)
    frozen = model.freeze_encoder
    for phase_epochs, phase_frozen, phase in ((head_epochs, True, "/head"), (epochs, frozen, "")):
        if phase_epochs == 0 or (phase and frozen):  # a frozen model has no second phase
            continue
        model.freeze(phase_frozen)
        optimizer = _optimizer(model, optim, encoder_lr_scale)
        fit(
            model=model, step=_weighted_ce(model), loader=loader, optimizer=optimizer,
            scheduler=build_schedule(optimizer, optim, phase_epochs * len(loader), len(loader)), epochs=phase_epochs,
            runtime=runtime, log=log, prefix=prefix + phase,
        )
    model.freeze(frozen)
    return model.eval()


def _loader(data, batch_size: int, runtime: Runtime, generator: torch.Generator) -> DataLoader:
    sampler = shard(RandomSampler(data, generator=generator))  # under torchrun, this rank's share
    return DataLoader(
        data, batch_size=min(batch_size, len(sampler)), sampler=sampler, drop_last=len(sampler) > batch_size,
        generator=generator, num_workers=runtime.num_workers, pin_memory=runtime.pin_memory,
        persistent_workers=runtime.num_workers > 0,  # hundreds of short epochs: don't respawn workers each time
    )


def _optimizer(model: Classifier, optim: Optim, encoder_lr_scale: float) -> torch.optim.Optimizer:
    groups = [{"params": list(model.head.parameters())}]
    if not model.freeze_encoder:
        groups.append({"params": list(model.encoder.parameters()), "lr_scale": encoder_lr_scale})
    return build_optimizer(groups, optim)


def _fit_paired(
    model: Classifier,
    step,
    labeled: DataLoader,
    pool: DataLoader,
    steps: int,
    *,
    optim: Optim,
    encoder_lr_scale: float,
    runtime: Runtime,
    log: Log,
    prefix: str,
) -> Classifier:
    """`steps` steps of `step` over (labeled batch, pool batch) pairs, as one epoch of the shared loop."""
    optimizer = _optimizer(model, optim, encoder_lr_scale)
    fit(
        model=model, step=step, loader=semisup.Paired(labeled, pool, steps), optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, steps, steps), epochs=1, runtime=runtime, log=log, prefix=prefix,
    )
    return model.eval()


def fixmatch(
    model: Classifier,
    labeled: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    cfg: FixMatch,
    augment_cfg: Augment,
    optim: Optim,
    encoder_lr_scale: float,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> tuple[Classifier, dict[str, float]]:
    """Consistency training of `model` (FixMatch): per step `batch_size` labeled images and `mu` times as many
    pool images; every view is made on the device (sslflow.image.batch_views): the weak one from `augment_cfg`."""
    images, labels = labeled
    labeled_loader = _loader(LabeledImages(images, labels, normalize()), batch_size, runtime, generator)
    pool_loader = _loader(Images(pool, normalize()), cfg.mu * batch_size, runtime, generator)
    rate = semisup.MaskRate()
    weak, strong = batch_views.weak(augment_cfg), batch_views.strong(cfg.strong)
    step = semisup.fixmatch_step(model, weak, strong, cfg.threshold, cfg.weight, rate)
    model = _fit_paired(
        model, step, labeled_loader, pool_loader, cfg.steps, optim=optim, encoder_lr_scale=encoder_lr_scale,
        runtime=runtime, log=log, prefix=prefix,
    )
    log({f"{prefix}/mask_rate": rate.value}, cfg.steps)
    return model, {"mask_rate": rate.value}  # the share of pool images that gave a pseudo-label


def distill(
    teacher: torch.nn.Module,
    student: Classifier,
    labeled: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    cfg: Distill,
    augment_cfg: Augment,
    optim: Optim,
    encoder_lr_scale: float,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> Classifier:
    """Self-distillation (SimCLRv2): the teacher's soft labels of the (clean) pool images, at
    `cfg.temperature`, taught to `student` on weak views, with the labeled loss weighted by `cfg.labeled_weight`."""
    images, labels = labeled
    targets = semisup.soft_targets(torch.from_numpy(apply(teacher, pool, runtime)), cfg.temperature)
    labeled_loader = _loader(LabeledImages(images, labels, normalize()), batch_size, runtime, generator)
    pool_loader = _loader(SoftLabeledImages(pool, normalize(), targets), cfg.mu * batch_size, runtime, generator)
    step = semisup.distill_step(student, batch_views.weak(augment_cfg), cfg.temperature, cfg.labeled_weight)
    return _fit_paired(
        student, step, labeled_loader, pool_loader, cfg.steps, optim=optim, encoder_lr_scale=encoder_lr_scale,
        runtime=runtime, log=log, prefix=prefix,
    )


def predict_proba(model: torch.nn.Module, images: np.ndarray, runtime: Runtime) -> np.ndarray:
    return torch.softmax(torch.from_numpy(apply(model, images, runtime)), dim=1).numpy()


def self_train(
    model: Classifier,
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
    """From `model`, fitted to the labeled set, each round relabels the pool and fits a fresh `make_model()`.

    `train(model, images, labels, weights, epochs=..., prefix=...)` fits one model. Returns the last model and
    per-round statistics (how many pool images were pseudo-labeled, and their mean confidence).
    """
    images, labels = labeled
    history = []
    for r in range(1, rounds + 1):
        proba = predict_proba(model, pool, runtime)
        keep = proba.max(1) >= threshold
        stats = {
            "pseudo_labeled": float(keep.sum()),
            "pseudo_confidence": float(proba.max(1)[keep].mean()) if keep.any() else 0.0,
        }
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


def fit_method(
    method: FinetuneMethod,
    make_model: Callable[[], Classifier],
    labeled: tuple[np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    cfg: Finetune,
    train: Callable[..., Classifier],
    teacher: torch.nn.Module | None,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> tuple[Classifier, Classifier, dict[str, float]]:
    """The supervised model, the `method`'s model (the same one for supervised) and the method's statistics.

    `train(model, images, labels, weights, epochs=..., prefix=...)` fits on labels (see self_train); distill
    learns from `teacher`, or from the supervised model when it is None.
    """
    images, labels = labeled
    supervised = train(make_model(), images, labels, None, prefix=f"{prefix}/supervised")
    common = dict(
        augment_cfg=cfg.augment, optim=cfg.optim, encoder_lr_scale=cfg.encoder_lr_scale, batch_size=batch_size,
        runtime=runtime, log=log, generator=generator, prefix=f"{prefix}/{method}",
    )
    if method == "supervised":
        return supervised, supervised, {}
    if method == "self-training":
        model, history = self_train(
            supervised, make_model, labeled, pool,
            rounds=cfg.pseudo_label_rounds, threshold=cfg.pseudo_label_threshold, weight=cfg.pseudo_label_weight,
            pseudo_epochs=cfg.pseudo_label_epochs, train=train, runtime=runtime, log=log, prefix=f"{prefix}/{method}",
        )
        return supervised, model, {f"round{i + 1}_{k}": v for i, h in enumerate(history) for k, v in h.items()}
    if method == "fixmatch":
        return supervised, *fixmatch(copy.deepcopy(supervised).train(), labeled, pool, cfg=cfg.fixmatch, **common)
    model = distill(supervised if teacher is None else teacher, make_model(), labeled, pool, cfg=cfg.distill, **common)
    return supervised, model, {}
