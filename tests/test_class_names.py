"""`fetch.class_names` names the classes of a source that has only numbered labels (here sklearn-digits), and
the names reach every report and the served model; a bad value fails fetch before anything is written."""

import csv
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from conftest import env_for, make_project, merge, run_stage

NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MODEL = "sslflow-image"

PREDICT = """
import json, sys
import mlflow
import numpy as np
out = mlflow.pyfunc.load_model(sys.argv[1]).predict(np.load(sys.argv[2]))
print(json.dumps(out.to_dict(orient="list")))
"""


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def named(tmp_path_factory) -> Path:
    """The tiny pipeline, fetch to evaluate, with Fashion-MNIST's names given to the ten digit classes."""
    project = make_project(tmp_path_factory.mktemp("named") / "project", {"fetch": {"class_names": NAMES}})
    for stage in ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate"):
        run_stage(project, stage)
    return project


@pytest.mark.slow
def test_names_reach_reports_and_the_served_model(named, tmp_path):
    assert json.loads((named / "data" / "prepared" / "classes.json").read_text()) == NAMES
    assert json.loads((named / "data" / "raw" / "manifest.json").read_text())["class_names"] == "params"

    rows = {
        line.split(" | ")[0].removeprefix("| ") for line in (named / "reports" / "classification.md").open()
    }
    assert set(NAMES) <= rows
    assert set(NAMES) <= set(json.loads((named / "reports" / "classification" / "ssl.json").read_text()))
    with (named / "reports" / "plots" / "confusion" / "ssl.csv").open() as f:
        pairs = list(csv.DictReader(f))
    assert pairs and {p["actual"] for p in pairs} == set(NAMES)
    assert {p["predicted"] for p in pairs} <= set(NAMES)

    client = mlflow.MlflowClient(tracking_uri=env_for(named)["MLFLOW_TRACKING_URI"])
    model_uri = client.get_model_version_by_alias(MODEL, "challenger").source
    np.save(tmp_path / "images.npy", np.load(named / "data" / "prepared" / "test_images.npy")[:5])
    command = [sys.executable, "-c", PREDICT, model_uri, str(tmp_path / "images.npy")]
    served = subprocess.run(
        command, cwd=tmp_path, env=env_for(named), capture_output=True, text=True, timeout=300, check=False
    )
    assert served.returncode == 0, served.stderr[-3000:]
    frame = json.loads(served.stdout.strip().splitlines()[-1])
    assert list(frame) == ["label", *(f"proba_{name}" for name in NAMES)]
    assert len(frame["label"]) == 5 and set(frame["label"]) <= set(NAMES)


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    """A project whose fetch ran once with the source's own names."""
    project = make_project(tmp_path_factory.mktemp("fetched") / "project")
    run_stage(project, "fetch")
    return project


def copy_with(fetched: Path, tmp_path: Path, class_names) -> Path:
    project = tmp_path / "project"
    shutil.copytree(fetched, project)
    params = project / "params.yaml"
    changed = merge(yaml.safe_load(params.read_text()), {"fetch": {"class_names": class_names}})
    params.write_text(yaml.safe_dump(changed, sort_keys=False))
    return project


@pytest.mark.parametrize(
    "name, text", [("names.txt", "\n".join(NAMES) + "\n"), ("names.json", json.dumps(NAMES))]
)
def test_a_file_of_names(fetched, tmp_path, name, text):
    project = copy_with(fetched, tmp_path, f"lists/{name}")  # relative to the project, as fetch.path is
    (project / "lists").mkdir()
    (project / "lists" / name).write_text(text)
    run_stage(project, "fetch")
    raw = project / "data" / "raw"
    assert json.loads((raw / "classes.json").read_text()) == NAMES
    manifest = json.loads((raw / "manifest.json").read_text())
    file = str((project / "lists" / name).resolve())
    assert manifest["class_names"] == file
    assert {"path": file, "sha256": hashlib.sha256(text.encode()).hexdigest()} in manifest["inputs"]


BAD = {
    "too few": (NAMES[:9], None, ["9 names", "10 classes"]),
    "duplicate": ([*NAMES[:9], "Shirt"], None, ["'Shirt'", "6 and 9"]),
    "empty": ([*NAMES[:9], " "], None, ["label 9", "empty"]),
    "too few in a file": ("names.txt", "\n".join(NAMES[:9]), ["names.txt", "9 names", "10 classes"]),
    "missing file": ("no-such-names.txt", None, ["not found", "no-such-names.txt"]),
    "not a list": ("names.json", '{"0": "Shirt"}', ["names.json", "JSON list"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_class_names_fail_before_writing(fetched, tmp_path, case):
    class_names, text, expected = BAD[case]
    project = copy_with(fetched, tmp_path, class_names)
    if text is not None:
        (project / class_names).write_text(text)
    before = file_hashes(project / "data")

    result = run_stage(project, "fetch", check=False)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "fetch.class_names" in lines[0], (
        result.stderr
    )
    for text in expected:
        assert text in lines[0]
    assert file_hashes(project / "data") == before
