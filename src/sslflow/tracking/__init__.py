"""MLflow at the edge: stages open a run here and pass `run.log` down; the library never imports mlflow.

The store defaults to sqlite `mlflow.db` at the project root, by absolute URI, so that `dvc exp run --queue`
(which runs stages in temporary copies under `.dvc/tmp/exps/`) still writes to the user's store.
`MLFLOW_TRACKING_URI` overrides it.
"""

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslflow.atomic import write_json

LINEAGE_DIR = "lineage"


def project_root(cwd: Path | None = None) -> Path:
    """The user's project, also from inside a DVC experiment's temporary copy."""
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 4] == (".dvc", "tmp", "exps", parts[i + 3]) and i > 0:
            return Path(*parts[:i])
    return cwd


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


def read_lineage(stage: str) -> dict:
    path = Path(LINEAGE_DIR) / f"{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class StageRun:
    """One MLflow run per stage execution; `log(metrics, step)` is what training code receives."""

    def __init__(self, mlflow_module, run):
        self._mlflow = mlflow_module
        self.run_id = run.info.run_id

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path)
        else:
            self._mlflow.log_artifact(str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)


@contextmanager
def stage_run(
    stage: str, *, experiment: str, params: dict, upstream: str | None, tags: dict[str, str] | None = None
) -> Iterator[StageRun]:
    """Open the stage's run; tag it with the git commit, the pipeline lineage and `tags` (e.g. data hashes).

    `upstream` names the stage whose lineage this run continues (None starts a new pipeline id). The run id
    and pipeline id are written to `lineage/<stage>.json` for the stages downstream.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    root = project_root()
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(root / "mlartifacts").as_uri())
    mlflow.set_experiment(experiment)
    parent = read_lineage(upstream) if upstream else {}
    pipeline_id = parent.get("pipeline_id") or uuid.uuid4().hex[:12]
    all_tags = {
        "sslflow.stage": stage,
        "sslflow.pipeline_id": pipeline_id,
        "sslflow.upstream_run_id": parent.get("run_id", ""),
        "mlflow.source.git.commit": git_commit(),
        **(tags or {}),
    }
    with mlflow.start_run(run_name=stage, tags=all_tags) as run:
        mlflow.log_params(flatten(params, f"{stage}."))
        write_json(Path(LINEAGE_DIR) / f"{stage}.json", {"run_id": run.info.run_id, "pipeline_id": pipeline_id})
        yield StageRun(mlflow, run)


def log_image_classifier(model_dir: Path, name: str, classes_path: Path, example: "np.ndarray") -> str:
    """Log `model_dir/name.{safetensors,json}` as the pyfunc in tracking/pyfunc.py; returns the model URI."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    classes = json.loads(Path(classes_path).read_text())
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *example.shape[1:]))]),
        outputs=Schema([ColSpec("string", "label"), *[ColSpec("double", f"proba_{c}") for c in classes]]),
    )
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(Path(__file__).with_name("pyfunc.py")),
        artifacts={
            "weights": str(model_dir / f"{name}.safetensors"),
            "config": str(model_dir / f"{name}.json"),
            "classes": str(classes_path),
        },
        signature=signature,
        input_example=example,
    )
    return info.model_uri
