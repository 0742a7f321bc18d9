"""MLflow at the edge: stages open a run here and pass `run.log` down; the library never imports mlflow.

The store defaults to sqlite `mlflow.db` at the project root, by absolute URI, so that `dvc exp run --queue`
(which runs stages in temporary copies under `.dvc/tmp/exps/`) still writes to the user's store.
`MLFLOW_TRACKING_URI` overrides it.
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from sslflow.atomic import write_json, write_text
from sslflow.errors import SslflowError
from sslflow.faults import Interrupted, watch_parent
from sslflow.paths import Layout, project_dir
from sslflow.tracking.backfill import (
    UPSTREAM,
    UPSTREAM_OFFLINE_ID,
    WENT_OFFLINE,
    complete_lost_run,
    read_lineage,
    upstream_run_id,
)
from sslflow.tracking.logged import logged_model_or_nothing
from sslflow.tracking.records import close_orphaned_runs, owner_tags, sigterm_ends_the_run
from sslflow.tracking.team import is_server, refused_login, user

PROBE_TIMEOUT_S = 5
DIGEST_CHARS = 12  # of a data hash in MLflow's Dataset column: as preprocess prints it (MLflow allows 36)
# A stage's console shows its own progress bar and summary; MLflow's per-artifact upload bars are noise there.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def project_root(cwd: Path | None = None) -> Path:
    """The user's project, also from inside a DVC experiment's temporary copy."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 4] == (".dvc", "tmp", "exps", parts[i + 3]) and i > 0:
            return Path(*parts[:i])
    return project_dir(cwd)


def tracking_uri(root: Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(root) / 'mlflow.db'}"


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}, the form MLflow params take."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def finetune_run_name(
    track: str, method: str, labels_per_class: int | None, label_fraction: float | None, label_seed: int
) -> str:
    """E.g. "image/finetune fixmatch 10/class seed 0": the budget is labels per class (labeled sentences,
    "200 sents", for token classification) or a percentage of the train split ("5%"), drawn with `label_seed`;
    with neither, the labels people gave in fetch.labels."""
    if labels_per_class is None and label_fraction is None:
        return f"{track}/finetune {method} fetch.labels"
    unit = " sents" if track == "token-classification" else "/class"
    budget = f"{labels_per_class}{unit}" if labels_per_class is not None else f"{label_fraction * 100:g}%"
    return f"{track}/finetune {method} {budget} seed {label_seed}"


def runs_page(ui: str, experiment: str) -> str:
    """The MLflow UI's page of the experiment's training runs (MLflow 3 otherwise opens its GenAI overview), or
    the experiments list while the experiment does not exist yet (or cannot be looked up). `ui`: the UI's base
    URL."""
    import mlflow

    try:
        found = mlflow.MlflowClient(tracking_uri()).get_experiment_by_name(experiment)
    except mlflow.exceptions.MlflowException:  # e.g. a server that wants a login first: its experiments list
        found = None
    active = found is not None and found.lifecycle_stage == "active"
    page = f"experiments/{found.experiment_id}/runs" if active else "experiments"
    return f"{ui}/#/{page}?workflowType=machine_learning"


class StageRun:
    """One stage execution; `log(metrics, step)` is what training code receives.

    Metrics always go to `metrics_path` (JSON lines), and to MLflow while it answers: if the tracking server
    cannot be reached, or stops answering, there is one warning and the stage goes on with the local file
    only. `run_id` is None when the run never reached MLflow. `went_offline(step, sent)` is called when an open
    run loses MLflow: the last step logged (None before any) and how many records of the metrics file MLflow
    had been sent.
    """

    def __init__(self, mlflow_module, run_id: str | None, metrics_path: Path, went_offline: Callable | None = None):
        self._mlflow = mlflow_module
        self.run_id = run_id
        self.metrics_path = metrics_path
        self.online = run_id is not None
        self._went_offline = went_offline
        self._step = None
        # the records already in the file (a resume keeps those up to its checkpoint) were sent by their process
        self._sent = len(metrics_path.read_text().splitlines()) if metrics_path.is_file() else 0

    def _call(self, method: str, *args, **kwargs) -> bool:
        if not self.online:
            return False
        try:
            getattr(self._mlflow, method)(*args, **kwargs)
        except Exception as err:  # any tracking failure must cost the stage nothing but MLflow's copy
            _warn_offline(err, self.metrics_path)
            self.online = False
            if self._went_offline is not None:
                self._went_offline(self._step, self._sent)
            return False
        return True

    def log(self, metrics: dict[str, float], step: int) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        now = _now_ms()  # MLflow gets the file's timestamp: a record sent again after a drop is stored once
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": step, "timestamp": now, **metrics}) + "\n")
        self._step = step
        if self._call("log_metrics", metrics, step=step, timestamp=now):
            self._sent += 1

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self._call("log_artifacts", str(path), artifact_path)
        else:
            self._call("log_artifact", str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("set_tags", tags)

    def end(self, status: str) -> None:
        if self.run_id is None:
            return
        try:  # also after going offline: end_run pops MLflow's active run, so its exit hook does not retry
            self._mlflow.end_run(status)
        except Exception as err:
            if self.online:
                _warn_offline(err, self.metrics_path)


def _warn_offline(err: BaseException, metrics_path: Path) -> None:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    problem = f"is unreachable ({reason[:200]})"
    if getattr(err, "error_code", "") == "UNAUTHENTICATED":  # a wrong password: say whose, not the HTTP body
        problem = f"refused the login: {refused_login(tracking_uri())}"
    print(
        f"warning: MLflow tracking at {tracking_uri()} {problem}; "
        f"metrics go to {metrics_path} only, and the run is not recorded in MLflow from here on",
        file=sys.stderr,
    )


def _probe(uri: str) -> None:
    """Fail within seconds if nothing listens at an http(s) tracking URI, instead of after MLflow's retries."""
    url = urlparse(uri)
    if url.scheme in ("http", "https"):
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()


def _keep_metrics(path: Path, until_step: int | None) -> None:
    """Start the local metrics file: empty, or on a resume its records up to the checkpoint's step, so that
    it reads like one uninterrupted run."""
    lines = path.read_text().splitlines() if until_step is not None and path.is_file() else []
    kept = [line for line in lines if (step := _step_of(line)) is not None and step <= until_step]
    write_text(path, "".join(f"{line}\n" for line in kept))


def _step_of(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line cut short by a kill
        return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dataset(data: tuple[Path, str, str]):
    """`data` = (directory, its hash, context) as the run's input: MLflow's Dataset column shows the directory's
    path in the project as the name, the hash's first DIGEST_CHARS as the digest, and the context."""
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    path, digest, context = data
    where = Path(path).resolve()
    try:  # named as in the user's project, also from a DVC experiment's temporary copy
        name = where.relative_to(project_dir()).as_posix()
        where = project_root() / name
    except ValueError:  # outside the project
        name = where.as_posix()
    # A MetaDataset carries the name, source and digest only: nothing is loaded just to be logged.
    source = get_dataset_source_from_json(json.dumps({"uri": str(where)}), source_type="local")
    return MetaDataset(source, name=name, digest=digest[:DIGEST_CHARS])


def _artifact_location() -> str | None:
    """The project's mlartifacts/ beside its sqlite store; on a tracking server, the server's own (proxied) store."""
    return None if is_server(tracking_uri()) else (project_root() / "mlartifacts").as_uri()


def _open_run(
    mlflow,
    stage: str,
    run_name: str,
    experiment: str,
    params: dict,
    tags: dict,
    data: tuple[Path, str, str] | None,
    resume_run_id: str | None,
    upstream: str | None,
    parent: dict,
):
    uri = tracking_uri()
    _probe(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=_artifact_location())
    mlflow.set_experiment(experiment)
    client = mlflow.MlflowClient(uri)
    lock = project_root() / "reports" / "lineage" / ".backfill.lock"
    complete_lost_run(client, stage, lock)  # before this run restarts the metrics file its last run still needs
    upstream_id = parent.get("run_id", "")
    if "offline" in parent or WENT_OFFLINE in parent:  # the server missed (part of) the upstream run: now it gets it
        upstream_id = upstream_run_id(client, upstream, lock) or upstream_id
        tags = {**tags, UPSTREAM: upstream_id}
    run = None
    if resume_run_id:
        try:
            run = mlflow.start_run(run_id=resume_run_id, tags=tags)
        except mlflow.exceptions.MlflowException as err:  # the run was deleted, or lived in another store
            print(
                f"note: cannot continue MLflow run {resume_run_id} ({err}); starting a new run linked to it",
                file=sys.stderr,
            )
            tags = {**tags, "sslflow.resumed_from_run_id": resume_run_id}
    run = run or mlflow.start_run(run_name=run_name, tags=tags)
    try:  # a crashed predecessor's run: ended here, since its process could not
        for closed in close_orphaned_runs(client, run.info.experiment_id, stage, keep=run.info.run_id):
            print(f"note: marked MLflow run {closed} of {stage} KILLED: its process is gone", file=sys.stderr)
    except mlflow.exceptions.MlflowException as err:
        print(f"note: cannot look for runs of {stage} left RUNNING ({err})", file=sys.stderr)
    # A resumed run keeps the params it was started with: MLflow refuses to change a logged value.
    logged = mlflow.get_run(run.info.run_id).data.params if resume_run_id else {}
    # The upstream run's params come along (transitively), so that comparing two evaluate runs in the UI
    # shows the finetune and pretrain settings that produced them.
    try:
        inherited = mlflow.get_run(upstream_id).data.params if upstream_id else {}
    except mlflow.exceptions.MlflowException:  # the upstream run lives in another store
        inherited = {}
    own = flatten(params, f"{stage}.")
    mlflow.log_params({k: v for k, v in {**inherited, **own}.items() if k not in logged})
    if data is not None:
        mlflow.log_input(_dataset(data), context=data[2])
    return run


def _offline_record(
    stage: str, run_name: str, experiment: str, params: dict, tags: dict, data: tuple[Path, str, str] | None,
    resume_run_id: str | None, upstream: str | None, start_time: int,
) -> dict:
    """What the run would have held in MLflow, for tracking/backfill.py to create it once the server answers
    (the metrics are in the stage's metrics file); the end is added when the stage ends."""
    resumed = {"sslflow.resumed_from_run_id": resume_run_id} if resume_run_id else {}
    return {
        "id": uuid.uuid4().hex,
        "experiment": experiment,
        "artifact_location": _artifact_location(),
        "run_name": run_name,
        "upstream": upstream,
        "start_time": start_time,
        "tags": {**tags, **resumed},
        "params": {k: str(v) for k, v in flatten(params, f"{stage}.").items()},  # as mlflow.log_params has them
        "data": {**_dataset(data).to_dict(), "context": data[2]} if data is not None else None,
    }


@contextmanager
def stage_run(
    stage: str,
    *,
    run_name: str,
    experiment: str,
    params: dict,
    upstream: str | None,
    tags: dict[str, str] | None = None,
    data: tuple[Path, str, str] | None = None,
    resume_run_id: str | None = None,
    resume_step: int | None = None,
) -> Iterator[StageRun]:
    """Open the stage's run; tag it with the git commit, the pipeline lineage and `tags` (e.g. data hashes).

    `run_name` says what ran: track, stage, and method, budget and draw where they apply, e.g.
    "image/finetune fixmatch 10/class seed 0". `data` = (directory, its hash, context: the part the run used,
    e.g. train, pool, test) goes to MLflow's Dataset column. `upstream` names the stage whose lineage this run
    continues (None starts a new pipeline id). The run id and pipeline id are written to
    `reports/lineage/<stage>.json` for the stages downstream; a run that cannot reach MLflow records there what
    it would have logged, and the next stage downstream that reaches MLflow creates it; one that loses MLflow
    mid-way records the step and, at its end, how it ended, and that stage completes it (tracking/backfill.py).
    A stage resuming from a checkpoint passes its step and the run id recorded with it: the MLflow run continues
    (or a new one links to it) and `reports/<stage>_metrics.jsonl` keeps the records up to that step. The run
    ends FINISHED, KILLED (stop signal, SIGTERM included, or the parent process gone: faults.watch_parent) or
    FAILED (any other exception); runs of the same stage that a killed process left RUNNING are marked KILLED.
    """
    import mlflow

    watch_parent()  # `dvc repro` killed: stop too, instead of running on as an orphan holding DVC's lock

    metrics_path = Layout().reports / f"{stage}_metrics.jsonl"
    parent = read_lineage(upstream) if upstream else {}
    pipeline_id = parent.get("pipeline_id") or uuid.uuid4().hex[:12]
    all_tags = {
        "sslflow.stage": stage,
        "sslflow.pipeline_id": pipeline_id,
        UPSTREAM: parent.get("run_id", ""),
        **({UPSTREAM_OFFLINE_ID: parent["offline"]["id"]} if "offline" in parent else {}),
        "mlflow.source.git.commit": git_commit(),
        **owner_tags(),
        **({"mlflow.user": user()} if user() else {}),  # on a team server: who ran it, as the server knows them
        **({"sslflow.resumed_at_step": str(resume_step)} if resume_step is not None else {}),
        **(tags or {}),
    }
    start_time = _now_ms()
    try:
        run_id = _open_run(
            mlflow, stage, run_name, experiment, params, all_tags, data, resume_run_id, upstream, parent
        ).info.run_id
    except Exception as err:  # server down, refused, or a broken store: train anyway, locally
        _warn_offline(err, metrics_path)
        run_id = None
    _keep_metrics(metrics_path, resume_step)  # after _open_run: completing a lost run reads the records first
    lineage_path = Layout().lineage / f"{stage}.json"
    lineage = {"run_id": run_id or "", "pipeline_id": pipeline_id}
    offline = None
    if run_id is None:
        offline = _offline_record(
            stage, run_name, experiment, params, all_tags, data, resume_run_id, upstream, start_time
        )
        lineage["offline"] = offline
    write_json(lineage_path, lineage)

    def went_offline(step: int | None, sent: int) -> None:  # for the stage downstream that completes the run
        lineage[WENT_OFFLINE] = {"step": step, "record": sent}
        write_json(lineage_path, lineage)

    run = StageRun(mlflow, run_id, metrics_path, went_offline)

    def end(status: str) -> None:
        run.end(status)
        if offline is not None:  # how the run created later ends
            write_json(lineage_path, {**lineage, "offline": {**offline, "status": status, "end_time": _now_ms()}})
        elif WENT_OFFLINE in lineage:  # and how the run completed later ends
            lineage[WENT_OFFLINE].update(status=status, end_time=_now_ms())
            write_json(lineage_path, lineage)

    try:
        with sigterm_ends_the_run():
            yield run
    except (Interrupted, KeyboardInterrupt):
        end("KILLED")
        raise
    except BaseException:
        end("FAILED")
        raise
    end("FINISHED")


def record_data_stage(
    stage: str,
    *,
    run_name: str,
    experiment: str,
    params: dict,
    upstream: str | None,
    tags: dict[str, str],
    data: tuple[Path, str, str],
    metrics: dict[str, float],
    files: list[Path],
) -> None:
    """The run of a stage that trains nothing (fetch, preprocess): its params, counts, provenance files and
    data hash, in the same lineage as the training runs downstream; `data` is what it wrote (as in stage_run).
    Opened after the outputs are written, so that bad input fails before anything is tracked."""
    with stage_run(
        stage, run_name=run_name, experiment=experiment, params=params, upstream=upstream, tags=tags, data=data
    ) as run:
        run.log(metrics, 0)
        for path in files:
            run.log_artifact(path, stage)


def _log_pyfunc(
    name: str, python_model: str, artifacts: dict[str, Path], requirements: tuple[str, ...], signature, example,
    metadata: dict,
) -> str:
    """Log the pyfunc `python_model` (a file in this package) as the open run's "model", with `artifacts`, sslflow
    as its code and `requirements` pinned to the installed versions; returns the model URI. A failure leaves no
    logged model behind (logged_model_or_nothing)."""
    from importlib.metadata import version

    import mlflow

    import sslflow

    with logged_model_or_nothing(name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name(python_model)),
            artifacts={key: str(path) for key, path in artifacts.items()},
            code_paths=[str(Path(sslflow.__file__).parent)],
            pip_requirements=[f"{dist}=={version(dist)}" for dist in requirements],
            signature=signature,
            input_example=example,
            metadata=metadata,
        )
    return info.model_uri


# What the logged model needs besides its code (sslflow travels with it as code_paths).
SERVING_REQUIREMENTS = ("mlflow", "torch", "torchvision", "safetensors", "numpy", "pandas", "pydantic", "pyyaml")


def log_image_classifier(model_dir: Path, name: str, classes_path: Path, example: np.ndarray) -> str:
    """Log `model_dir/name.{safetensors,json}` as the pyfunc in tracking/pyfunc.py; returns the model URI.

    `example`: uint8 (n, C, H, W) test images; it fixes the input schema (any N, this C, H, W).
    """
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if mlflow.active_run() is None:  # fail closed: no model is logged, so none can be registered or promoted
        raise SslflowError(
            f"cannot log the {name} model: no MLflow run is open (tracking at {tracking_uri()} was unreachable); "
            "the local reports are written: rerun this stage once the server answers"
        )
    if example.dtype != np.uint8 or example.ndim != 4 or len(example) == 0:
        raise SslflowError(f"the input example must be uint8 (n, C, H, W) images, got {example.dtype} {example.shape}")
    artifacts = {
        "weights": model_dir / f"{name}.safetensors",
        "config": model_dir / f"{name}.json",
        "classes": Path(classes_path),
    }
    for path in artifacts.values():
        if not path.is_file():
            raise SslflowError(f"cannot log the model: {path} not found")
    classes = json.loads(artifacts["classes"].read_text())
    shape = list(example.shape[1:])
    # No input schema: MLflow would refuse (N, H, W) for a one-channel model, which predict accepts, and its
    # schema error prints the whole array; predict checks the shape itself against `input_shape` in one line.
    signature = ModelSignature(
        inputs=None,
        outputs=Schema([ColSpec("string", "label"), *[ColSpec("double", f"proba_{c}") for c in classes]]),
    )
    return _log_pyfunc(
        name, "pyfunc.py", artifacts, SERVING_REQUIREMENTS, signature, example,
        {
            "input": f"uint8 images (N, {', '.join(map(str, shape))}) as in training, pixel values 0-255",
            "output": "label: the class name; proba_<class>: its probability, one column per class",
            "classes": classes,
            "input_shape": shape,
        },
    )


TEXT_SERVING_REQUIREMENTS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "scipy",  # the NER word-class tagger (sslflow.text.wordclasses, baselines)
    "scikit-learn",
)


def log_text_classifier(model_dir: Path, name: str, task: str, example: list[str]) -> str:
    """Log `model_dir/name.{safetensors,json}` (or the NER tagger `name.npz`) with the tokenizer, encoding
    settings and class (or tag) names beside it in `model_dir` as the pyfunc in tracking/text_pyfunc.py; returns
    the model URI.

    `example`: a few raw test strings; the input is a column `text` of strings.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    if mlflow.active_run() is None:  # fail closed, as log_image_classifier does
        raise SslflowError(
            f"cannot log the {name} model: no MLflow run is open (tracking at {tracking_uri()} was unreachable); "
            "the local reports are written: rerun this stage once the server answers"
        )
    tagger = model_dir / f"{name}.npz"  # the NER word-class tagger (sslflow.text.wordclasses): arrays only
    weights = {"weights": tagger} if tagger.is_file() else {
        "weights": model_dir / f"{name}.safetensors", "config": model_dir / f"{name}.json"
    }
    artifacts = {
        **weights,
        "tokenizer": model_dir / "tokenizer.json",
        "encoding": model_dir / "encoding.json",
        "classes": model_dir / "classes.json",
    }
    for path in artifacts.values():
        if not path.is_file():
            raise SslflowError(f"cannot log the model: {path} not found")
    classes = json.loads(artifacts["classes"].read_text())
    if task == "token-classification":
        span = Object(
            [Property("text", "string"), Property("type", "string"), Property("start", "long"), Property("end", "long")]
        )
        outputs = Schema([ColSpec(Array(span), "entities")])
        output = "entities: per string, a list of {text, type, start, end} with character offsets (end exclusive)"
    else:
        outputs = Schema([ColSpec("string", "label"), *[ColSpec("double", f"proba_{c}") for c in classes]])
        output = "label: the class name; proba_<class>: its probability, one column per class"
    return _log_pyfunc(
        name, "text_pyfunc.py", artifacts, TEXT_SERVING_REQUIREMENTS,
        ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=outputs),
        pd.DataFrame({"text": example}),
        {"task": task, "input": "text: raw strings", "output": output, "classes": classes},
    )
