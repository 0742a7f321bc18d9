"""Data-parallel training on CPU: 2 gloo processes must compute what one process computes on the global batch."""

import os
import shutil
import socket
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import env_for, make_project, merge, run_stage
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from sslflow import distributed
from sslflow.config import Base
from sslflow.errors import SslflowError
from sslflow.image.methods.losses import ntxent
from sslflow.image.methods.simclr import simclr_step
from sslflow.runtime import resolve
from sslflow.sampling import EpochSampler
from sslflow.train import fit

WORLD = 2
B, D, TAU = 8, 5, 0.5  # global batch, embedding size, temperature
CPU = resolve(Base(device="cpu", num_workers=0))


def _embeddings():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)


def _pairs():
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(B, 6, generator=g), torch.randn(B, 6, generator=g))


def _fit(epochs: int, step_of=simclr_step, max_nonfinite: int = 1):
    """A linear projection trained by the shared loop on (x0, x1) pairs, global batch B: (model, logged losses)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    data = _pairs()
    loader = DataLoader(
        data, batch_size=distributed.per_rank(B, "batch_size"), sampler=distributed.shard(SequentialSampler(data))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    fit(
        model=model,
        step=step_of(model, TAU),
        loader=loader,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
        epochs=epochs,
        runtime=CPU,
        log=lambda m, s: losses.append(m["train/loss"]) if "train/loss" in m else None,
        max_nonfinite=max_nonfinite,
    )
    return model, losses


def _nan_on_rank1_first(model, tau):
    step, calls = simclr_step(model, tau), []

    def nan_once(batch):
        calls.append(1)
        loss = step(batch)
        return loss * float("nan") if distributed.rank() == 1 and len(calls) == 1 else loss

    return nan_once


def _worker(rank: int, port: int, expected: dict) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    distributed.init(torch.device("cpu"))
    assert distributed.world_size() == WORLD and distributed.is_main() == (rank == 0)
    rows = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
    tol = {"atol": 1e-5, "rtol": 0}

    # NT-Xent: each rank holds its rows of the global batch; negatives come from both ranks.
    z0, z1 = (z[rows].clone().requires_grad_() for z in _embeddings())
    loss = ntxent(z0, z1, TAU, gather=True)
    loss.backward()
    assert abs(distributed.mean(loss) - expected["loss"]) < 1e-5
    # Each rank's gradient sums the ranks' losses' gradients; DDP divides by the world size.
    torch.testing.assert_close(z0.grad / WORLD, expected["grad0"][rows], **tol)
    torch.testing.assert_close(z1.grad / WORLD, expected["grad1"][rows], **tol)

    # The shared loop under DDP: the same logged losses, gradients and weights as one process.
    model, losses = _fit(epochs=3)
    np.testing.assert_allclose(losses, expected["losses"], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.weight.grad, expected["weight_grad"], **tol)
    torch.testing.assert_close(model.weight.detach(), expected["weight"], **tol)

    # A non-finite loss on one rank is skipped by both (no rank waits for the other's backward).
    model, losses = _fit(epochs=2, step_of=_nan_on_rank1_first, max_nonfinite=2)
    assert np.isnan(losses[0]) and np.isfinite(losses[1])
    gathered = distributed.all_gather(model.weight.detach()[None])
    torch.testing.assert_close(gathered[0], gathered[1])

    # A stop signal on one rank stops every rank; rank 0's resumed state reaches the others.
    assert distributed.stop_signal(15 if rank == 0 else None) == 15
    assert distributed.stop_signal(None) is None
    torch.manual_seed(rank)
    module = torch.nn.Linear(3, 2)
    progress = distributed.share({"model": module}, {"step": 7} if rank == 0 else {})
    assert progress == {"step": 7}
    gathered = distributed.all_gather(module.weight.detach()[None])
    torch.testing.assert_close(gathered[0], gathered[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process():
    z0, z1 = (z.clone().requires_grad_() for z in _embeddings())
    loss = ntxent(z0, z1, TAU)
    loss.backward()
    model, losses = _fit(epochs=3)
    expected = {
        "loss": loss.item(),
        "grad0": z0.grad,
        "grad1": z1.grad,
        "losses": losses,
        "weight_grad": model.weight.grad,
        "weight": model.weight.detach(),
    }
    mp.spawn(_worker, args=(_free_port(), expected), nprocs=WORLD)


def test_gather_is_a_no_op_in_one_process():
    z0, z1 = _embeddings()
    assert torch.equal(ntxent(z0, z1, TAU, gather=True), ntxent(z0, z1, TAU))


def test_shards_together_make_the_single_process_batches():
    n, batch = 103, 8  # global batch 8 = 2 ranks x 4
    sampler = EpochSampler(n, seed=3)
    shards = [distributed.Shard(EpochSampler(n, seed=3), r, WORLD) for r in range(WORLD)]
    for s in [sampler, *shards]:
        s.set_epoch(2)
    single = list(sampler)
    per_rank = [list(s) for s in shards]
    assert len(per_rank[0]) == len(per_rank[1]) == len(shards[0]) == n // WORLD
    for k in range(n // batch):  # batch k of each rank together are batch k of one process
        together = per_rank[0][4 * k : 4 * k + 4] + per_rank[1][4 * k : 4 * k + 4]
        assert sorted(together) == sorted(single[batch * k : batch * (k + 1)])
    shards[1].set_epoch(2, start=5)  # a resumed epoch starts at the shard's own position
    assert list(shards[1]) == per_rank[1][5:]


def test_one_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    distributed.init(torch.device("cpu"))
    assert distributed.world_size() == 1 and distributed.is_main()
    sampler = SequentialSampler(range(5))
    assert distributed.shard(sampler) is sampler
    assert distributed.per_rank(6, "pretrain.batch_size") == 6
    step = simclr_step(torch.nn.Linear(2, 2), TAU)
    assert distributed.parallel(torch.nn.Linear(2, 2), step, torch.device("cpu")) is step


def test_nproc_per_node_relaunches_under_torchrun(monkeypatch):
    calls = []

    def execv(path, argv):
        calls.append(argv)
        raise SystemExit(0)  # execv never returns

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(sys, "argv", ["stages/image/pretrain.py"])
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit):
        distributed.init(torch.device("cpu"), nproc_per_node=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert calls == [[*torchrun, "stages/image/pretrain.py"]]
    monkeypatch.setenv("WORLD_SIZE", "1")  # already under torchrun: its settings win
    distributed.init(torch.device("cpu"), nproc_per_node=2)
    assert len(calls) == 1


def test_global_batch_must_divide_over_ranks(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    assert distributed.per_rank(256, "pretrain.batch_size") == 64
    with pytest.raises(SslflowError, match="pretrain.batch_size.*4 ranks"):
        distributed.per_rank(66, "pretrain.batch_size")


def _outputs(project) -> list[str]:
    paths = [p for d in ("models", "reports", "checkpoints") for p in (project / d).rglob("*") if p.is_file()]
    return sorted(str(p.relative_to(project)) for p in paths if not p.name.startswith("."))


def _runs(project, stage: str) -> list[tuple[str, str]]:
    """(run id, world size tag) of every MLflow run of `stage`."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(
            "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "JOIN tags s ON s.run_uuid = r.run_uuid "
            "WHERE s.key = 'sslflow.stage' AND s.value = ? AND t.key = 'sslflow.world_size'",
            (stage,),
        ).fetchall()


@pytest.mark.slow
def test_two_process_pretrain_and_finetune_write_the_single_process_layout(tmp_path):
    overrides = {"pretrain": {"max_steps": 3}}
    single = make_project(tmp_path / "single", overrides)
    run_stage(single, "fetch")
    run_stage(single, "preprocess")
    run_stage(single, "label")
    ddp = make_project(tmp_path / "ddp", {**overrides, "base": {"num_workers": 0, "nproc_per_node": 2}})
    for done in ("data", "reports"):  # what fetch and preprocess left
        shutil.copytree(single / done, ddp / done)
    for stage in ("pretrain", "finetune"):
        run_stage(single, stage)

    script = "stages/image/pretrain.py"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
    proc = subprocess.run(torchrun, cwd=ddp, env=env_for(ddp), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 rank(s) x 32 images = global batch 64" in proc.stdout
    finetune = run_stage(ddp, "finetune")  # base.nproc_per_node: 2 relaunches it under torchrun
    assert "2 rank(s) x 32 images = global batch 64" in finetune.stdout

    assert _outputs(ddp) == _outputs(single)
    assert [tag for _, tag in _runs(ddp, "pretrain")] == ["2"]  # one run, from rank 0 only
    assert [tag for _, tag in _runs(ddp, "finetune")] == ["2"]
    metrics = (ddp / "reports" / "pretrain_metrics.jsonl").read_text().splitlines()
    assert len([m for m in metrics if "pretrain/loss" in m]) == 3  # logged once per step, not once per rank


@pytest.mark.slow
def test_two_process_mlm_pretrain_and_text_finetune_write_the_single_process_layout(tmp_path):
    from test_text_stages import TINY as TEXT_TINY
    from test_text_stages import tiny_documents

    overrides = merge(TEXT_TINY, {"base": {"num_workers": 0}, "text": {"fetch": {"source": "csv", "path": "docs.csv"}}})
    single = make_project(tmp_path / "single", overrides)
    tiny_documents(single / "docs.csv")
    for stage in ("fetch", "preprocess", "label"):
        run_stage(single, stage, "text")
    ddp = make_project(tmp_path / "ddp", merge(overrides, {"base": {"nproc_per_node": 2}}))
    for done in ("data", "reports"):  # what fetch, preprocess and label left
        shutil.copytree(single / done, ddp / done)
    for stage in ("pretrain", "finetune"):
        run_stage(single, stage, "text")

    pretrain = run_stage(ddp, "pretrain", "text")  # base.nproc_per_node: 2 relaunches it under torchrun
    assert "2 rank(s) x 4 chunks = global batch 8" in pretrain.stdout
    finetune = run_stage(ddp, "finetune", "text")
    assert "2 rank(s) x 4 sequences = global batch 8" in finetune.stdout

    assert _outputs(ddp) == _outputs(single)
    assert [tag for _, tag in _runs(ddp, "pretrain")] == ["2"]  # one run, from rank 0 only
    assert [tag for _, tag in _runs(ddp, "finetune")] == ["2"]
    metrics = (ddp / "reports" / "pretrain_metrics.jsonl").read_text().splitlines()
    assert len([m for m in metrics if "pretrain/loss" in m]) == 4  # logged once per step, not once per rank
