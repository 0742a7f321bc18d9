"""Fine-tuning a BERT with a head on labeled sequences, through the shared loop (sslflow.train.fit), and, by
`text.finetune.method`, on the unlabeled pool too.

- supervised: the labeled budget only. Batches are (ids, attention mask, labels, weights); the task decides
  the loss and what labels mean.
- fixmatch (Sohn et al., NeurIPS 2020, https://arxiv.org/abs/2001.07685): continued from the supervised
  model, each step adds pool sequences, pseudo-labeled from a weak view and learned from a strong one
  (sslflow.text.views). Documents only: the pool (train documents and the unlabeled corpus) is chunk ids, never
  labels.
"""

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

from sslflow import semisup
from sslflow.config import Optim
from sslflow.distributed import shard
from sslflow.errors import SslflowError
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import Runtime
from sslflow.text import views
from sslflow.text.config import TextFinetune, TextFixMatch
from sslflow.text.encode import chunk_documents
from sslflow.train import Log, fit

# (logits, labels, weights) -> the batch's scalar loss
Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def fit_steps(cfg: TextFinetune, sequences: int) -> int:
    """Optimizer steps of one supervised fit: `cfg.steps`, or `cfg.epochs` passes over `sequences` labeled
    sequences (chunks for documents, sentences for NER) in batches of `cfg.batch_size` (all ranks together), so
    the length follows the budget."""
    return cfg.steps if cfg.epochs is None else cfg.epochs * math.ceil(sequences / cfg.batch_size)


def train(
    model: torch.nn.Module,
    ids: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    loss: Loss,
    optim: Optim,
    encoder_lr_scale: float,
    steps: int,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> torch.nn.Module:
    """Fit `model` for `steps` steps (see fit_steps) on ids (N, L), labels (N,) or (N, L), weights (N,).
    `loss(logits, labels, weights)`. `batch_size` is per rank: under torchrun each rank takes its shard of one
    shared shuffled order."""
    loader = _loader(_labeled(ids, labels, weights), batch_size, generator)
    optimizer = _optimizer(model, optim, encoder_lr_scale)

    def step(batch) -> torch.Tensor:
        x, mask, y, w = batch
        return loss(model(x, mask).float(), y, w)

    fit(
        model=model, step=step, loader=loader, optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, steps, len(loader)), epochs=math.ceil(steps / len(loader)),
        runtime=runtime, log=log, max_steps=steps, prefix=prefix,
    )
    return model.eval()


def _labeled(ids: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> TensorDataset:
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    return TensorDataset(
        ids_t, ids_t != 0, torch.as_tensor(labels), torch.as_tensor(weights, dtype=torch.float32)
    )


def _loader(data: Dataset, batch_size: int, generator: torch.Generator) -> DataLoader:
    sampler = shard(RandomSampler(data, generator=generator))  # the same generator seed on every rank
    return DataLoader(
        data, batch_size=min(batch_size, len(sampler)), sampler=sampler, drop_last=len(sampler) > batch_size
    )


def _optimizer(model: torch.nn.Module, optim: Optim, encoder_lr_scale: float) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.head.parameters())},
        {"params": list(model.bert.parameters()), "lr_scale": encoder_lr_scale},
    ]
    return build_optimizer(groups, optim)


def unlabeled_pool(tokenizer, texts: list[str], encoding: dict, source: str) -> np.ndarray:
    """The unlabeled pool for FixMatch: every text's chunks as token ids (M, L); texts only, so no label is read.
    `source` names where the texts came from in the error when there are none."""
    pool, _ = chunk_documents(tokenizer, texts, encoding["max_length"], encoding["stride"])
    if len(pool) == 0:
        raise SslflowError(f"params key 'text.finetune.method' is fixmatch, but the unlabeled pool {source} is empty")
    return pool


def fixmatch(
    model: torch.nn.Module,
    labeled: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool: np.ndarray,
    *,
    cfg: TextFixMatch,
    specials: views.Specials,
    loss: Loss,
    optim: Optim,
    encoder_lr_scale: float,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """`cfg.steps` FixMatch steps on `model` (trained in place): per step `batch_size` labeled sequences
    (ids, labels, weights as `train` takes them) and `cfg.mu` times as many pool sequences, ids (P, L) only.
    Returns the model and the mask rate: the share of pool sequences that gave a pseudo-label."""
    labeled_loader = _loader(_labeled(*labeled), batch_size, generator)
    pool_ids = TensorDataset(torch.as_tensor(np.asarray(pool), dtype=torch.long))
    pool_loader = _loader(pool_ids, cfg.mu * batch_size, generator)
    rate = semisup.MaskRate()

    def weak(ids: torch.Tensor) -> torch.Tensor:
        return views.mask_tokens(ids, cfg.weak_mask, specials.mask, specials.kept)

    def strong(ids: torch.Tensor) -> torch.Tensor:
        deleted = views.delete_tokens(ids, cfg.strong_delete, specials.kept, specials.pad)
        return views.mask_tokens(deleted, cfg.strong_mask, specials.mask, specials.kept)

    def step(batch) -> torch.Tensor:
        (x, _, y, w), (u,) = batch  # x: (B, L) labeled ids, u: (U, L) pool ids
        # one pass over (B + 2U, L), so the head's BatchNorm sees all three together; row i of the weak and
        # strong blocks is pool sequence i. The labeled ids stay clean, as in supervised `train`.
        ids = torch.cat([x, weak(u), strong(u)])
        logits = model(ids, ids != specials.pad).float()
        logits_x, logits_weak, logits_strong = logits.split([len(x), len(u), len(u)])
        unlabeled, mask = semisup.fixmatch_loss(logits_weak, logits_strong, cfg.threshold)
        rate.add(mask)
        return loss(logits_x, y, w) + cfg.weight * unlabeled

    optimizer = _optimizer(model, optim, encoder_lr_scale)
    fit(
        model=model, step=step, loader=semisup.Paired(labeled_loader, pool_loader, cfg.steps),
        optimizer=optimizer, scheduler=build_schedule(optimizer, optim, cfg.steps, cfg.steps), epochs=1,
        runtime=runtime, log=log, max_steps=cfg.steps, prefix=prefix,
    )
    log({f"{prefix}/mask_rate": rate.value}, cfg.steps)
    return model.eval(), {"mask_rate": rate.value}


def fit_method(
    model: torch.nn.Module,
    labeled: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool: np.ndarray | None,
    *,
    cfg: TextFinetune,
    specials: views.Specials,
    loss: Loss,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, float]]:
    """The supervised model, `cfg.method`'s model (the same one for supervised) and the method's statistics.
    fixmatch trains a copy of the supervised model, so both can be reported."""
    common = dict(loss=loss, optim=cfg.optim, encoder_lr_scale=cfg.encoder_lr_scale, batch_size=batch_size,
                  runtime=runtime, log=log, generator=generator)
    steps = fit_steps(cfg, len(labeled[0]))
    supervised = train(model, *labeled, steps=steps, prefix=prefix, **common)
    if cfg.method == "supervised":
        return supervised, supervised, {}
    model, stats = fixmatch(
        copy.deepcopy(supervised).train(), labeled, pool, cfg=cfg.fixmatch, specials=specials,
        prefix=f"{prefix}/fixmatch", **common,
    )
    return supervised, model, stats


@torch.no_grad()
def probabilities(
    model: torch.nn.Module, ids: np.ndarray, runtime: Runtime, batch_size: int = 64
) -> np.ndarray:
    """softmax(model(ids)) in eval mode: (N, K) for sequence heads, (N, L, K) for token heads."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        x = torch.as_tensor(np.asarray(ids[i : i + batch_size]), dtype=torch.long, device=runtime.device)
        with runtime.autocast():
            out.append(torch.softmax(model(x, x != 0).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
