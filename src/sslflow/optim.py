"""Optimizer and learning-rate schedule from an `Optim` params group."""

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from sslflow.config import Optim


def build_optimizer(groups: list[dict], cfg: Optim) -> torch.optim.Optimizer:
    """`groups` are torch param groups; a group's own "lr_scale" multiplies cfg.lr."""
    groups = [{**g, "lr": cfg.lr * g.pop("lr_scale", 1.0)} for g in groups]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def build_schedule(optimizer: torch.optim.Optimizer, cfg: Optim, total_steps: int, steps_per_epoch: int) -> LambdaLR:
    """Linear warm-up for `warmup_epochs`, then cosine decay to zero (or constant)."""
    warmup = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return LambdaLR(optimizer, factor)


def schedule_warning(cfg: Optim, total_steps: int, steps_per_epoch: int, key: str) -> str | None:
    """A warning when the warm-up lasts as long as training (or longer): the learning rate is still rising at
    the last step and the decay never runs. `key` is the params group, e.g. "pretrain.optim"."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if cfg.warmup_epochs == 0 or warmup < total_steps:
        return None
    after = "the cosine decay never runs" if cfg.schedule == "cosine" else "the constant rate is never reached"
    return (
        f"{key}.warmup_epochs is {cfg.warmup_epochs} epoch(s) = {warmup} steps at {steps_per_epoch} steps an epoch, "
        f"but training stops after {total_steps} steps: the learning rate is still warming up at the last step and "
        f"{after}; lower {key}.warmup_epochs or train longer"
    )
