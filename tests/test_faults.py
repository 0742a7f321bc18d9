"""Faults in real stage processes on tiny data: kill and resume, SIGTERM, NaN, tracking server down, a second
run, a failing stage under `dvc repro`, and paths that try to leave the project."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import env_for, make_project, run_stage

from sslflow.checkpoint import Marker, read_payload
from sslflow.errors import SslflowError
from sslflow.lock import exclusive
from sslflow.tracking import log_image_classifier, stage_run

# Pool of 180 images: 2 batches of 64 per epoch, 8 steps in all; checkpoints at steps 3 (mid-epoch 2) and 6.
FAULTS = {
    "preprocess": {"test_fraction": 0.9, "val_fraction": 0.5},
    "pretrain": {"epochs": 4, "train": {"checkpoint_every": 3, "keep_checkpoints": 2, "max_nonfinite_steps": 2}},
}
CKPT = Path("checkpoints") / "pretrain"
NAN_FROM_STEP = """
import runpy, sys
import sslflow.image.methods.simclr as simclr
real, calls = simclr.ntxent, [0]
def ntxent(*args, **kwargs):
    calls[0] += 1
    loss = real(*args, **kwargs)
    return loss * float("nan") if calls[0] >= {step} else loss
simclr.ntxent = ntxent
sys.argv = [sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("faults") / "project", FAULTS)
    for stage in ("fetch", "preprocess"):
        run_stage(project, stage)
    return project


@pytest.fixture
def project(prepared, tmp_path):
    return Path(shutil.copytree(prepared, tmp_path / "project"))


def start_pretrain(project, env=None, script=None):
    stage = str(project / "stages" / "image" / "pretrain.py")
    argv = [sys.executable, "-c", script, stage] if script else [sys.executable, stage]
    # The child gets its own copy of the file descriptor when it starts, so ours can be closed straight after.
    with open(project / "pretrain.err", "w") as err:
        return subprocess.Popen(argv, cwd=project, env=env or env_for(project), stdout=subprocess.DEVNULL, stderr=err)


def wait_for(path, proc, timeout=300):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode} before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout}s"
        time.sleep(0.02)


def runs(project):
    """The pretrain runs (fetch and preprocess have theirs too)."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sslflow").experiment_id
    return client.search_runs([experiment], filter_string="tags.`sslflow.stage` = 'pretrain'")


def losses(project):
    lines = (project / "reports" / "pretrain_metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def set_params(project, section, **values):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def deterministic(report):
    timings = [k for k in report if k.endswith(("_s", "samples_per_s")) or k == "timestamp"]  # they differ
    return {k: v for k, v in report.items() if k not in timings}


@pytest.mark.slow
def test_kill_mid_epoch_and_rerun_gives_the_uninterrupted_result(prepared, tmp_path):
    reference = Path(shutil.copytree(prepared, tmp_path / "reference"))
    run_stage(reference, "pretrain")

    killed = Path(shutil.copytree(prepared, tmp_path / "killed"))
    set_params(killed, "base", num_workers=1)  # the shipped default; the reference ran without workers
    proc = start_pretrain(killed)
    wait_for(killed / CKPT / "step-00000003.json", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "models" / "encoder" / "encoder.safetensors").exists()
    resumed = run_stage(killed, "pretrain")

    assert "resuming from checkpoints/pretrain/step-00000003.pt (step 3, epoch 2)" in resumed.stderr
    assert "took over the lock" in resumed.stderr  # the killed process's lock file was left behind
    weights = Path("models") / "encoder" / "encoder.safetensors"
    assert (killed / weights).read_bytes() == (reference / weights).read_bytes()  # bitwise
    report = [json.loads((p / "reports" / "pretrain.json").read_text()) for p in (killed, reference)]
    assert deterministic(report[0]) == deterministic(report[1])
    assert [deterministic(r) for r in losses(killed)] == [deterministic(r) for r in losses(reference)]
    assert len([r for r in losses(killed) if "pretrain/loss" in r]) == 8
    (run,) = runs(killed)  # the killed run was continued, not duplicated
    assert run.info.status == "FINISHED" and run.data.tags["sslflow.resumed_at_step"] == "3"


@pytest.mark.slow
def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(project):
    proc = start_pretrain(project)
    wait_for(project / CKPT / "step-00000003.json", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    err = (project / "pretrain.err").read_text()
    assert "SIGTERM: saving a checkpoint at the next step boundary" in err
    marker = Marker.read(sorted((project / CKPT).glob("step-*.json"))[-1])
    assert marker.step > 3 and marker.problem() is None
    assert read_payload(marker.payload)["progress"]["step"] == marker.step
    (run,) = runs(project)
    assert run.info.status == "KILLED" and marker.run_id == run.info.run_id


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_keeps_the_checkpoint_and_fails_the_run(project):
    proc = start_pretrain(project, script=NAN_FROM_STEP.format(step=4))
    assert proc.wait(timeout=300) == 2
    errors = [line for line in (project / "pretrain.err").read_text().splitlines() if line.startswith("error:")]
    assert errors == [
        "error: pretrain/loss was nan for 2 consecutive step(s), the last at step 5 (epoch 3): training "
        "stopped; the last good checkpoint is checkpoints/pretrain/step-00000003.pt"
    ]
    assert sorted(p.name for p in (project / CKPT).iterdir()) == ["step-00000003.json", "step-00000003.pt"]
    marker = json.loads((project / CKPT / "step-00000003.json").read_text())
    (run,) = runs(project)
    assert run.info.status == "FAILED" and marker["run_id"] == run.info.run_id


def closed_port_env(project):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is: nothing listens there
    env = env_for(project)
    env.update(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="2",
    )
    return env


@pytest.mark.slow
def test_tracking_server_down_training_completes_locally_and_promotion_refuses(project):
    set_params(project, "pretrain", epochs=2)
    env = closed_port_env(project)
    proc = subprocess.run(
        [sys.executable, "stages/image/pretrain.py"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: MLflow tracking")]
    assert len(warnings) == 1 and "reports/pretrain_metrics.jsonl only" in warnings[0]
    records = losses(project)
    assert [r["step"] for r in records if "pretrain/loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "monitor/val_knn_acc" in r] == [2, 4]
    assert (project / "models" / "encoder" / "encoder.safetensors").is_file()
    assert json.loads((project / "reports" / "lineage" / "pretrain.json").read_text())["run_id"] == ""

    promote = subprocess.run(
        [sys.executable, "stages/promote.py"], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert promote.returncode == 2 and "error: model registry at http://127.0.0.1" in promote.stderr


def test_an_offline_run_refuses_to_log_a_model(project, monkeypatch):
    for key, value in closed_port_env(project).items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(project)
    with stage_run("evaluate", run_name="image/evaluate", experiment="sslflow", params={}, upstream=None) as run:
        assert run.run_id is None
        run.log({"x": 1.0}, 0)
        with pytest.raises(SslflowError, match="cannot log the ssl model: no MLflow run is open"):
            log_image_classifier(project / "models", "ssl", project / "data" / "prepared" / "classes.json", None)
    record = json.loads((project / "reports" / "evaluate_metrics.jsonl").read_text())
    assert record.pop("timestamp") > 0 and record == {"step": 0, "x": 1.0}  # the timestamp, for a later backfill


@pytest.mark.slow
def test_a_second_run_in_the_workspace_is_refused(project):
    with exclusive(project / CKPT / ".lock", "pretrain"):  # as a running pretrain holds it
        second = run_stage(project, "pretrain", check=False)
    assert second.returncode == 2
    assert (
        f"error: pretrain is already running in this workspace (pid {os.getpid()} holds checkpoints/pretrain/.lock)"
        in second.stderr
    )


def test_a_fetch_path_outside_the_project_is_refused(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["fetch"] = {"source": "imagefolder", "path": "../../etc"}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(project, "fetch", check=False)
    assert proc.returncode == 2
    assert "error: fetch.path: '../../etc' climbs out of the project with '..'" in proc.stderr


def dvc(project, *args, **kwargs):
    return subprocess.run(
        ["dvc", *args], cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600, **kwargs
    )


@pytest.mark.slow
def test_a_failing_stage_keeps_upstream_in_dvc_lock_and_the_rerun_starts_there(tmp_path):
    project = make_project(
        tmp_path / "project", {**FAULTS, "pretrain": {**FAULTS["pretrain"], "batch_size": 100_000}}, dvc=True
    )  # valid params (the check stage passes), but a batch larger than the pool: pretrain itself fails
    assert dvc(project, "init", "--no-scm").returncode == 0
    failed = dvc(project, "repro", "pretrain")
    assert failed.returncode != 0 and "pretrain.batch_size" in failed.stderr + failed.stdout
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"check", "fetch", "preprocess"}

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pretrain"]["batch_size"] = 64
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repro = subprocess.Popen(
        ["dvc", "repro", "pretrain"],
        cwd=project,
        env=env_for(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for(project / CKPT / ".lock", repro)
    concurrent = dvc(project, "repro", "pretrain")
    out, _ = repro.communicate(timeout=600)
    assert concurrent.returncode != 0 and "lock" in (concurrent.stderr + concurrent.stdout).lower()
    assert repro.returncode == 0, out
    assert "Stage 'fetch' didn't change, skipping" in out and "Stage 'preprocess' didn't change, skipping" in out
    assert "Running stage 'pretrain'" in out
    stages = set(yaml.safe_load((project / "dvc.lock").read_text())["stages"])
    assert stages == {"check", "fetch", "preprocess", "pretrain"}
