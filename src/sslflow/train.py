"""The one training loop, shared by pretrain and finetune: they differ in model, loss and data only."""

import time
from collections.abc import Callable, Iterable

import torch
from tqdm import tqdm

from sslflow.runtime import Runtime

Log = Callable[[dict[str, float], int], None]


def to_device(batch, runtime: Runtime):
    if isinstance(batch, torch.Tensor):
        batch = batch.to(runtime.device, non_blocking=runtime.pin_memory)
        if runtime.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, runtime) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, runtime) for k, v in batch.items()}
    return batch


def fit(
    *,
    model: torch.nn.Module,
    step: Callable[[object], torch.Tensor],
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    runtime: Runtime,
    log: Log,
    on_epoch_end: Callable[[int], dict[str, float]] | None = None,
    max_steps: int | None = None,
    prefix: str = "train",
) -> dict[str, float]:
    """Run `epochs` epochs of `loss = step(batch)`; log step and epoch metrics under `prefix/`.

    Returns the last epoch's metrics, with the time split into waiting for data and computing.
    """
    global_step = 0
    summary: dict[str, float] = {}
    for epoch in range(epochs):
        model.train()
        wait = compute = loss_sum = 0.0
        n = 0
        t = time.perf_counter()
        bar = tqdm(loader, desc=f"{prefix} {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True, disable=None)
        for batch in bar:
            t_batch = time.perf_counter()
            wait += t_batch - t
            batch = to_device(batch, runtime)
            with runtime.autocast():
                loss = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_value = loss.item()  # syncs the device, so compute time below is real
            global_step += 1
            loss_sum += loss_value
            n += 1
            t = time.perf_counter()
            compute += t - t_batch
            log({f"{prefix}/loss": loss_value, f"{prefix}/lr": scheduler.get_last_lr()[0]}, global_step)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if max_steps is not None and global_step >= max_steps:
                break
        summary = {
            f"{prefix}/epoch_loss": loss_sum / max(n, 1),
            f"{prefix}/data_wait_s": wait,
            f"{prefix}/compute_s": compute,
            f"{prefix}/samples_per_s": n * _batch_size(batch) / max(wait + compute, 1e-9),
        }
        if on_epoch_end is not None:
            summary.update(on_epoch_end(epoch))
        log(summary, global_step)
        tqdm.write(f"{prefix} epoch {epoch + 1}/{epochs} " + " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in summary.items()))
        if max_steps is not None and global_step >= max_steps:
            break
    return summary


def _batch_size(batch) -> int:
    while isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return int(batch.shape[0])
