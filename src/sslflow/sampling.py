"""Data order and augmentation as functions of (seed, epoch, position), so training resumes mid-epoch exactly.

A shuffling DataLoader draws each epoch's order from a generator whose state moves on every epoch, and
torchvision's random transforms draw from the global torch RNG of whichever process runs them; neither can be
rewound to the middle of an epoch. Here epoch e's permutation and one seed per position are drawn from
(seed, e), and each item is transformed under its own seed. Batch k of epoch e is then the same whatever ran
before it, with any number of workers.
"""

import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sslflow.distributed import shard
from sslflow.runtime import Runtime


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, item seed) pairs of epoch `epoch`, from position `start` on; `set_epoch` picks both.

    `len` is the whole epoch, so len(loader) stays the number of batches per epoch on a resumed epoch too.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        epoch_seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        g = torch.Generator().manual_seed(epoch_seed)
        order = torch.randperm(self.n, generator=g)
        seeds = torch.randint(0, 2**62, (self.n,), generator=g)
        # Pair by pair: two Python lists of the epoch would cost ~150 bytes per item, growing with the data.
        for index, item_seed in zip(order[self.start :].numpy(), seeds[self.start :].numpy(), strict=True):
            yield int(index), int(item_seed)


class Seeded(Dataset):
    """`dataset[index]` with torch's global RNG seeded by the item's seed, and restored afterwards, so the
    random transforms inside depend on the item alone and the caller's RNG stream is untouched."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the main process saves a checkpoint and needs its workers alive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def resumable_loader(
    dataset: Dataset, *, batch_size: int, seed: int, runtime: Runtime, drop_last: bool = True
) -> DataLoader:
    """A shuffling loader that `train.fit` can start at any (epoch, batch); under torchrun, over this rank's
    shard of each epoch's order, with `batch_size` per rank."""
    return DataLoader(
        Seeded(dataset), batch_size=batch_size, sampler=shard(EpochSampler(len(dataset), seed)), drop_last=drop_last,
        num_workers=runtime.num_workers, pin_memory=runtime.pin_memory, persistent_workers=runtime.num_workers > 0,
        worker_init_fn=_ignore_sigint,
        # Worker base seeds are drawn from this generator rather than torch's global RNG, which stays untouched.
        generator=torch.Generator().manual_seed(seed),
    )
