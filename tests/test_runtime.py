"""Device and precision decisions. The CUDA paths run on CPU with the device decision monkeypatched; what
needs a real GPU is in test_gpu.py."""

import numpy as np
import pytest
import torch

from sslflow import distributed
from sslflow.config import Base
from sslflow.errors import SslflowError
from sslflow.image.datasets import Images
from sslflow.runtime import Runtime, pick_device, resolve
from sslflow.sampling import resumable_loader
from sslflow.train import to_device


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: set which accelerators it has. The cuDNN/TF32 flags resolve() sets are restored after."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32  # a property monkeypatch cannot restore
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    def have(cuda: int = 0, mps: bool = False, bf16: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    yield have
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


@pytest.mark.parametrize(
    "cuda,mps,expected",
    [(1, True, torch.device("cuda", 0)), (0, True, torch.device("mps")), (0, False, torch.device("cpu"))],
)
def test_auto_is_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert pick_device("auto") == expected


def test_params_override_the_choice(machine):
    machine(cuda=2, mps=True)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("mps") == torch.device("mps")


def test_each_torchrun_worker_takes_the_gpu_of_its_local_rank(machine, monkeypatch):
    machine(cuda=2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("cuda") == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(SslflowError, match="local rank 2 has no GPU"):
        pick_device("cuda")


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_asking_for_a_missing_accelerator_is_a_user_error(machine, device):
    machine(cuda=0, mps=False)
    with pytest.raises(SslflowError, match=f"'base.device' is {device}"):
        pick_device(device)


def test_cuda_runtime_is_bf16_pinned_and_channels_last(machine):
    machine(cuda=1)
    rt = resolve(Base())
    expected = (torch.device("cuda", 0), torch.bfloat16, True, True)
    assert (rt.device, rt.dtype, rt.pin_memory, rt.channels_last) == expected
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    ctx = rt.autocast()
    assert isinstance(ctx, torch.autocast) and (ctx.device, ctx.fast_dtype) == ("cuda", torch.bfloat16)


def test_cuda_without_bf16_and_params_choices(machine):
    machine(cuda=1, bf16=False)
    assert resolve(Base()).dtype == torch.float32  # pre-Ampere GPUs: fp32 rather than slow emulated bf16
    machine(cuda=1)
    rt = resolve(Base(precision="fp32", pin_memory=False, channels_last=False))
    assert (rt.dtype, rt.pin_memory, rt.channels_last) == (torch.float32, False, False)


def test_cpu_runtime_is_fp32_without_pinning(machine):
    machine(cuda=0)
    rt = resolve(Base(pin_memory=True, channels_last=True))
    assert (rt.device, rt.dtype, rt.pin_memory, rt.channels_last) == (torch.device("cpu"), torch.float32, False, False)
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocast_when_asked_for_on_cpu(machine):
    machine(cuda=0)
    rt = resolve(Base(precision="bf16"))
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def _cuda_runtime(pin_memory: bool = True) -> Runtime:
    return Runtime(
        torch.device("cuda", 0), torch.bfloat16, pin_memory, channels_last=True, compile=False, num_workers=0
    )


def test_batches_go_to_the_device_non_blocking_from_pinned_memory(monkeypatch):
    moves = []

    def to(self, *args, **kwargs):  # record the move; there is no GPU to move to
        moves.append((args, kwargs))
        return self

    monkeypatch.setattr(torch.Tensor, "to", to)
    images, labels = torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
    x, y = to_device([images, labels], _cuda_runtime())
    assert moves == [((torch.device("cuda", 0),), {"non_blocking": True})] * 2
    assert x.is_contiguous(memory_format=torch.channels_last) and y.shape == (4,)
    moves.clear()
    to_device({"input_ids": labels}, _cuda_runtime(pin_memory=False))
    assert moves == [((torch.device("cuda", 0),), {"non_blocking": False})]


def test_models_are_placed_on_the_device_in_channels_last(monkeypatch):
    moves = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moves.append((a, k)) or self)
    _cuda_runtime().prepare(torch.nn.Conv2d(1, 2, 3))
    assert moves == [((torch.device("cuda", 0),), {}), ((), {"memory_format": torch.channels_last})]


def test_loaders_pin_memory_on_cuda_only(machine):
    images = np.zeros((8, 1, 8, 8), dtype=np.uint8)
    data = Images(images, lambda x: x)
    assert resumable_loader(data, batch_size=4, seed=0, runtime=_cuda_runtime()).pin_memory
    machine(cuda=0)
    assert not resumable_loader(data, batch_size=4, seed=0, runtime=resolve(Base())).pin_memory


def test_distributed_backend_and_ddp_options_follow_the_device():
    cuda, cpu = torch.device("cuda", 1), torch.device("cpu")
    assert (distributed.backend(cuda), distributed.backend(cpu)) == ("nccl", "gloo")
    assert distributed.ddp_options(cuda) == {"device_ids": [1]} and distributed.ddp_options(cpu) == {}
    assert distributed.sync_batchnorm(cuda) and not distributed.sync_batchnorm(cpu)
