"""The team server in a real browser: a contributor logs a tiny pipeline to scripts/team_server.sh (PostgreSQL,
basic auth), then headless Chromium (Debian's, driven by Playwright, launched as in test_browser.py) signs in as
them and reads the experiment's runs by name and a run's metric; the wrong password gets the server's 401."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from conftest import make_project
from playwright.sync_api import sync_playwright
from servers import team_with_users
from test_browser import CHROMIUM, FLAGS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed: `apt-get install chromium` (.ci/run does this where apt-get works)",
    ),
]

USER = ("dana", "dana-team-password")
# The tiny pipeline, lighter still: each metric record is one request to the team server.
LIGHT = {"pretrain": {"epochs": 1}, "finetune": {"method": "supervised", "head_epochs": 1, "epochs": 2}}
NAMES = ["image/fetch sklearn-digits", "image/preprocess", "image/pretrain simclr",
         "image/finetune supervised 3/class seed 0"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The team server, with USER as a contributor on the experiment `sslflow`."""
    users = {USER[0]: (USER[1], "contributor")}
    with team_with_users(tmp_path_factory.mktemp("team"), users, ["sslflow-image"]) as url:
        yield url


@pytest.fixture(scope="module")
def pipeline(server, tmp_path_factory) -> Path:
    """The tiny image pipeline up to finetune, run by USER against the team server."""
    project = make_project(tmp_path_factory.mktemp("dana") / "project", LIGHT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=server, MLFLOW_TRACKING_USERNAME=USER[0], MLFLOW_TRACKING_PASSWORD=USER[1],
               OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for stage in ("fetch", "preprocess", "label", "pretrain", "finetune"):
        proc = subprocess.run([sys.executable, f"stages/image/{stage}.py"], cwd=project, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{stage} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        assert "warning: MLflow" not in proc.stderr, proc.stderr  # logged to the server, not only locally
    return project


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def signed_in(browser, username: str, password: str):
    context = browser.new_context(
        http_credentials={"username": username, "password": password}, viewport={"width": 1600, "height": 1000}
    )
    context.set_default_timeout(60_000)
    return context


def test_the_contributor_sees_the_runs_by_name_and_a_metric(server, pipeline, browser, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", USER[1])
    client = mlflow.MlflowClient(server)
    experiment = client.get_experiment_by_name("sslflow").experiment_id
    pretrain = json.loads((pipeline / "reports" / "lineage" / "pretrain.json").read_text())["run_id"]
    loss = client.get_run(pretrain).data.metrics["pretrain/epoch_loss"]
    context = signed_in(browser, *USER)
    page = context.new_page()
    page.goto(f"{server}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    for name in NAMES:
        page.get_by_text(name, exact=True).first.wait_for()
    page.goto(f"{server}/#/experiments/{experiment}/runs/{pretrain}")
    page.get_by_text("pretrain/epoch_loss", exact=True).first.wait_for()
    row = page.locator("tr, [role=row]").filter(has_text="pretrain/epoch_loss").first
    key, value = row.inner_text().splitlines()  # the run page's metrics table: key, latest value
    assert key == "pretrain/epoch_loss" and float(value) == pytest.approx(loss, rel=1e-9)
    context.close()


def test_a_wrong_password_gets_the_401(server, browser):
    context = signed_in(browser, USER[0], "not-danas-password")
    response = context.new_page().goto(f"{server}/")
    assert response.status == 401
    context.close()
