"""The fetch and preprocess stages run as the pipeline runs them: subprocesses in a project directory."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOOD_PARAMS = "fetch:\n  source: sklearn-digits\npreprocess:\n  test_fraction: 0.2\n  val_fraction: 0.1\n"


def run_stage(stage, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "image" / f"{stage}.py")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def file_hashes(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def good_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    (project / "params.yaml").write_text(GOOD_PARAMS)
    for stage in ("fetch", "preprocess"):
        result = run_stage(stage, project)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{stage}:")
    return project


def test_good_run_outputs(good_project):
    raw, prepared = good_project / "data" / "raw", good_project / "data" / "prepared"
    images = np.load(raw / "images.npy")
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["source"] == "sklearn-digits" and manifest["count"] == 1797
    assert manifest["shape"] == [1, 8, 8] and manifest["license"].startswith("UCI")
    assert not (raw / "test_mask.npy").exists()

    split = json.loads((prepared / "split.json").read_text())
    counts = split["counts"]
    assert counts["train"] + counts["val"] + counts["test"] == 1797
    assert counts["pool"] == counts["train"] + counts["val"]
    assert counts["test"] == pytest.approx(0.2 * 1797, abs=10)
    assert len(np.load(prepared / "pool_images.npy")) == counts["pool"]
    assert not (prepared / "pool_labels.npy").exists()
    assert json.loads((prepared / "classes.json").read_text()) == [str(d) for d in range(10)]


def write_wrong_magic(project):
    folder = project / "idx"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (folder / name).write_bytes((0x0BADBEEF).to_bytes(4, "big") + bytes(8))


def write_one_class_folder(project):
    """An imagefolder source with a single class subdirectory: fine for fetch's reader, useless for a classifier."""
    from PIL import Image

    folder = project / "pets" / "cats"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")


def write_raw_arrays(project, labels, classes, test_mask=None):
    """data/raw as an older fetch could have left it (write_raw itself now refuses one class)."""
    raw = project / "data" / "raw"
    images = np.zeros((len(labels), 1, 8, 8), np.uint8)
    labels = np.asarray(labels, np.int64)
    for name, array in (("images", images), ("labels", labels), ("test_mask", test_mask)):
        if array is not None:
            np.save(raw / f"{name}.npy", array, allow_pickle=False)
    (raw / "classes.json").write_text(json.dumps(classes))
    (raw / "ids.json").write_text(json.dumps([f"old#{i}" for i in range(len(labels))]))
    (raw / "paths.json").write_text(json.dumps([None] * len(labels)))
    manifest = json.loads((raw / "manifest.json").read_text())
    arrays = (raw / "images.npy").read_bytes() + (raw / "labels.npy").read_bytes()
    manifest["sha256"] = hashlib.sha256(arrays).hexdigest()
    manifest["test_count"] = None if test_mask is None else int(test_mask.sum())
    (raw / "manifest.json").write_text(json.dumps(manifest))


def write_one_class_raw(project):
    write_raw_arrays(project, [0] * 20, ["cats"])


def write_class_only_in_official_test(project):
    labels = [0] * 10 + [1] * 10 + [2] * 4
    write_raw_arrays(project, labels, ["a", "b", "c"], np.array([False] * 16 + [True] * 8))


BAD_CASES = {
    "one class folder": (
        "fetch", "fetch:\n  source: imagefolder\n  path: pets\n", write_one_class_folder,
        ["only class 'cats' (6) has examples", "at least two classes", "one subdirectory of fetch.path per class"],
    ),
    "one class in raw": (
        "preprocess", GOOD_PARAMS, write_one_class_raw,
        ["labels.npy", "only class 'cats' (20)", "at least two classes"],
    ),
    "no training example": (
        "preprocess", GOOD_PARAMS, write_class_only_in_official_test, ["class 'c' has only 0 examples outside"],
    ),
    "unknown source": ("fetch", "fetch:\n  source: kaggle\n", None, ["fetch.source", "kaggle"]),
    "unknown key": ("fetch", "fetch:\n  source: sklearn-digits\n  sauce: 1\n", None, ["fetch.sauce"]),
    "wrong type": ("preprocess", GOOD_PARAMS.replace("0.2", '"x"'), None, ["preprocess.test_fraction"]),
    "missing idx dir": ("fetch", "fetch:\n  source: idx\n  path: no/such/dir\n", None, ["fetch.path"]),
    "wrong magic": ("fetch", "fetch:\n  source: idx\n  path: idx\n", write_wrong_magic, ["0x0badbeef"]),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_cleanly_and_keeps_outputs(good_project, tmp_path, case):
    stage, params, setup, expected = BAD_CASES[case]
    project = tmp_path / "project"
    shutil.copytree(good_project, project)
    (project / "params.yaml").write_text(params)
    if setup:
        setup(project)
    before = file_hashes(project / "data")

    result = run_stage(stage, project)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in expected:
        assert text in lines[0]
    if case == "missing idx dir":
        assert str((project / "no/such/dir").resolve()) in lines[0]  # reported resolved
    if case == "wrong magic":
        assert str((project / "idx" / "train-images-idx3-ubyte").resolve()) in lines[0]
    assert file_hashes(project / "data") == before


def test_preprocess_without_raw_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text(GOOD_PARAMS)
    result = run_stage("preprocess", tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "data/raw/manifest.json not found" in result.stderr
