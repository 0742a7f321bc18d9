"""Faults with the team server (scripts/team_server.sh on a throwaway PostgreSQL cluster), real processes only:
the server killed in the middle of pretraining, and PostgreSQL restarted under a running server."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import env_for, make_project
from mlflow.entities import Metric, Param
from servers import ADMIN, free_port, postgres_or_skip, team_server

from sslflow.tracking.backfill import upstream_run_id

# Pretrain: 22 steps an epoch on the tiny pool, 66 in all. Finetune: a few records only (one request each).
TINY_TEAM = {"pretrain": {"epochs": 3}, "finetune": {"method": "supervised", "head_epochs": 1, "epochs": 2}}


@pytest.fixture(scope="module")
def pg():
    pg = postgres_or_skip("mlflow", "mlflow_auth")
    yield pg
    pg.stop("immediate")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("team")


@pytest.fixture(scope="module")
def prepared(pg, home, tmp_path_factory) -> Path:
    """fetch and preprocess of the tiny project, logged to the team server (their runs stay in its store)."""
    project = make_project(tmp_path_factory.mktemp("prepared") / "project", TINY_TEAM)
    with team_server(pg, home, home / "prepared.log") as url:
        for stage in ("fetch", "preprocess", "label"):
            run_stage(project, stage, env(project, url, retries="0"))
    return project


@pytest.fixture
def project(prepared, tmp_path) -> Path:
    return Path(shutil.copytree(prepared, tmp_path / "project"))


def env(project: Path, url: str, retries: str | None) -> dict:
    """A stage's environment: the team server as the admin; `retries`: MLflow's HTTP retries ("0": none; None:
    MLflow's default)."""
    environ = {
        **env_for(project),
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        "OMP_NUM_THREADS": "1",
    }
    environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    return environ if retries is None else {**environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": retries}


def run_stage(project: Path, stage: str, environ: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, f"stages/image/{stage}.py"], cwd=project, env=environ, capture_output=True, text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def start_pretrain(project: Path, environ: dict) -> subprocess.Popen:
    with open(project / "pretrain.err", "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "stages/image/pretrain.py"], cwd=project, env=environ, stdout=subprocess.DEVNULL,
            stderr=err,
        )


def records(project: Path, stage: str) -> list[dict]:
    return [json.loads(line) for line in (project / "reports" / f"{stage}_metrics.jsonl").read_text().splitlines()]


def wait_for_records(project: Path, proc: subprocess.Popen, count: int, timeout: float = 300) -> None:
    """Until the stage has written `count` metric records: the first count - 1 have been sent to MLflow."""
    path = project / "reports" / "pretrain_metrics.jsonl"
    deadline = time.monotonic() + timeout
    while not (path.is_file() and len(path.read_text().splitlines()) >= count):
        assert proc.poll() is None, f"pretrain exited {proc.returncode}:\n{(project / 'pretrain.err').read_text()}"
        assert time.monotonic() < deadline, f"pretrain wrote no {count} records in {timeout} s"
        time.sleep(0.05)


def lineage(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / "lineage" / f"{stage}.json").read_text())


def server_pid(port: int) -> int:
    """The pid of the `mlflow server` process listening on `port`."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and b"--port" in argv and str(port).encode() in argv and b"server" in argv:
            return int(entry.name)
    raise AssertionError(f"no mlflow server on port {port}")


def kill_server(port: int) -> None:
    """SIGKILL the process group of the server listening on `port` (mlflow server and its uvicorn workers)."""
    os.killpg(os.getpgid(server_pid(port)), signal.SIGKILL)


def history(client, run_id: str, key: str) -> list[tuple]:
    return sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))


def from_file(rows: list[dict], key: str) -> list[tuple]:
    return sorted((r["step"], r["timestamp"], r[key]) for r in rows if key in r)


@pytest.mark.slow
def test_server_killed_mid_pretrain_the_run_is_completed_by_the_next_stage(
    pg, home, project, tmp_path, monkeypatch, capfd
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = env(project, url, retries="0")  # no retries: the stage notices the dead server at once
    with team_server(pg, home, tmp_path / "server.log", port):
        pretrain = start_pretrain(project, environ)
        wait_for_records(project, pretrain, 3)
        run_id = lineage(project, "pretrain")["run_id"]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        assert mlflow.MlflowClient(url).get_metric_history(run_id, "pretrain/loss")  # online until here
        kill_server(port)
    assert pretrain.wait(timeout=600) == 0, (project / "pretrain.err").read_text()
    stderr = (project / "pretrain.err").read_text()
    assert len([line for line in stderr.splitlines() if line.startswith("warning: MLflow tracking")]) == 1
    rows = records(project, "pretrain")
    assert [r["step"] for r in rows if "pretrain/loss" in r] == list(range(1, 67))  # all kept locally
    assert [r["step"] for r in rows if "monitor/val_knn_acc" in r] == [22, 44, 66]
    record = lineage(project, "pretrain")
    lost = record["went_offline"]
    assert record["run_id"] == run_id and 2 <= lost["step"] < 66 and lost["status"] == "FINISHED"

    with team_server(pg, home, tmp_path / "server.log", port):  # the server is back, on the same store
        finetune = run_stage(project, "finetune", environ)
        client = mlflow.MlflowClient(url)
        run = client.get_run(run_id)
        assert f"MLflow run {run_id} of pretrain" in finetune.stderr
        assert (run.info.status, run.info.end_time) == ("FINISHED", lost["end_time"])
        assert run.data.tags["sslflow.reconnected"] == "true"
        for key in ("pretrain/loss", "pretrain/lr", "monitor/val_knn_acc", "pretrain/epoch_loss"):
            assert history(client, run_id, key) == from_file(rows, key), key
        assert client.get_run(lineage(project, "finetune")["run_id"]).data.tags["sslflow.upstream_run_id"] == run_id

        monkeypatch.chdir(project)  # once only: what the next stage downstream would call finds it done
        assert upstream_run_id(client, "pretrain", tmp_path / "lock") == run_id
        assert f"MLflow run {run_id}" not in capfd.readouterr().err
        assert history(client, run_id, "pretrain/loss") == from_file(rows, "pretrain/loss")



def test_postgres_restarted_under_the_server_nothing_is_lost(pg, home, tmp_path, monkeypatch):
    """A run with params, metrics and an artifact, a registered model version and its alias, written through the
    team server; PostgreSQL stopped ("fast": its connections cut) and started again under the same server
    process. While it is down the server answers 503; afterwards the same process reads everything back and
    logs a new run, at once (MLflow's engine pings pooled connections)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for key, value in {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
                       "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.txt").write_text("0.5\n")
    with team_server(pg, home, tmp_path / "server.log", port):
        pid = server_pid(port)
        client = mlflow.MlflowClient(url)
        experiment = client.create_experiment("pg-restart")
        run_id = client.create_run(experiment, run_name="before").info.run_id
        client.log_batch(run_id, metrics=[Metric("loss", 1.0 / step, 1000 + step, step) for step in range(1, 6)],
                         params=[Param("lr", "0.1")])
        client.log_artifacts(run_id, str(tmp_path / "model"), "model")
        client.set_terminated(run_id, "FINISHED")
        client.create_registered_model("pg-model")
        version = client.create_model_version("pg-model", f"runs:/{run_id}/model", run_id=run_id).version
        client.set_registered_model_alias("pg-model", "champion", version)

        def state() -> tuple:
            run = client.get_run(run_id)
            champion = client.get_model_version_by_alias("pg-model", "champion")
            return (
                run.info.status, run.info.end_time, run.data.params, history(client, run_id, "loss"),
                [a.path for a in client.list_artifacts(run_id, "model")],
                (champion.version, champion.run_id, champion.source),
            )

        before = state()
        pg.stop("fast")
        with pytest.raises(mlflow.exceptions.MlflowException, match="503"):
            client.get_run(run_id)
        pg.start()
        assert state() == before
        assert before[3] == [(step, 1000 + step, 1.0 / step) for step in range(1, 6)]
        after = client.create_run(experiment, run_name="after").info.run_id
        client.log_metric(after, "loss", 0.25, step=1)
        client.set_terminated(after, "FINISHED")
        assert history(client, after, "loss")[0][::2] == (1, 0.25)
        assert {r.info.run_name for r in client.search_runs([experiment])} == {"before", "after"}
        assert server_pid(port) == pid  # the same server process throughout


@pytest.mark.slow
def test_postgres_restarted_during_pretrain_the_run_rides_over_it(pg, home, project, tmp_path, monkeypatch):
    """PostgreSQL stopped for 5 s while pretrain logs metrics, with MLflow's default HTTP retries (what a stage
    gets unless told otherwise): the server answers 503 meanwhile, and the client retries the request (503 is
    one of MLflow's retried codes, with backoff) until PostgreSQL is back. Measured here: training waits in
    that call for the outage plus the backoff (14 s for the 5 s stop, on 2 loaded cores), then goes on online;
    the run stays online (no warning, no `went_offline` in the lineage), ends FINISHED and holds every record,
    at the stage's own timestamps. With retries off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0) the first 503 would
    take the stage offline instead (StageRun treats every tracking error alike; not run here), and the run
    would be completed as after a killed server (the test above)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = env(project, url, retries=None)
    with team_server(pg, home, tmp_path / "server.log", port):
        pretrain = start_pretrain(project, environ)
        wait_for_records(project, pretrain, 3)
        pg.stop("fast")
        time.sleep(5)
        pg.start()
        assert pretrain.wait(timeout=600) == 0, (project / "pretrain.err").read_text()
        assert "warning: MLflow tracking" not in (project / "pretrain.err").read_text()
        record = lineage(project, "pretrain")
        assert "went_offline" not in record
        rows = records(project, "pretrain")
        gap = max(b["timestamp"] - a["timestamp"] for a, b in zip(rows, rows[1:], strict=False)) / 1000
        assert gap >= 5, "no record waited for PostgreSQL"
        print(f"longest wait between two records: {gap:.1f} s")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
        client = mlflow.MlflowClient(url)
        run = client.get_run(record["run_id"])
        assert run.info.status == "FINISHED"
        for key in ("pretrain/loss", "monitor/val_knn_acc"):
            assert history(client, record["run_id"], key) == from_file(rows, key), key

