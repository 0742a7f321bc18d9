"""Runs of stages that ran while the tracking server was down are created in MLflow, with their params, metrics
(original steps and timestamps), tags and end, once a stage downstream reaches a real `mlflow server`; once only."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from servers import local_server

# A stage-like process: one run via stage_run with params, a data hash and three metric records; its run id goes
# to the file `run_id` (MLflow prints links to stdout).
STAGE = """
import sys
from pathlib import Path
from sslflow.tracking import stage_run
stage, upstream, experiment = sys.argv[1], sys.argv[2] or None, sys.argv[3]
with stage_run(
    stage, run_name=f"t/{stage}", experiment=experiment, params={"lr": 0.1, "optim": {"steps": 3}},
    upstream=upstream, tags={"sslflow.data_hash": "c0ffee"}, data=(Path("data"), "c0ffee" * 6, "train"),
) as run:
    for step in (1, 2, 3):
        run.log({f"{stage}/loss": 1.0 / step}, step)
Path("run_id").write_text(run.run_id or "")
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store) -> Path:
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    shutil.copy(empty_store, path)
    return path


def serve(store: Path, log: Path):
    """A real tracking server on the store (a context manager yielding its URL)."""
    return local_server(
        lambda port: ["mlflow", "server", "--backend-store-uri", f"sqlite:///{store}", "--host", "127.0.0.1",
                      "--port", str(port), "--workers", "1"],
        cwd=None,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"},
        log=log,
        health="/health",
    )


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """The server for the stages that run once it is back."""
    with serve(store, tmp_path_factory.mktemp("server") / "server.log") as url:
        yield url


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "params.yaml").write_text("{}\n")
    return tmp_path


def down() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the socket is: nothing listens there


def stage_env(uri: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "OMP_NUM_THREADS": "1"}


def run(project: Path, uri: str, stage: str, upstream: str, experiment: str) -> tuple[str, str]:
    """(the stage's run id, "" offline; its stderr)"""
    proc = subprocess.run([sys.executable, "-c", STAGE, stage, upstream, experiment], cwd=project,
                          env=stage_env(uri), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (project / "run_id").read_text(), proc.stderr


def runs_of(client, experiment: str, stage: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], filter_string=f"tags.`sslflow.stage` = '{stage}'")


def lineage(project: Path, stage: str) -> dict:
    return json.loads((project / "reports" / "lineage" / f"{stage}.json").read_text())


def assert_backfilled(client, project: Path, run, stage: str, upstream_id: str) -> None:
    """`run` holds what `stage` recorded offline: params, metrics at their steps and times, tags, data, end."""
    record = lineage(project, stage)["offline"]
    records = [json.loads(line) for line in (project / "reports" / f"{stage}_metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, f"{stage}/loss")
    assert [(m.step, m.timestamp, m.value) for m in history] == [
        (r["step"], r["timestamp"], r[f"{stage}/loss"]) for r in records
    ]
    assert {k: v for k, v in run.data.params.items() if k.startswith(f"{stage}.")} == {
        f"{stage}.lr": "0.1", f"{stage}.optim.steps": "3"
    }
    tags = run.data.tags
    assert tags["sslflow.backfilled"] == "true" and tags["sslflow.offline_id"] == record["id"]
    assert tags["sslflow.upstream_run_id"] == upstream_id
    assert tags["sslflow.data_hash"] == "c0ffee" and tags["mlflow.source.git.commit"] == record["tags"][
        "mlflow.source.git.commit"]
    assert tags["sslflow.pipeline_id"] == lineage(project, stage)["pipeline_id"]
    assert run.info.run_name == f"t/{stage}"
    assert (run.info.status, run.info.start_time, run.info.end_time) == (
        "FINISHED", record["start_time"], record["end_time"]
    )
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == "c0ffeec0ffee" and dataset.tags[0].value == "train"


def test_a_run_logged_while_the_server_was_down_is_created_when_the_next_stage_reaches_it(project, server, store):
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    assert run(project, down(), "pretrain", "", "backfill")[0] == ""
    record = lineage(project, "pretrain")
    assert record["run_id"] == "" and record["offline"]["status"] == "FINISHED"

    finetune, stderr = run(project, server, "finetune", "pretrain", "backfill")
    (pretrain,) = runs_of(client, "backfill", "pretrain")
    assert f"created MLflow run {pretrain.info.run_id} of pretrain" in stderr
    assert_backfilled(client, project, pretrain, "pretrain", "")
    downstream = client.get_run(finetune)
    assert downstream.data.tags["sslflow.upstream_run_id"] == pretrain.info.run_id
    assert downstream.data.params["pretrain.lr"] == "0.1"  # inherited, as from a run logged online
    assert lineage(project, "pretrain") == record  # a DVC output of pretrain: rewriting it would rerun pretrain

    again, _ = run(project, server, "finetune", "pretrain", "backfill")
    assert [r.info.run_id for r in runs_of(client, "backfill", "pretrain")] == [pretrain.info.run_id]
    assert client.get_run(again).data.tags["sslflow.upstream_run_id"] == pretrain.info.run_id


def test_an_offline_chain_is_created_linked_and_the_stage_goes_on_while_the_server_is_still_down(
    project, server, store
):
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    run(project, down(), "fetch", "", "chain")
    run(project, down(), "preprocess", "fetch", "chain")  # its upstream offline too: it goes on, offline
    assert lineage(project, "preprocess")["offline"]["tags"]["sslflow.upstream_offline_id"] == lineage(
        project, "fetch")["offline"]["id"]

    pretrain = client.get_run(run(project, server, "pretrain", "preprocess", "chain")[0])
    (fetch,) = runs_of(client, "chain", "fetch")
    (preprocess,) = runs_of(client, "chain", "preprocess")
    assert_backfilled(client, project, fetch, "fetch", "")
    assert_backfilled(client, project, preprocess, "preprocess", fetch.info.run_id)
    assert preprocess.data.params["fetch.lr"] == "0.1"
    assert pretrain.data.tags["sslflow.upstream_run_id"] == preprocess.info.run_id


def test_a_run_opened_while_the_backfill_failed_gets_its_link_when_it_succeeds(project, server, store):
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    run(project, down(), "pretrain", "", "offline-upstream")
    blocked = client.create_experiment("offline-upstream")
    client.delete_experiment(blocked)  # MLflow creates no run in a deleted experiment: the backfill fails

    orphan, stderr = run(project, server, "finetune", "pretrain", "linked")
    assert "note: cannot create the MLflow run pretrain recorded offline" in stderr
    assert client.get_run(orphan).data.tags["sslflow.upstream_run_id"] == ""

    client.restore_experiment(blocked)
    run(project, server, "finetune", "pretrain", "linked")
    (pretrain,) = runs_of(client, "offline-upstream", "pretrain")
    assert client.get_run(orphan).data.tags["sslflow.upstream_run_id"] == pretrain.info.run_id


# The stage above, halted before its second record until the file `go` exists: the test stops the server meanwhile,
# so the run loses it mid-way.
DROPPING = STAGE.replace("import sys\n", "import sys\nimport time\n", 1).replace(
    "    for step in (1, 2, 3):\n",
    "    for step in (1, 2, 3):\n"
    "        while step == 2 and not Path('go').exists():\n"
    "            Path('waiting').touch()\n"
    "            time.sleep(0.1)\n",
)


def test_a_rerun_of_the_stage_first_completes_its_run_that_lost_the_server_mid_way(project, store, tmp_path):
    """Rerunning the stage restarts its metrics file, and would mark the old run KILLED as an orphan: it is
    completed from the file first (FINISHED, every record, `sslflow.reconnected`)."""
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    with serve(store, tmp_path / "first.log") as first:
        proc = subprocess.Popen([sys.executable, "-c", DROPPING, "pretrain", "", "lost"], cwd=project,
                                env=stage_env(first), stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (project / "waiting").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    (project / "go").touch()  # the server is gone: records 2 and 3 stay local
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    lost = lineage(project, "pretrain")
    assert lost["went_offline"]["status"] == "FINISHED" and lost["went_offline"]["record"] == 1
    assert client.get_run(lost["run_id"]).info.status == "RUNNING"

    with serve(store, tmp_path / "second.log") as second:
        rerun, stderr = run(project, second, "pretrain", "", "lost")
    assert f"completed MLflow run {lost['run_id']} of pretrain" in stderr
    old = client.get_run(lost["run_id"])
    assert (old.info.status, old.data.tags["sslflow.reconnected"]) == ("FINISHED", "true")
    assert old.info.end_time == lost["went_offline"]["end_time"]
    history = client.get_metric_history(old.info.run_id, "pretrain/loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert client.get_run(rerun).info.status == "FINISHED"
