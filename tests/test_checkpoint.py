"""Checkpoints and the fault handling of `fit`, in process on a tiny model: resume parity, rotation, fallback,
refused pickles, a full disk, non-finite losses, stop signals, the lock and path checks."""

import dataclasses
import errno
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sslflow import checkpoint as checkpoint_module
from sslflow.artifacts import save_module
from sslflow.checkpoint import Checkpoints, fingerprint, read_payload, rng_state, set_rng_state
from sslflow.errors import SslflowError
from sslflow.faults import DiskFull, Interrupted, NonFiniteLoss
from sslflow.lock import exclusive
from sslflow.runtime import Runtime
from sslflow.safepaths import inside, param_dir
from sslflow.sampling import resumable_loader
from sslflow.train import fit

CPU = Runtime(torch.device("cpu"), torch.float32, pin_memory=False, channels_last=False, compile=False, num_workers=0)
EPOCHS, N, BATCH = 3, 40, 8  # 5 batches per epoch, 15 steps


class Noisy(Dataset):
    """Items with noise from torch's global RNG, as torchvision's random transforms draw it."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.arange(4.0) * i / N + 0.1 * torch.randn(4)


def train(directory: Path | None, *, every=3, keep=2, log=None, loss_at=None, max_nonfinite=1, workers=0):
    """A fresh tiny model trained by `fit`; dropout draws from the main RNG. Returns (model, summary, losses)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 / (1 + 0.1 * s))
    loader = resumable_loader(Noisy(), batch_size=BATCH, seed=0, runtime=dataclasses.replace(CPU, num_workers=workers))
    losses, calls = {}, [0]

    def step(x):
        calls[0] += 1
        loss = model(x).pow(2).mean()
        return loss * loss_at(calls[0]) if loss_at else loss

    def record(metrics, s):
        if "train/loss" in metrics:
            losses[s] = metrics["train/loss"]
        if log:
            log(s)

    kwargs = dict(model=model, step=step, loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=EPOCHS,
                  runtime=CPU, log=record, max_nonfinite=max_nonfinite)
    if directory is None:
        return model, fit(**kwargs), losses
    with Checkpoints(directory, every=every, keep=keep, fingerprint="fp") as checkpoints:
        return model, fit(**kwargs, checkpoints=checkpoints), losses


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def crash_at(step):
    def log(s):
        if s == step:
            raise RuntimeError("killed")

    return log


def digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def reference():
    return train(None)


def test_resume_after_a_crash_mid_epoch_is_bitwise_identical(reference, tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        train(tmp_path, log=crash_at(8))  # epoch 2, batch 3; the newest checkpoint is step 6
    model, summary, losses = train(tmp_path)
    ref_model, ref_summary, ref_losses = reference
    assert torch.equal(params(model), params(ref_model))
    assert summary["train/epoch_loss"] == ref_summary["train/epoch_loss"]
    assert sorted(losses) == list(range(7, 16)) and all(losses[s] == ref_losses[s] for s in losses)


def test_data_loader_workers_change_nothing_either(reference, tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        train(tmp_path, log=crash_at(8), workers=2)
    model, _, _ = train(tmp_path, workers=1)
    assert torch.equal(params(model), params(reference[0]))  # augmentation is seeded per item, not per worker


def test_checkpointing_does_not_change_training(reference, tmp_path):
    model, _, _ = train(tmp_path, every=1)
    assert torch.equal(params(model), params(reference[0]))


def test_the_newest_k_are_kept(tmp_path):
    train(tmp_path, every=3, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000012.json", "step-00000012.pt", "step-00000015.json", "step-00000015.pt",
    ]


def test_a_failed_marker_write_keeps_the_older_checkpoints(tmp_path, monkeypatch, capsys):
    real = checkpoint_module.write_json

    def fail_at_step_6(path, obj):
        if obj["step"] == 6:
            raise OSError(errno.EIO, "I/O error")
        real(path, obj)

    monkeypatch.setattr(checkpoint_module, "write_json", fail_at_step_6)
    with pytest.raises(OSError):
        train(tmp_path)
    assert {"step-00000003.json", "step-00000003.pt", "step-00000006.pt"} == {p.name for p in tmp_path.iterdir()}
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest.step == 3
    assert "step-00000006.pt has no completion marker" in capsys.readouterr().err


def test_a_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path, capsys):
    train(tmp_path)
    newest = tmp_path / "step-00000015.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest.step == 12
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "step-00000015.pt is truncated" in err and "falling back" in err


def test_checkpoints_of_other_params_are_not_resumed(tmp_path, capsys):
    train(tmp_path)
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="other") as checkpoints:
        assert checkpoints.latest is None
    assert "made with other params or data" in capsys.readouterr().err


def test_fingerprint_is_stable_and_sensitive():
    assert fingerprint({"lr": 1e-3}, "hash") == fingerprint({"lr": 1e-3}, "hash")
    assert fingerprint({"lr": 1e-3}, "hash") != fingerprint({"lr": 2e-3}, "hash")


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Exploit.sentinel}",))


def test_a_pickle_payload_is_refused(tmp_path):
    Exploit.sentinel = tmp_path / "pwned"
    directory = tmp_path / "ckpt"
    directory.mkdir()
    buffer = io.BytesIO()
    torch.save({"model": Exploit()}, buffer)  # the zip form torch.load reads, with the exploit inside
    data = buffer.getvalue()
    (directory / "step-00000003.pt").write_bytes(data)
    marker = {
        "step": 3, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": "fp", "run_id": None
    }
    (directory / "step-00000003.json").write_text(json.dumps(marker))
    with (
        pytest.raises(SslflowError, match="refusing to load .*step-00000003.pt: it holds pickled objects") as refused,
        Checkpoints(directory, every=3, keep=2, fingerprint="fp"),
    ):
        pass
    assert not Exploit.sentinel.exists()
    assert "posix.system" in str(refused.value) and "weights_only" not in str(refused.value)  # no advice to unpickle
    assert not (directory / ".lock").exists()  # refused on entry: the lock is released


def forge(directory: Path, step: int, data: bytes) -> None:
    """Put `data` at step `step` behind a completion marker that matches it (size, sha256, fingerprint)."""
    (directory / f"step-{step:08d}.pt").write_bytes(data)
    marker = {
        "step": step, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": "fp", "run_id": None
    }
    (directory / f"step-{step:08d}.json").write_text(json.dumps(marker))


def test_random_bytes_behind_a_forged_marker_fall_back_with_one_warning(tmp_path, capsys):
    train(tmp_path)  # checkpoints 12 and 15
    forge(tmp_path, 18, np.random.default_rng(0).bytes(5000))
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest.step == 15
        assert checkpoints.restore({})["step"] == 15
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "step-00000018.pt" in warnings[0] and "falling back" in warnings[0], err
    assert "weights_only" not in err and "pickled objects" not in err


def test_a_damaged_archive_behind_a_forged_marker_falls_back(tmp_path, capsys):
    train(tmp_path)
    data = bytearray((tmp_path / "step-00000015.pt").read_bytes())
    data[100:400] = bytes(300)  # still a zip, but its entries are torn
    forge(tmp_path, 18, bytes(data))
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest.step == 15
    err = capsys.readouterr().err
    assert "step-00000018.pt" in err and "falling back" in err and "weights_only" not in err


def test_forged_checkpoints_only_start_fresh(tmp_path, capsys):
    forge(tmp_path, 3, np.random.default_rng(1).bytes(300))
    buffer = io.BytesIO()
    torch.save(torch.zeros(3), buffer)  # a genuine tensor file, but not a checkpoint
    forge(tmp_path, 6, buffer.getvalue())
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest is None and checkpoints.restore({}) == {}
    err = capsys.readouterr().err
    assert "step-00000006.pt is not in format 1" in err and "step-00000003.pt is not a PyTorch checkpoint" in err


def test_rng_state_survives_weights_only_loading(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3))
    torch.save(state, tmp_path / "rng.pt")
    torch.rand(5), np.random.rand(5)
    set_rng_state(read_payload(tmp_path / "rng.pt"))
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def half_then_enospc(self, data):
    with open(self, "wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError):
        train(tmp_path, log=crash_at(7))  # checkpoints 3 and 6 written
    before = digest(tmp_path)
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
        full = r"no space left .*step-00000009.pt; the previous checkpoint .*step-00000006.pt is intact"
        with pytest.raises(DiskFull, match=full):
            checkpoints.save({"model": nn.Linear(2, 2)}, {"step": 9, "nonfinite": 0})
    monkeypatch.undo()
    assert digest(tmp_path) == before  # no temp file, no new file, the old ones untouched
    with Checkpoints(tmp_path, every=3, keep=2, fingerprint="fp") as checkpoints:
        assert checkpoints.latest.step == 6


def test_disk_full_while_saving_a_model_is_clear(tmp_path, monkeypatch):
    save_module(nn.Linear(2, 2), {"kind": "linear"}, tmp_path, "model")
    before = digest(tmp_path)
    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    with pytest.raises(DiskFull, match="no space left on the device while writing .*model.safetensors"):
        save_module(nn.Linear(2, 2), {"kind": "linear"}, tmp_path, "model")
    monkeypatch.undo()
    assert digest(tmp_path) == before


def test_non_finite_losses_stop_naming_the_step_and_keep_the_checkpoint(tmp_path):
    nan_from_7 = lambda call: float("nan") if call >= 7 else 1.0  # noqa: E731
    stopped = r"train/loss was nan for 2 consecutive step\(s\), the last at step 8 .*step-00000006.pt"
    with pytest.raises(NonFiniteLoss, match=stopped):
        train(tmp_path, loss_at=nan_from_7, max_nonfinite=2)
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == "step-00000006.pt"
    assert torch.isfinite(read_payload(tmp_path / "step-00000006.pt")["model"]["0.weight"]).all()


def test_a_lone_non_finite_loss_is_skipped(reference):
    model, _, losses = train(None, loss_at=lambda call: float("inf") if call == 4 else 1.0, max_nonfinite=3)
    assert losses[4] == float("inf") and torch.isfinite(params(model)).all()
    assert not torch.equal(params(model), params(reference[0]))  # step 4's update was skipped


def test_sigterm_saves_at_the_next_step_boundary_and_exits_143(reference, tmp_path):
    def sigterm_at_4(s):
        if s == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted) as stopped:
        train(tmp_path, every=100, log=sigterm_at_4)
    assert stopped.value.code == 143
    assert (tmp_path / "step-00000004.json").is_file()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
    model, _, _ = train(tmp_path, every=100)
    assert torch.equal(params(model), params(reference[0]))


HOLD_AND_FORK = """
import os, sys, time
from sslflow.lock import exclusive
with exclusive(sys.argv[1], "pretrain"):
    child = os.fork()
    if child == 0:  # running here: the at-fork hooks (lock.py's among them) have run in this child
        print(os.getpid(), flush=True)
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
"""


def test_a_second_holder_of_the_lock_is_refused(tmp_path):
    path = tmp_path / ".lock"
    with exclusive(path, "pretrain"):
        assert path.read_text().strip() == str(os.getpid())
        refused = f"pretrain is already running in this workspace \\(pid {os.getpid()} holds"
        with pytest.raises(SslflowError, match=refused), exclusive(path, "pretrain"):
            pass
    assert not path.exists()


def test_a_killed_holder_frees_the_lock_although_its_forked_child_lives_on(tmp_path):
    """A DataLoader worker outlives its SIGKILLed parent for a few seconds; it must not keep the workspace locked."""
    path = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(path)], stdout=subprocess.PIPE, text=True)
    child = int(holder.stdout.readline())  # printed by the child itself: under load it may not have run yet
    with pytest.raises(SslflowError, match=f"pid {holder.pid} holds"), exclusive(path, "pretrain"):
        pass
    holder.kill()
    holder.wait()
    try:
        os.kill(child, 0)  # the forked child still runs and still has the lock file open
        with exclusive(path, "pretrain"):
            assert path.read_text().strip() == str(os.getpid())
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    path = tmp_path / ".lock"
    path.write_text("999999999\n")  # no such pid; nobody holds the flock
    with exclusive(path, "pretrain"):
        assert path.read_text().strip() == str(os.getpid())
    assert "left by pid 999999999, which is no longer running" in capsys.readouterr().err


def test_params_paths(tmp_path):
    (tmp_path / "data" / "mine").mkdir(parents=True)
    assert param_dir("data/mine", "fetch.path", tmp_path) == (tmp_path / "data" / "mine").resolve()
    # An absolute path is allowed.
    assert param_dir(str(tmp_path / "data" / "mine"), "fetch.path", tmp_path / "elsewhere").is_dir()
    with pytest.raises(SslflowError, match="fetch.path: '../outside' climbs out of the project"):
        param_dir("../outside", "fetch.path", tmp_path)
    with pytest.raises(SslflowError, match="fetch.path: directory not found"):
        param_dir("data/none", "fetch.path", tmp_path)


def test_paths_from_files_stay_inside_their_root(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"")
    (root / "a" / "link.png").symlink_to(tmp_path / "secret")
    assert inside(root, "a/x.png", "manifest") == (root / "a" / "x.png").resolve()
    assert inside(root, root / "a" / "x.png", "imagefolder") == (root / "a" / "x.png").resolve()
    for bad, why in [
        ("../secret", "with '..'"),
        ("/etc/passwd", "absolute"),
        ("a/link.png", "through a symbolic link"),
    ]:
        with pytest.raises(SslflowError, match=why.replace("(", "\\(")):
            inside(root, bad, "manifest")


def test_non_finite_steps_count_across_an_epoch_boundary_and_are_never_checkpointed(tmp_path):
    with pytest.raises(NonFiniteLoss, match="the last at step 6 "):  # step 5 ends epoch 1
        train(tmp_path, every=5, loss_at=lambda call: float("nan") if call >= 5 else 1.0, max_nonfinite=2)
    assert not list(tmp_path.glob("step-*"))
