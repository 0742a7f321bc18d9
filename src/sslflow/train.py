"""The one training loop, shared by pretrain and finetune: they differ in model, loss and data only."""

import math
import os
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from sslflow import distributed
from sslflow.checkpoint import Checkpoints
from sslflow.faults import Interrupted, NonFiniteLoss, StopRequest, stop_on_signals
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


@dataclass
class Progress:
    """Where training is, and the epoch's running sums: what a checkpoint holds besides state_dicts and RNGs."""

    epoch: int = 0
    batch: int = 0  # batches of `epoch` done
    step: int = 0  # batches done in all
    loss_sum: float = 0.0  # over the epoch's finite losses
    n: int = 0
    wait: float = 0.0
    compute: float = 0.0
    nonfinite: int = 0  # consecutive non-finite losses, whose updates were skipped
    summary: dict = field(default_factory=dict)  # the last finished epoch's metrics


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
    checkpoints: Checkpoints | None = None,
    max_nonfinite: int = 1,
) -> dict[str, float]:
    """Run `epochs` epochs of `loss = step(batch)`; log step and epoch metrics under `prefix/`.

    With `checkpoints` (and a loader from sampling.resumable_loader), training resumes from the latest
    checkpoint, saves one every `checkpoints.every` steps, and on SIGTERM/SIGINT saves at the next step
    boundary and exits 128 + signal. A non-finite loss skips its update; `max_nonfinite` in a row stop training.
    Returns the last epoch's metrics, with the time split into waiting for data and computing.

    Under torchrun (sslflow.distributed.init), the step runs through DistributedDataParallel and the loader's
    sampler should be a distributed.shard: every rank trains on its share, the logged loss is the mean over
    ranks, samples/s counts all ranks, and only rank 0 is given `checkpoints` (the others get its state).
    """
    objects = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    sampler = getattr(loader, "sampler", None)
    p = Progress(**distributed.share(objects, checkpoints.restore(objects) if checkpoints else {}))
    run = distributed.parallel(model, step, runtime.device)  # `step` itself in one process
    main = distributed.is_main()
    last_step = max_steps if max_steps is not None else math.inf
    # Under torchrun every rank handles stop signals, so that all of them stop at the same step boundary.
    guard = stop_on_signals() if checkpoints or distributed.world_size() > 1 else nullcontext(StopRequest())
    # One bar for the whole fit (on a terminal, rank 0); each epoch's numbers go to `log`, and to the console
    # with SSLFLOW_VERBOSE=1.
    total = min(epochs * len(loader), last_step)
    bar = tqdm(
        total=total, initial=p.step, desc=prefix, leave=False, dynamic_ncols=True, disable=None if main else True
    )
    with guard as stop, bar:
        while p.epoch < epochs and p.step < last_step:
            model.train()
            if hasattr(sampler, "set_epoch"):  # the epoch's order; on a resume, without the batches already done
                sampler.set_epoch(p.epoch, p.batch * loader.batch_size)
            t = time.perf_counter()
            for batch in loader:
                t_batch = time.perf_counter()
                p.wait += t_batch - t
                batch = to_device(batch, runtime)
                with runtime.autocast():
                    loss = run(batch)
                # The mean over ranks, so every rank skips the same non-finite steps; it syncs the device, so the
                # compute time below is real.
                loss_value = distributed.mean(loss)
                p.step, p.batch = p.step + 1, p.batch + 1
                if math.isfinite(loss_value):
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    p.loss_sum, p.n, p.nonfinite = p.loss_sum + loss_value, p.n + 1, 0
                else:
                    p.nonfinite += 1
                    if p.nonfinite >= max_nonfinite:
                        raise _nonfinite(p, loss_value, prefix, checkpoints)
                scheduler.step()
                t = time.perf_counter()
                p.compute += t - t_batch
                log({f"{prefix}/loss": loss_value, f"{prefix}/lr": scheduler.get_last_lr()[0]}, p.step)
                bar.update()
                bar.set_postfix(epoch=f"{p.epoch + 1}/{epochs}", loss=f"{loss_value:.3f}", refresh=False)
                if p.batch == len(loader) or p.step >= last_step:
                    break
                _boundary(checkpoints, objects, p, stop)
            samples = p.batch * _batch_size(batch) * distributed.world_size()  # by all ranks
            summary = {
                f"{prefix}/epoch_loss": p.loss_sum / max(p.n, 1),
                f"{prefix}/data_wait_s": p.wait,
                f"{prefix}/compute_s": p.compute,
                f"{prefix}/samples_per_s": samples / max(p.wait + p.compute, 1e-9),
            }
            if runtime.device.type == "cuda":  # the most the caching allocator held for tensors so far
                summary[f"{prefix}/peak_memory_mib"] = torch.cuda.max_memory_allocated(runtime.device) / 2**20
            if on_epoch_end is not None:
                summary.update(on_epoch_end(p.epoch))
            log(summary, p.step)
            if main and os.environ.get("SSLFLOW_VERBOSE", "0") not in ("", "0"):
                numbers = " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in summary.items())
                tqdm.write(f"{prefix} epoch {p.epoch + 1}/{epochs} {numbers}")
            p = Progress(epoch=p.epoch + 1, step=p.step, nonfinite=p.nonfinite, summary=summary)
            # A checkpoint at the end of an epoch resumes at the start of the next.
            _boundary(checkpoints, objects, p, stop)
    return p.summary


def _boundary(checkpoints: Checkpoints | None, objects: dict, p: Progress, stop: StopRequest) -> None:
    """Between steps: save a checkpoint when due, and stop on a signal that any rank received."""
    signum = distributed.stop_signal(stop.signum)
    if checkpoints:
        checkpoints.at_boundary(objects, asdict(p), signum)
    elif signum is not None:  # a rank without checkpoints under torchrun
        raise Interrupted(signum)


def _nonfinite(p: Progress, loss_value: float, prefix: str, checkpoints: Checkpoints | None) -> NonFiniteLoss:
    kept = checkpoints.latest.payload if checkpoints and checkpoints.latest else None
    return NonFiniteLoss(
        f"{prefix}/loss was {loss_value} for {p.nonfinite} consecutive step(s), the last at step {p.step} "
        f"(epoch {p.epoch + 1}): training stopped" + (f"; the last good checkpoint is {kept}" if kept else "")
    )


def _batch_size(batch) -> int:
    while isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return int(batch.shape[0])
