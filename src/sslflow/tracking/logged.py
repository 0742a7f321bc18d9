"""Logging a model to the MLflow artifact store without leaving half of one behind when the disk fills up."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from sslflow.faults import DISK_FULL, DiskFull


def _discard_logged_model(model_id: str) -> str | None:
    """Delete what a failed `log_model` copied to the artifact store, and its record; returns the location."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        location = client.get_logged_model(model_id).artifact_location
    except Exception:  # the record itself was never written: nothing to clean
        return None
    url = urlparse(location)
    with suppress(Exception):  # best effort: the DiskFull line is what matters
        if url.scheme in ("", "file"):
            folder = Path(url2pathname(url.path))
            shutil.rmtree(folder, ignore_errors=True)
            if folder.name == "artifacts" and folder.parent.name == model_id:
                shutil.rmtree(folder.parent, ignore_errors=True)  # models/<model_id>/, made for this model only
        else:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(location).delete_artifacts()
    with suppress(Exception):
        client.delete_logged_model(model_id)  # no FAILED model left to list, load or register
    return location


@contextmanager
def logged_model_or_nothing(name: str) -> Iterator[None]:
    """Around `mlflow.<flavor>.log_model(...)`: when the disk fills up (ENOSPC/EDQUOT) while the model is written,
    the partly written model folder and its record are removed and one DiskFull line says so."""
    import mlflow

    def last_id() -> str | None:  # log_model records its model before it writes a byte of it
        with suppress(Exception):
            return mlflow.last_logged_model().model_id
        return None

    before = last_id()
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        model_id = last_id()
        location = _discard_logged_model(model_id) if model_id and model_id != before else None
        where = f"the MLflow artifact store ({location})" if location else "the MLflow artifact store"
        raise DiskFull(
            f"no space left on the device while logging the {name} model to {where}; the partly written model "
            "was removed, the local outputs are intact. Free space and rerun this stage"
        ) from None
