"""Fine-tuning a BERT with a head on labeled sequences, through the shared loop (sslflow.train.fit).

Batches are (ids, attention mask, labels, weights); the task decides the loss and what labels mean.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from sslflow.config import Optim
from sslflow.distributed import shard
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import Runtime
from sslflow.train import Log, fit


def train(
    model: torch.nn.Module,
    ids: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    optim: Optim,
    encoder_lr_scale: float,
    steps: int,
    batch_size: int,
    runtime: Runtime,
    log: Log,
    generator: torch.Generator,
    prefix: str,
) -> torch.nn.Module:
    """Fit `model` for `steps` steps on ids (N, L), labels (N,) or (N, L), weights (N,): a budget-independent
    length, so 5 and 50 labeled examples get the same number of updates. `loss(logits, labels, weights)`.
    `batch_size` is per rank: under torchrun each rank takes its shard of one shared shuffled order."""
    ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    data = TensorDataset(
        ids_t, ids_t != 0, torch.as_tensor(labels), torch.as_tensor(weights, dtype=torch.float32)
    )
    sampler = shard(RandomSampler(data, generator=generator))  # the same generator seed on every rank
    loader = DataLoader(
        data, batch_size=min(batch_size, len(sampler)), sampler=sampler, drop_last=len(sampler) > batch_size
    )
    optimizer = build_optimizer(
        [
            {"params": list(model.head.parameters())},
            {"params": list(model.bert.parameters()), "lr_scale": encoder_lr_scale},
        ],
        optim,
    )

    def step(batch) -> torch.Tensor:
        x, mask, y, w = batch
        return loss(model(x, mask).float(), y, w)

    fit(
        model=model, step=step, loader=loader, optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, steps, len(loader)), epochs=math.ceil(steps / len(loader)),
        runtime=runtime, log=log, max_steps=steps, prefix=prefix,
    )  # fmt: skip
    return model.eval()


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
