"""Team mode on real servers: the team server (scripts/team_server.sh: mlflow server, PostgreSQL, basic auth), two
maintainers and a contributor, each in their own workspace. Runs of everyone land in one experiment; only
maintainers register versions and move `champion`; a wrong password is one line; two promotes at once leave one
champion and both decisions recorded. Skips where PostgreSQL is not installed (.ci/run installs it)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest
import requests
from conftest import REPO, make_project
from servers import ADMIN, team_with_users

from sslflow.promotion import REASON, evidence_tags
from sslflow.tracking.team import grant

pytestmark = pytest.mark.slow  # servers and a pipeline: minutes

USERS = {"alice": "maintainer", "carol": "maintainer", "bob": "contributor"}
MODEL = "sslflow-image"


def password(user: str) -> str:
    return f"{user}-team-password"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    users = {user: (password(user), role) for user, role in USERS.items()}
    with team_with_users(tmp_path_factory.mktemp("team"), users, [MODEL]) as url:
        yield url


def env_of(url: str, user: str, secret: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    return {
        **env, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": secret or password(user), "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def stage(project: Path, name: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    script = project / "stages" / ("promote.py" if name == "promote" else f"image/{name}.py")
    proc = subprocess.run([sys.executable, str(script)], cwd=project, env=env, capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def start_stage(project: Path, name: str, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    script = project / "stages" / ("promote.py" if name == "promote" else f"image/{name}.py")
    return subprocess.Popen([sys.executable, str(script)], cwd=cwd or project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory) -> Path:
    """alice's workspace, run up to finetune against the team server."""
    project = make_project(tmp_path_factory.mktemp("alice") / "project")
    for name in ("fetch", "preprocess", "label", "pretrain", "finetune"):
        stage(project, name, env_of(server, "alice"))
    return project


def workspace(trained: Path, where: Path) -> Path:
    """A teammate's copy of the trained workspace (their own evaluate and promote from here on)."""
    return Path(shutil.copytree(trained, where / "project"))


@pytest.fixture
def as_admin(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    return mlflow.MlflowClient(server)


def registry_state(client: mlflow.MlflowClient) -> tuple:
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name = '{MODEL}'")}
    return client.get_registered_model(MODEL).aliases, versions


def test_contributor_logs_runs_but_only_the_maintainer_moves_champion(server, trained, tmp_path, as_admin):
    alice = workspace(trained, tmp_path / "alice")
    stage(alice, "evaluate", env_of(server, "alice"))
    out = stage(alice, "promote", env_of(server, "alice")).stdout  # a decision (the tiny model fails the gate)
    assert f"promote: {MODEL} version" in out and ("is champion" in out or "stays challenger" in out)
    before = registry_state(as_admin)

    bob = workspace(trained, tmp_path / "bob")
    evaluated = stage(bob, "evaluate", env_of(server, "bob"))  # his evaluate finishes: reports and a logged model
    assert "not registered" in evaluated.stdout and (bob / "reports" / "metrics" / "ssl.json").is_file()
    assert "user 'bob' has READ on registered model 'sslflow-image'" in evaluated.stderr
    refused = stage(bob, "promote", env_of(server, "bob"), check=False)
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "user 'bob' has READ" in errors[0] and "needs EDIT" in errors[0], refused.stderr
    assert registry_state(as_admin) == before  # no alias moved, no version or tag written
    report = (bob / "reports" / "promotion.json").read_text()
    assert '"promoted": false' in report and "user 'bob' has READ" in report

    # Both users' runs are in the one experiment, named by who ran them, through the server's REST API.
    found = requests.post(
        f"{server}/api/2.0/mlflow/runs/search", auth=ADMIN, timeout=30,
        json={"experiment_ids": [as_admin.get_experiment_by_name("sslflow").experiment_id],
              "filter": "tags.`sslflow.stage` = 'evaluate'"},
    ).json()["runs"]
    users = {tag["value"] for run in found for tag in run["data"]["tags"] if tag["key"] == "mlflow.user"}
    assert {"alice", "bob"} <= users
    # scripts/ui.sh, pointed at the server, prints the link to those runs there instead of starting a local UI.
    link = subprocess.run(["bash", str(REPO / "scripts" / "ui.sh")], env=env_of(server, "bob"), capture_output=True,
                          text=True, timeout=120)
    experiment = as_admin.get_experiment_by_name("sslflow").experiment_id
    assert link.returncode == 0, link.stderr
    assert f"{server}/#/experiments/{experiment}/runs?workflowType=machine_learning" in link.stdout


def test_a_wrong_password_is_one_line_and_training_keeps_its_local_metrics(server, trained, tmp_path):
    project = workspace(trained, tmp_path)
    env = env_of(server, "alice", secret="not-alices-password")
    trained_again = stage(project, "finetune", env)
    assert "refused user 'alice': wrong username or password" in trained_again.stderr
    assert (project / "reports" / "finetune_metrics.jsonl").read_text().strip()
    refused = stage(project, "promote", env, check=False)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(errors) == 1, refused.stderr
    assert "refused user 'alice': wrong username or password" in errors[0]


def version_with_evidence(client: mlflow.MlflowClient, model: str, macro_f1: float) -> str:
    """A version as evaluate registers one (a run's model, the evidence tags), without training anything."""
    experiment = client.get_experiment_by_name("sslflow").experiment_id
    run = client.create_run(experiment, run_name="evidence").info.run_id
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "MLmodel").write_text("dummy\n")
        client.log_artifacts(run, folder, "model")
    client.set_terminated(run)
    tags = evidence_tags(
        macro_f1=macro_f1, min_class_recall=0.8, data_hash="hash-a", run_id=run, git_commit="abc", chance_f1=0.1,
        labeled=20, baselines={"scratch": 0.4, "classical": 0.5},
    )
    return client.create_model_version(model, f"runs:/{run}/model", run, tags=tags).version


def test_two_maintainers_promoting_at_once_leave_one_champion_and_both_decisions(server, tmp_path, as_admin):
    model = "sslflow-concurrent"
    for user in ("alice", "carol"):
        grant(server, user, "maintainer", "sslflow", [model])
    spaces = {}
    for user, macro_f1 in (("alice", 0.7), ("carol", 0.8)):  # each evaluated one version in their workspace
        run = as_admin.get_model_version(model, version_with_evidence(as_admin, model, macro_f1)).run_id
        spaces[user] = tmp_path / user
        (spaces[user] / "reports" / "lineage").mkdir(parents=True)
        (spaces[user] / "params.yaml").write_text(f"registry:\n  model_names:\n    image: {model}\n")
        (spaces[user] / "reports" / "lineage" / "evaluate.json").write_text(json.dumps({"run_id": run}))
    running = {user: start_stage(REPO, "promote", env_of(server, user), cwd=space) for user, space in spaces.items()}
    for user, proc in running.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{user}: {err[-2000:]}"
    versions = {v.version: v.tags for v in as_admin.search_model_versions(f"name = '{model}'")}
    assert all(REASON in tags for tags in versions.values())  # both decisions recorded
    assert as_admin.get_registered_model(model).aliases["champion"] == "2"  # the better one, whichever ran first
    assert versions["2"][REASON].startswith("promoted")
    reports = {user: json.loads((space / "reports" / "promotion.json").read_text()) for user, space in spaces.items()}
    assert reports["carol"]["promoted"] and reports["carol"]["challenger"]["version"] == "2"
    # alice's version 1 was champion for a moment (if her promote ran first, her report says so) until carol's beat it
    assert reports["alice"]["challenger"]["version"] == "1" and versions["1"][REASON].startswith("promoted")


def test_the_team_server_refuses_the_old_default_admin_password(tmp_path):
    env = {**os.environ, "SSLFLOW_TEAM_DB": "postgresql+psycopg://mlflow@127.0.0.1:5/mlflow",
           "SSLFLOW_TEAM_HOME": str(tmp_path / "home"), "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "team_server.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: the admin password is MLflow's old default")
    inside = {**env, "MLFLOW_AUTH_ADMIN_PASSWORD": "long-enough-password", "SSLFLOW_TEAM_HOME": str(REPO / "x")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "team_server.sh")], env=inside, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "is inside the repository" in proc.stderr
