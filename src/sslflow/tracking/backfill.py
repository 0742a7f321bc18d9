"""Runs the tracking server missed, created or completed in MLflow once it answers.

A stage that cannot reach MLflow keeps its metrics in `reports/<stage>_metrics.jsonl` (each record with its step
and timestamp) and, in its lineage file, what its run would have held: experiment, name, tags, params, dataset,
start and end. When a stage downstream opens its run with the server up, that run is created after the fact
(MlflowClient.create_run with the original start time, log_batch with the original steps and timestamps,
set_terminated with the original status and end time), tagged `sslflow.backfilled`, and becomes the downstream
run's `sslflow.upstream_run_id`; offline stages further up are created first, so the chain links up.

The lineage file is not rewritten: it is a DVC output of the upstream stage, and changing it would make DVC rerun
that stage. The created run carries the record's id instead (`sslflow.offline_id`), and finding it by that id is
what keeps a second downstream run from creating a second copy.

A run that lost the server mid-way (it stopped answering while the stage trained) is left RUNNING there, with the
records sent before the drop. Its lineage file says where it went offline (`went_offline`: the step, and the
number of metric records the server had been sent) and, from the stage's end, its status and end time. The next
stage downstream that reaches the server logs the records from the drop on (original steps and timestamps; one
the server got before the drop is stored once) and terminates the run with its true status and end time, tagged
`sslflow.reconnected` last: that tag is what makes it happen once. Artifacts logged after the drop stay local.
"""

import json
import sys
from pathlib import Path

from sslflow.lock import exclusive
from sslflow.paths import Layout

BACKFILLED = "sslflow.backfilled"
RECONNECTED = "sslflow.reconnected"  # on a run completed after it lost the server mid-way
WENT_OFFLINE = "went_offline"  # the lineage key of a run that lost the server mid-way
OFFLINE_ID = "sslflow.offline_id"  # the lineage record a backfilled run was created from
UPSTREAM = "sslflow.upstream_run_id"
UPSTREAM_OFFLINE_ID = "sslflow.upstream_offline_id"  # on a run whose upstream ran offline
WAIT_S = 120  # for another stage backfilling the same runs (parallel experiments of `dvc queue start -j 2`)


def read_lineage(stage: str) -> dict:
    """`reports/lineage/<stage>.json`: run_id ("" when offline), pipeline_id and, for an offline run, its record."""
    path = Layout().lineage / f"{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def upstream_run_id(client, upstream: str, lock: Path) -> str:
    """The MLflow run id of the stage `upstream`, as its lineage file names it; a run it recorded offline is
    created first, and one that lost the server mid-way is completed (once: later calls find it done). "" when
    there is no record, or backfilling fails (with a note)."""
    try:
        with exclusive(lock, "a backfill of MLflow runs", wait_s=WAIT_S):
            return _run_of(client, upstream)
    except Exception as err:  # the downstream run goes on unlinked, as it did before backfilling existed
        print(f"note: cannot create the MLflow run {upstream} recorded offline ({err})", file=sys.stderr)
        return ""


def complete_lost_run(client, stage: str, lock: Path) -> None:
    """Before `stage` runs again (which restarts its metrics file, and would mark its last run KILLED as an
    orphan): complete that last run if it lost the server mid-way, from the records still in the file."""
    try:
        with exclusive(lock, "a backfill of MLflow runs", wait_s=WAIT_S):
            record = read_lineage(stage)
            if record.get("run_id") and WENT_OFFLINE in record:
                _complete(client, record["run_id"], record[WENT_OFFLINE], stage)
    except Exception as err:  # the new run goes on; the old one stays as the server last saw it
        print(f"note: cannot complete the MLflow run of {stage} that lost the tracking server ({err})", file=sys.stderr)


def _run_of(client, stage: str) -> str:
    record = read_lineage(stage)
    offline = record.get("offline")
    if record.get("run_id") and WENT_OFFLINE in record:
        _complete(client, record["run_id"], record[WENT_OFFLINE], stage)
    if record.get("run_id") or offline is None:
        return record.get("run_id", "")
    experiment = client.get_experiment_by_name(offline["experiment"])
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(offline["experiment"], artifact_location=offline["artifact_location"])
    )
    found = client.search_runs([experiment_id], filter_string=f"tags.`{OFFLINE_ID}` = '{offline['id']}'")
    if found:
        return found[0].info.run_id
    upstream = _run_of(client, offline["upstream"]) if offline["upstream"] else ""
    run_id = _create(client, experiment_id, offline, upstream, Layout().reports / f"{stage}_metrics.jsonl")
    print(f"note: created MLflow run {run_id} of {stage}, which ran while the tracking server was down",
          file=sys.stderr)
    # Runs that opened while this one could not be created (a backfill that failed) get their link now.
    experiments = [listed.experiment_id for listed in client.search_experiments()]
    for run in client.search_runs(experiments, filter_string=f"tags.`{UPSTREAM_OFFLINE_ID}` = '{offline['id']}'"):
        if not run.data.tags.get(UPSTREAM):
            client.set_tag(run.info.run_id, UPSTREAM, run_id)
    return run_id


def _create(client, experiment_id: str, offline: dict, upstream: str, metrics_path: Path) -> str:
    from mlflow.entities import Dataset, DatasetInput, InputTag, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run = client.create_run(
        experiment_id, start_time=offline["start_time"], tags={**offline["tags"], UPSTREAM: upstream},
        run_name=offline["run_name"],
    )
    run_id = run.info.run_id
    records = _records(metrics_path)
    # As online: the upstream run's params come along, and the stage's own win.
    inherited = client.get_run(upstream).data.params if upstream else {}
    params = [Param(key, value) for key, value in {**inherited, **offline["params"]}.items()]
    client.log_batch(run_id, metrics=_metrics(records), params=params)
    if offline["data"] is not None:
        data = dict(offline["data"])
        context = data.pop("context")
        dataset = DatasetInput(Dataset(**data), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        client.log_inputs(run_id, datasets=[dataset])
    _terminate(client, run_id, offline, records, offline["start_time"])
    # Tagged last, so that a backfill cut short leaves a run no later backfill takes for complete.
    client.log_batch(run_id, tags=[RunTag(BACKFILLED, "true"), RunTag(OFFLINE_ID, offline["id"])])
    return run_id


def _complete(client, run_id: str, lost: dict, stage: str) -> None:
    """Log what run `run_id` of `stage` could not send after it went offline (`lost`, its lineage record), and
    end it as the stage did; nothing if that was done already."""
    from mlflow.entities import RunTag

    run = client.get_run(run_id)
    if run.data.tags.get(RECONNECTED) == "true":
        return
    records = _records(Layout().reports / f"{stage}_metrics.jsonl")
    client.log_batch(run_id, metrics=_metrics(records[lost["record"]:]))
    _terminate(client, run_id, lost, records, run.info.start_time)
    client.log_batch(run_id, tags=[RunTag(RECONNECTED, "true")])  # last, as BACKFILLED
    print(
        f"note: completed MLflow run {run_id} of {stage}, which lost the tracking server at step {lost['step']}: "
        f"{len(records) - lost['record']} metric records logged, ended {lost.get('status', 'KILLED')}",
        file=sys.stderr,
    )


def _metrics(records: list[dict]) -> list:
    """The metrics file's records as MLflow metrics, at their original steps and timestamps."""
    from mlflow.entities import Metric

    return [
        Metric(key, value, record["timestamp"], record["step"])
        for record in records
        for key, value in record.items()
        if key not in ("step", "timestamp")
    ]


def _terminate(client, run_id: str, ended: dict, records: list[dict], start_time: int) -> None:
    """End the run with the status and end time the stage recorded (`ended`). A stage killed outright (SIGKILL,
    the OOM killer) recorded no end: KILLED, at its last record."""
    last = records[-1]["timestamp"] if records else start_time
    client.set_terminated(run_id, ended.get("status", "KILLED"), ended.get("end_time", last))


def _records(path: Path) -> list[dict]:
    """The metrics file's records; a last line cut short by a kill is left out."""
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
