"""A team's shared DVC remote (a directory): one person runs the tiny image pipeline and pushes; a teammate's git
clone pulls the data, the encoder and the fine-tuned models, and its `dvc repro` runs nothing."""

import hashlib
import json
import shutil

import yaml
from conftest import REPO, make_project, ran, sh
from test_pipeline import _outputs


def _hashes(project) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in _outputs(project).items()}


def test_push_then_pull_into_a_second_clone_is_up_to_date_and_reruns_nothing(tmp_path):
    project = make_project(tmp_path / "project", dvc=True)
    # the repo's own: git leaves the per-run records (run ids, timings, checkpoints) to DVC, as in a real clone
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    sh(project, "dvc", "repro")
    sh(project, "dvc", "remote", "add", "-d", "team", str(tmp_path / "team-remote"))
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a run")
    sh(project, "dvc", "push")
    assert "in sync" in sh(project, "dvc", "status", "--cloud", "dvc.yaml").stdout

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "models" / "encoder").exists() and not (clone / "data" / "raw").exists()
    # dvc.yaml: the image track, the one that ran (a plain `dvc pull` also wants the text track's outputs)
    sh(clone, "dvc", "pull", "dvc.yaml")

    pulled = _hashes(clone)
    assert pulled == _hashes(project)
    for out in ("data/raw/", "data/prepared/", "models/encoder/", "models/finetuned/", "reports/lineage/"):
        assert any(path.startswith(out) for path in pulled), out
    assert "models/encoder/encoder.safetensors" in pulled and "models/finetuned/models.json" in pulled
    assert json.loads(sh(clone, "dvc", "status", "--json", "dvc.yaml").stdout) == {}
    assert sh(clone, "git", "status", "--porcelain").stdout == ""

    repro = sh(clone, "dvc", "repro").stdout
    assert ran(repro) == []
    for stage in yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]:
        assert f"Stage '{stage}' didn't change, skipping" in repro
    assert _hashes(clone) == pulled
    assert sh(clone, "git", "status", "--porcelain").stdout == ""  # dvc.lock as committed
    assert not (clone / "mlflow.db").exists()  # no stage opened an MLflow run
