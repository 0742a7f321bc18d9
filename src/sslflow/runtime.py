"""Device and precision, decided once at a stage's entry and passed down as objects."""

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from sslflow import distributed
from sslflow.config import Base
from sslflow.errors import SslflowError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast dtype; float32 means no autocast
    pin_memory: bool
    channels_last: bool
    compile: bool
    num_workers: int

    def autocast(self) -> AbstractContextManager:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device (and memory format); compiling is left to the caller's training step."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def pick_device(requested: str) -> torch.device:
    """`auto` is cuda, then mps, then cpu. On CUDA each torchrun worker takes the GPU of its LOCAL_RANK."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise SslflowError("params key 'base.device' is cuda, but no CUDA device is available")
        index = distributed.local_rank()
        if index >= torch.cuda.device_count():
            raise SslflowError(f"local rank {index} has no GPU: this node has {torch.cuda.device_count()}")
        return torch.device("cuda", index)
    if requested == "mps" and not torch.backends.mps.is_available():
        raise SslflowError("params key 'base.device' is mps, but MPS is not available")
    return torch.device(requested)


def resolve(base: Base) -> Runtime:
    """bf16 autocast on CUDA (where the GPU supports it) and fp32 elsewhere unless `precision` says otherwise;
    pinned memory and channels_last only where they help (CUDA)."""
    dev = pick_device(base.device)
    precision = base.precision
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if dev.type == "cuda":
        # TF32 for what runs in fp32 outside autocast; cuDNN picks the fastest kernels for fixed-size inputs.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(
        device=dev,
        dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        pin_memory=base.pin_memory and dev.type == "cuda",
        channels_last=base.channels_last and dev.type == "cuda",
        compile=base.compile,
        num_workers=base.num_workers,
    )


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a generator for samplers so data order is seeded too."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
