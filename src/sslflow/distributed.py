"""torch.distributed under torchrun: data-parallel training with one process per device.

    torchrun --standalone --nproc_per_node 2 stages/image/pretrain.py

`init` is the one environment check, at a stage's entry: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK for
each worker. Without them there is one process and every helper here is a no-op, so the training loop and the
losses have no separate single-process path.
"""

import atexit
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_gather_single
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from sslflow.errors import SslflowError
from sslflow.state import get_state, set_state


def local_rank() -> int:
    """This worker's device index on its node (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device, nproc_per_node: int = 1) -> None:
    """Join the process group when started by torchrun; or, with `nproc_per_node` > 1 and no torchrun, replace
    this process by a standalone torchrun of the same script, so that `dvc repro` runs DDP unchanged."""
    if "WORLD_SIZE" not in os.environ and nproc_per_node > 1:
        sys.stdout.flush()
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}"]
        os.execv(sys.executable, [*torchrun, *sys.argv])
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend(device))  # env:// rendezvous: MASTER_ADDR/PORT come from torchrun
        # Left at exit, however the stage ends, so stages need no extra block around their body.
        atexit.register(dist.destroy_process_group)


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 writes outputs and logs; the other ranks only train."""
    return rank() == 0


def per_rank(batch_size: int, key: str) -> int:
    """`batch_size` is the global batch, split evenly over the ranks, so results do not depend on their number."""
    n = world_size()
    if batch_size % n:
        raise SslflowError(f"params key '{key}' is the global batch ({batch_size}); it must divide by the {n} ranks")
    return batch_size // n


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """(n, ...) on each rank -> (world * n, ...), rank r's rows at r * n; gradients flow back to every rank's
    input (summed over the ranks that used them). Every rank must pass the same shape."""
    if world_size() == 1:
        return x
    # The functional collective torch recommends over the deprecated torch.distributed.nn.functional.all_gather;
    # its backward is a reduce-scatter (sum), and it traces under torch.compile.
    return all_gather_single(x.contiguous(), 0, dist.group.WORLD)


def mean(x: torch.Tensor) -> float:
    """A scalar tensor averaged over ranks, as a float: every rank gets the same value (one device sync)."""
    if world_size() == 1:
        return x.item()
    total = x.detach().float().clone()
    dist.all_reduce(total)  # SUM: gloo has no AVG
    return total.item() / world_size()


def stop_signal(signum: int | None) -> int | None:
    """The stop signal any rank received, on every rank, so that all stop at the same step boundary."""
    if world_size() == 1:
        return signum
    flag = torch.tensor([signum or 0], device=_collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def share(objects: dict, progress: dict) -> dict:
    """Give every rank rank 0's `progress` and, if rank 0 resumed from a checkpoint (non-empty progress), the
    state of `objects` (name -> module, optimizer or scheduler). Only rank 0 reads checkpoints."""
    if world_size() == 1:
        return progress
    payload = [{"progress": progress} if is_main() else None]
    dist.broadcast_object_list(payload, src=0, device=_collective_device())
    progress = payload[0]["progress"]
    if progress:
        states = [{name: _to_cpu(get_state(obj)) for name, obj in objects.items()} if is_main() else None]
        dist.broadcast_object_list(states, src=0, device=_collective_device())
        if not is_main():
            for name, obj in objects.items():
                set_state(obj, states[0][name])
    return progress


def _to_cpu(tree):
    # Pickled CUDA tensors would be unpickled onto rank 0's device on every rank.
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


class _Step(nn.Module):
    """A training step as a module, so that DDP wraps the whole step whatever it calls inside: the model's
    forward, or parts of the model (an MLM's encoder and head)."""

    def __init__(self, model: nn.Module, step: Callable[[object], torch.Tensor]):
        super().__init__()
        self.model = model  # registered, so DDP finds the parameters the step uses
        self.step = step

    def forward(self, batch) -> torch.Tensor:
        return self.step(batch)


def ddp_options(device: torch.device) -> dict:
    """One process per device: DDP is told its device on CUDA, and none on CPU."""
    return {"device_ids": [device.index]} if device.type == "cuda" else {}


def sync_batchnorm(device: torch.device) -> bool:
    """BatchNorm statistics over the global batch ("global BN", SimCLR §2.2: per-device statistics let the
    model find its positives from local information). torch implements it for CUDA only."""
    return device.type == "cuda"


def parallel(
    model: nn.Module, step: Callable[[object], torch.Tensor], device: torch.device
) -> Callable[[object], torch.Tensor]:
    """`step` itself in one process; under torchrun, the step through DistributedDataParallel, which starts
    every rank from rank 0's parameters and averages the gradients over ranks in backward."""
    if world_size() == 1:
        return step
    if sync_batchnorm(device):
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place: the step and the caller keep their references
    return DistributedDataParallel(_Step(model, step), **ddp_options(device))


class Shard(Sampler):
    """Rank r's share of `sampler`'s order: its positions r, r + W, r + 2W, ... among the first W * (n // W).

    Every rank gets n // W items, so all run the same number of steps; with a per-rank batch of B / W, the
    ranks' k-th batches together are exactly the k-th batch of B a single process would take.
    `set_epoch(epoch, start)` starts the shard at its own position `start` (a resumed epoch).
    """

    def __init__(self, sampler: Sampler, rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.start = start

    def __len__(self) -> int:
        return len(self.sampler) // self.world_size

    def __iter__(self) -> Iterator:
        # Positions rank + W * k for k >= start, read as the sampler yields them (no list of the epoch).
        first, stop = self.rank + self.world_size * self.start, len(self) * self.world_size
        yield from itertools.islice(self.sampler, first, stop, self.world_size)


def shard(sampler: Sampler) -> Sampler:
    """This rank's Shard of `sampler`; the sampler itself in one process."""
    return sampler if world_size() == 1 else Shard(sampler, rank(), world_size())


class Silent:
    """What the other ranks hold instead of rank 0's tracking run: logging there does nothing."""

    run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        pass


def on_main(context: AbstractContextManager, otherwise=None) -> AbstractContextManager:
    """`context` on rank 0 (a tracking run, a checkpoint directory); elsewhere a context yielding `otherwise`."""
    return context if is_main() else nullcontext(otherwise)
