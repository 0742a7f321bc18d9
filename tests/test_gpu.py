"""What needs a real CUDA GPU: marked `gpu`, skipped without one (conftest), run by bench/gpu_check.py."""

import json
import shutil

import pytest
import torch
from conftest import make_project, run_stage

from sslflow.config import Augment, Base
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.image.batch_views import SimCLRView
from sslflow.image.methods.simclr import SimCLR, simclr_step
from sslflow.runtime import resolve
from sslflow.train import to_device

pytestmark = pytest.mark.gpu


def _model(rt):
    cfg = EncoderConfig("small_cnn", 1, 8, 16)
    return rt.prepare(SimCLR(build_encoder(cfg), cfg.feature_dim, 8))


def test_a_simclr_step_on_the_gpu_runs_in_bf16():
    rt = resolve(Base(device="cuda"))
    model = _model(rt)
    batch = to_device([torch.rand(4, 1, 16, 16).pin_memory(), torch.rand(4, 1, 16, 16).pin_memory()], rt)
    assert batch[0].device == rt.device and batch[0].is_contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        assert model(batch[0]).dtype == torch.bfloat16
        loss = simclr_step(model, 0.5)(batch)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_batch_views_on_the_gpu_match_the_cpu_draw_for_draw():
    """The random parameters are drawn on the CPU generator, so the same seed gives the same views on either
    device, up to a grey level where float rounding differs."""
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    torch.manual_seed(0)
    cpu = SimCLRView(Augment())(images)
    torch.manual_seed(0)
    gpu = SimCLRView(Augment())(images.cuda()).cpu()
    assert ((cpu - gpu).abs() > 2.5 / 127.5).float().mean() < 0.01


def test_a_compiled_step_matches_the_eager_step():
    rt = resolve(Base(device="cuda", precision="fp32"))
    model = _model(rt)
    batch = [torch.rand(8, 1, 16, 16, device=rt.device), torch.rand(8, 1, 16, 16, device=rt.device)]
    eager = simclr_step(model, 0.5)(batch)
    compiled = simclr_step(torch.compile(model), 0.5)(batch)
    assert torch.allclose(eager, compiled, rtol=1e-3, atol=1e-4)


def test_pretrain_on_the_gpu_makes_its_views_there_and_reports_memory(tmp_path):
    project = make_project(tmp_path / "p", {"base": {"device": "cuda"}})
    for stage in ("fetch", "preprocess", "pretrain"):
        run_stage(project, stage)
    summary = json.loads((project / "reports" / "pretrain.json").read_text())
    assert summary["pretrain/peak_memory_mib"] > 0 and summary["pretrain/epoch_loss"] > 0
    shutil.rmtree(project / "checkpoints")
