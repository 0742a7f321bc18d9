"""Records that end: a stage's MLflow run ends KILLED or FAILED however the stage stops, a run a killed process
left RUNNING is closed by the next run of the stage, and a stage whose parent (`dvc repro`) dies stops too."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

# A stage-like process: one MLflow run via stage_run, then it fails, returns, or waits to be stopped.
STAGE = """
import os, sys, time
from pathlib import Path
from sslflow.tracking import stage_run
mode = sys.argv[1]
with stage_run("evaluate", run_name="t", experiment="records", params={}, upstream=None) as run:
    Path(sys.argv[2] + ".tmp").write_text(run.run_id or "")
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])  # whole: a reader never sees the file created but empty
    if mode == "fail":
        raise RuntimeError("boom")
    while mode == "wait":
        time.sleep(0.05)
"""
# What `dvc repro` is to its stage: a parent that starts it, directly or through `sh -c` as DVC does when SHELL
# is unset (dash stays in between), and then dies (here: waits to be killed).
PARENT = """
import shlex, subprocess, sys, time
command = [sys.executable, "-c", sys.argv[1], "wait", sys.argv[2]]
subprocess.Popen(["/bin/sh", "-c", shlex.join(command)] if sys.argv[3] == "shell" else command)
time.sleep(600)
"""


@pytest.fixture
def project(tmp_path, empty_store):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    (tmp_path / "params.yaml").write_text("{}\n")
    return tmp_path


def env(project: Path) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "OMP_NUM_THREADS": "1"}


def start(project: Path, mode: str, name: str) -> tuple[subprocess.Popen, Path]:
    ready = project / f"{name}.ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", STAGE, mode, str(ready)], cwd=project, env=env(project),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, ready


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)
    return path.read_text()


def status(project: Path, run_id: str) -> str:
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}").get_run(run_id).info.status


def test_sigterm_ends_the_run_killed_and_exits_143(project):
    """A stage without a training loop (evaluate) had no handler: SIGTERM killed it and its run stayed RUNNING."""
    proc, ready = start(project, "wait", "a")
    run_id = wait_for(ready, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert status(project, run_id) == "KILLED"


def test_an_exception_ends_the_run_failed(project):
    proc, ready = start(project, "fail", "a")
    assert proc.wait(timeout=60) == 1 and "boom" in proc.stderr.read()
    assert status(project, ready.read_text()) == "FAILED"


def test_the_next_run_of_the_stage_closes_the_run_a_killed_process_left_running(project):
    live, live_ready = start(project, "wait", "live")  # another workspace's evaluate, still running
    killed, killed_ready = start(project, "wait", "killed")
    live_id, killed_id = wait_for(live_ready, live), wait_for(killed_ready, killed)
    killed.send_signal(signal.SIGKILL)  # nothing can end its run
    killed.wait(timeout=30)
    assert status(project, killed_id) == "RUNNING"

    next_run, next_ready = start(project, "return", "next")
    assert next_run.wait(timeout=60) == 0, next_run.stderr.read()
    assert f"marked MLflow run {killed_id} of evaluate KILLED" in next_run.stderr.read()
    assert status(project, killed_id) == "KILLED"
    assert status(project, live_id) == "RUNNING"  # its process lives: left alone
    assert status(project, next_ready.read_text()) == "FINISHED"
    live.send_signal(signal.SIGTERM)
    assert live.wait(timeout=30) == 143


def gone(pid: int) -> bool:
    """Exited (an orphan whose new parent has not reaped it yet is a zombie: gone too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def stage_pid(ready: Path) -> int:
    """The pid of the stand-in stage that writes `ready` (not the shell that may have started it)."""
    return next(
        int(pid) for pid in os.listdir("/proc") if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists()
        and Path(f"/proc/{pid}/cmdline").read_bytes().startswith(sys.executable.encode() + b"\0")
        and Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"\0wait\0" + str(ready).encode() + b"\0")
    )


def assert_stopped_and_killed(pid: int, project: Path, run_id: str, message: str) -> None:
    """Within 10 s the stage process `pid` is gone (killed here if not, so no orphan outlives the test) and
    within 10 s more its MLflow run reads KILLED."""
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = not gone(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, message
    deadline = time.monotonic() + 10
    while status(project, run_id) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(project, run_id) == "KILLED"



@pytest.mark.parametrize("through", ["direct", "shell"])
@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_stage_stops_when_its_parent_dies(project, kill, through):
    """`dvc repro` killed leaves its stage an orphan (or the `sh -c` between them) that runs on and holds DVC's
    lock; the stage must notice within seconds, stop as on SIGTERM and end its run KILLED."""
    ready = project / "child.ready"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, STAGE, str(ready), through], cwd=project, env=env(project), text=True
    )
    run_id = wait_for(ready, parent)
    child = stage_pid(ready)
    parent.send_signal(kill)  # a plain Python parent does not pass SIGTERM on to its child either
    parent.wait(timeout=30)
    assert_stopped_and_killed(child, project, run_id, "the stage ran on after its parent died")


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["/bin/bash", None], ids=["bash", "shell-unset"])
def test_sigterm_to_dvc_repro_stops_its_stage(project, shell):
    """The real case: `dvc repro` is sent SIGTERM while its stage runs; the stage must not run on as an orphan
    holding DVC's lock, and the next `dvc repro` must start. DVC runs the stage as `$SHELL -c cmd`; with SHELL
    unset (as in CI) that is /bin/sh, which on Debian is dash and stays between dvc and the stage."""
    run_env = {k: v for k, v in env(project).items() if k != "SHELL"} | ({"SHELL": shell} if shell else {})
    (project / "stage.py").write_text(STAGE)
    (project / "dvc.yaml").write_text(
        "stages:\n  slow:\n    cmd: python stage.py wait child.ready\n    deps: [stage.py]\n    outs: [out.txt]\n"
    )
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(args, cwd=project, env=env(project), check=True, capture_output=True)
    dvc = subprocess.Popen(["dvc", "repro"], cwd=project, env=run_env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    run_id = wait_for(project / "child.ready", dvc, timeout=120)
    stage = next(
        int(pid) for pid in os.listdir("/proc") if pid.isdigit() and Path(f"/proc/{pid}/cmdline").exists()
        and Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"stage.py\0wait\0child.ready\0")
    )
    dvc.send_signal(signal.SIGTERM)
    dvc.wait(timeout=30)
    assert_stopped_and_killed(stage, project, run_id, "the stage ran on after dvc repro was stopped")
    (project / "stage.py").write_text(STAGE.replace('"wait"', '"never"') + "\nPath('out.txt').write_text('ok')\n")
    rerun = subprocess.run(["dvc", "repro"], cwd=project, env=run_env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # DVC's lock is free
