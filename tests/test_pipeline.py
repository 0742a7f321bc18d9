"""The whole pipeline through `dvc repro` on the tiny profile, in a temporary git + DVC copy of the repo."""

import json
import subprocess

import pytest
import yaml
from conftest import env_for, make_project

pytestmark = pytest.mark.slow


def _sh(project, *args, check=True):
    proc = subprocess.run(args, cwd=project, env=env_for(project), capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def _ran(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def test_dvc_repro_end_to_end(tmp_path):
    project = make_project(tmp_path / "project", dvc=True)
    _sh(project, "git", "init", "-q")
    _sh(project, "dvc", "init", "-q")
    first = _sh(project, "dvc", "repro")
    assert _ran(first.stdout)[:5] == ["fetch", "preprocess", "pretrain", "finetune", "evaluate"]
    assert _ran(_sh(project, "dvc", "repro").stdout) == []

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base"].update(experiment="renamed", num_workers=2)  # operational: where runs go, how data loads
    params["pretrain"]["train"]["checkpoint_every"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert json.loads(_sh(project, "dvc", "status", "--json", "dvc.yaml").stdout) == {}

    params["finetune"]["labels_per_class"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = _ran(_sh(project, "dvc", "repro").stdout)
    assert rerun[:2] == ["finetune", "evaluate"] and set(rerun) <= {"finetune", "evaluate", "promote"}

    shown = json.loads(_sh(project, "dvc", "metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert {"ssl", "scratch", "classical", "lift"} <= set(metrics)
    plots = _sh(project, "dvc", "plots", "show", "--json").stdout
    assert "confusion" in plots and "precision_recall" in plots
