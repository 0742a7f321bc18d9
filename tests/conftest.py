"""Shared fixtures: a tiny copy of the project (sklearn digits, one short epoch) in a temp directory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "base": {"num_workers": 0},
    "fetch": {"source": "sklearn-digits"},
    "pretrain": {"epochs": 1, "batch_size": 64, "encoder": {"width": 8}, "optim": {"warmup_epochs": 0}},
    "finetune": {"epochs": 2, "labels_per_class": 3, "fixmatch": {"steps": 3}, "distill": {"steps": 3}},
}


def pytest_collection_modifyitems(items):
    """Tests marked `gpu` skip on a machine without CUDA."""
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def merge(tree: dict, overrides: dict) -> dict:
    out = dict(tree)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def make_project(path: Path, overrides: dict | None = None, *, dvc: bool = False) -> Path:
    """Copy stages, both tracks' dvc.yaml and params.yaml into `path` with the tiny profile (plus `overrides`)."""
    (path / "text").mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for pipeline in ("dvc.yaml", "text/dvc.yaml"):
        shutil.copy(REPO / pipeline, path / pipeline)
    (path / "labels").mkdir(exist_ok=True)  # fetch.labels' folder, as a clone has it (its .gitkeep)
    shutil.copy(REPO / "labels" / ".gitkeep", path / "labels" / ".gitkeep")
    (path / "text" / "labels").mkdir(exist_ok=True)  # text.fetch.labels' folder, likewise
    shutil.copy(REPO / "text" / "labels" / ".gitkeep", path / "text" / "labels" / ".gitkeep")
    params = merge(merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY), overrides or {})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if dvc:  # dvc.yaml lists library files as deps (and text/pretrained, kept by a .gitkeep): the same tree
        shutil.copytree(REPO / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        (path / "text" / "pretrained").mkdir()
        shutil.copy(REPO / "text" / "pretrained" / ".gitkeep", path / "text" / "pretrained" / ".gitkeep")
    return path


def env_for(project: Path) -> dict:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def run_stage(project: Path, stage: str, modality: str = "image", check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(project / "stages" / modality / f"{stage}.py")],
        cwd=project, env=env_for(project), capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def sh(project: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    """A command (git, dvc, ...) in `project` with its tracking store; fails the test on a non-zero exit."""
    proc = subprocess.run(args, cwd=project, env=env_for(project), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def ran(output: str) -> list[str]:
    """The stages `dvc repro` printed it ran, in order."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    """All five image stages run once on the tiny profile; tests must not modify the result."""
    project = make_project(tmp_path_factory.mktemp("tiny") / "project")
    for stage in ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate"):
        run_stage(project, stage)
    return project


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An initialised sqlite MLflow store; creating its tables takes ~10 s, so tests copy this one."""
    import mlflow

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path
