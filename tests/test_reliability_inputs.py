"""Reliability of inputs and outputs (issue 16): too few classes stop fetch and preprocess with one line, a full
disk while drawing a picture or logging a model is one line with nothing half-written, and the registered image
model takes grayscale images without their channel axis."""

import errno
import json
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest

from sslflow.artifacts import save_classifier
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.errors import SslflowError
from sslflow.faults import DiskFull
from sslflow.heads import Classifier
from sslflow.image import pictures
from sslflow.rawdata import require_two_classes, write_raw
from sslflow.tracking import log_image_classifier
from sslflow.tracking.logged import logged_model_or_nothing


def half_then_enospc(fig, target, **kwargs):
    with open(target, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(100))
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_drawing_a_picture_is_one_clear_line(tmp_path, monkeypatch):
    rows = {"original": np.zeros((3, 1, 8, 8), np.float32), "view": np.ones((3, 1, 8, 8), np.float32)}
    path = tmp_path / "encoder" / "pretext.png"
    pictures.image_rows(rows, path, "before")
    before = path.read_bytes()
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_enospc)
    with pytest.raises(DiskFull, match=r"no space left on the device while writing .*pretext.png; .*intact") as full:
        pictures.image_rows(rows, path, "after")
    assert "\n" not in str(full.value)
    assert path.read_bytes() == before  # the old picture is untouched and no temp file is left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["pretext.png"]
    assert plt.get_fignums() == []  # the figure was closed although the write failed


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def eio(fig, target, **kwargs):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", eio)
    with pytest.raises(OSError, match="I/O error"):
        pictures.image_rows({"x": np.zeros((2, 1, 4, 4), np.float32)}, tmp_path / "p.png", "t")


@pytest.mark.parametrize(
    ("labels", "found"), [([0, 0, 0], "only class 'a' (3) has examples"), ([], "no class has examples")]
)
def test_fewer_than_two_classes_with_examples_are_refused(labels, found):
    with pytest.raises(SslflowError, match=rf"data.npy: {re.escape(found)}; .*at least two classes: add more"):
        require_two_classes(np.array(labels, np.int64), ["a", "b"], "data.npy", "add more")
    require_two_classes(np.array([0, 1], np.int64), ["a", "b"], "data.npy", "add more")  # two are enough


def test_write_raw_refuses_one_class_before_writing(tmp_path):
    manifest = {"source": "imagefolder", "inputs": {}, "license": "", "skipped": []}
    with pytest.raises(SslflowError, match="only class 'cats' .*one subdirectory of fetch.path per class"):
        write_raw(tmp_path / "raw", np.zeros((4, 1, 2, 2), np.uint8), np.zeros(4, np.int64), ["cats"], manifest)
    assert not (tmp_path / "raw").exists()


# --- the registered image model: a full disk while logging it, and images without their channel axis ---


@contextmanager
def open_store(tmp_path):
    """A fresh MLflow tracking store (sqlite) whose artifacts live in tmp_path/mlartifacts, and a run in it."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifacts = tmp_path / "mlartifacts"
    experiment = mlflow.create_experiment("reliability", artifact_location=artifacts.as_uri())
    try:
        with mlflow.start_run(experiment_id=experiment):
            yield artifacts
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path) as artifacts:
        yield artifacts


def make_tiny_model(tmp_path):
    """models/<dir>/ssl.{safetensors,json} of an untrained 1-channel 8x8 classifier and its classes.json."""
    import torch

    torch.manual_seed(0)
    cfg = EncoderConfig(arch="small_cnn", in_channels=1, width=4, feature_dim=8)
    model_dir = tmp_path / "finetuned"
    model_dir.mkdir()
    save_classifier(Classifier(build_encoder(cfg), cfg.feature_dim, 3), cfg, 3, model_dir, "ssl")
    (tmp_path / "classes.json").write_text(json.dumps(["a", "b", "c"]))
    return model_dir, tmp_path / "classes.json"


@pytest.fixture
def tiny_model(tmp_path):
    return make_tiny_model(tmp_path)


IMAGES = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)


def test_disk_full_in_the_artifact_store_leaves_no_partial_model(store, tiny_model, monkeypatch):
    import mlflow

    model_dir, classes = tiny_model
    copy2, copied = shutil.copy2, []

    def fill_the_store(src, dst, **kwargs):  # the store's disk fills after a few files; the temp dir has room
        if Path(dst).resolve().is_relative_to(store.resolve()):
            if len(copied) == 3:
                Path(dst).write_bytes(Path(src).read_bytes()[:10])
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            copied.append(dst)
        return copy2(src, dst, **kwargs)

    monkeypatch.setattr(shutil, "copy2", fill_the_store)
    full = "no space left on the device while logging the ssl model to the MLflow artifact store"
    with pytest.raises(DiskFull, match=full) as raised, logged_model_or_nothing("ssl"):
        log_image_classifier(model_dir, "ssl", classes, IMAGES)
    message = str(raised.value)
    assert len(copied) == 3 and "\n" not in message and "the partly written model was removed" in message
    assert [p for p in store.rglob("*") if p.is_file()] == []  # nothing half-written is left in the store
    experiment = mlflow.active_run().info.experiment_id
    assert mlflow.search_logged_models(experiment_ids=[experiment], output_format="list") == []


def test_other_errors_while_logging_pass_through(store):
    with pytest.raises(OSError, match="permission"), logged_model_or_nothing("ssl"):
        raise OSError(errno.EACCES, "permission denied")


@pytest.fixture(scope="module")
def schemaless(tmp_path_factory):
    """The image pyfunc as log_image_classifier logs it, but without an input schema (the input shape in its
    metadata instead), loaded back as a user would: what predict itself does with any input."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from sslflow import tracking

    tmp_path = tmp_path_factory.mktemp("schemaless")
    model_dir, classes = make_tiny_model(tmp_path)
    outputs = Schema([ColSpec("string", "label"), *[ColSpec("double", f"proba_{c}") for c in "abc"]])
    with open_store(tmp_path):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(tracking.__file__).with_name("pyfunc.py")),
            artifacts={"weights": str(model_dir / "ssl.safetensors"), "config": str(model_dir / "ssl.json"),
                       "classes": str(classes)},
            signature=ModelSignature(inputs=None, outputs=outputs),
            metadata={"input_shape": [1, 8, 8]},
        )
        model = mlflow.pyfunc.load_model(info.model_uri)
    return model  # the run is closed: other tests open their own


def test_grayscale_images_without_the_channel_axis_get_it(schemaless):
    expected = schemaless.predict(IMAGES)
    assert list(expected.columns) == ["label", "proba_a", "proba_b", "proba_c"] and len(expected) == 5
    assert schemaless.predict(IMAGES[:, 0]).equals(expected)  # (N, 8, 8): the missing channel axis is added
    assert schemaless.predict(IMAGES[:, 0].astype(np.int64)).equals(expected)  # JSON numbers without a schema


@pytest.mark.parametrize(
    ("images", "got"),
    [
        (IMAGES[:, :, :4], "got an array of shape (5, 1, 4, 8)"),  # the channels are right, the size is not
        (np.zeros((2, 3, 8, 8), np.uint8), "got an array of shape (2, 3, 8, 8)"),
        (IMAGES[0, 0], "got an array of shape (8, 8)"),
        (IMAGES.astype(np.float64) + 0.5, "got float64 values"),
        (IMAGES.astype(np.int64) + 300, "got int64 values"),
    ],
)
def test_other_shapes_are_one_short_line_naming_the_expected_one(schemaless, images, got):
    import mlflow

    with pytest.raises(mlflow.MlflowException) as bad:
        schemaless.predict(images)
    message = bad.value.message
    assert "(N, 1, 8, 8) or (N, 8, 8)" in message and got in message
    assert "\n" not in message and len(message) < 200  # never the whole array


def test_the_logged_signature_lets_grayscale_without_channel_axis_through(store, tiny_model):
    import mlflow

    model = mlflow.pyfunc.load_model(log_image_classifier(*tiny_model[:1], "ssl", tiny_model[1], IMAGES))
    assert len(model.predict(IMAGES[:, 0])) == 5
