"""End to end in a real browser: two tiny pipeline runs with different label budgets, the MLflow UI started
by scripts/ui.sh, and headless Chromium (Debian's package, driven by Playwright) reading what a user reads:
the training runs behind the link ui.sh prints, named by what ran and with the data they used, both evaluate
runs with their macro-F1, their metrics side by side on the compare page, and the `champion` alias on the
registered model's page."""

import json
import re
import shutil
import urllib.parse
from pathlib import Path

import mlflow
import pytest
from conftest import env_for, make_project, run_stage
from playwright.sync_api import sync_playwright
from servers import local_server
from test_serving import NAME, NO_RECALL_FLOOR, crown, promote, set_params

from sslflow.metrics import read as read_metrics
from sslflow.splits import data_hash

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
# Headless in this sandbox: no GPU, no sandboxing of its own, and no traffic of Chromium's own to the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MACRO_F1 = "metrics.`ssl/macro_f1`"  # the runs table's column id of the metric
DATASET = "attributes.`Dataset`"  # and of the Dataset column

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed: `apt-get install chromium` (.ci/run does this where apt-get works)",
    ),
]


def evaluated(project: Path) -> dict:
    """The last evaluate run: its id and the ssl model's macro-F1 it reported."""
    return {
        "run_id": json.loads((project / "reports" / "lineage" / "evaluate.json").read_text())["run_id"],
        "macro_f1": read_metrics(project / "reports")["ssl"]["macro_f1"],
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The tiny pipeline run twice: 3, then 5 labels per class (only finetune onwards reruns, as in DVC)."""
    project = make_project(tmp_path_factory.mktemp("compared") / "project", NO_RECALL_FLOOR)
    for stage in ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate"):
        run_stage(project, stage)
    promote(project)
    first = evaluated(project)
    set_params(project, {"finetune": {"labels_per_class": 5}})
    for stage in ("finetune", "evaluate"):
        run_stage(project, stage)
    promote(project)
    crown(project)  # the tiny models are refused by the gate; the page is shown with a champion
    return project, [first, evaluated(project)]


@pytest.fixture(scope="module")
def ui_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui") / "ui.log"


@pytest.fixture(scope="module")
def ui(pipeline, ui_log):
    """`scripts/ui.sh` against the project's store, on a free port of 127.0.0.1."""
    project, _ = pipeline
    with local_server(
        lambda port: ["bash", str(REPO / "scripts" / "ui.sh"), "--port", str(port)],
        cwd=None,
        env=env_for(project),
        log=ui_log,
        health="/health",
    ) as url:
        yield url


def runs_link(ui_log: Path) -> str:
    """The link to the experiment's training runs that scripts/ui.sh printed before starting the UI."""
    [link] = re.findall(r"training runs: (\S+)", ui_log.read_text())
    return link


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        browser.set_default_timeout(60_000)
        yield browser.new_page()
        browser.close()


def experiment_id(project: Path) -> str:
    client = mlflow.MlflowClient(tracking_uri=env_for(project)["MLFLOW_TRACKING_URI"])
    return client.get_experiment_by_name("sslflow").experiment_id


def test_the_printed_link_opens_the_runs_named_by_what_ran_with_their_data(ui, ui_log, pipeline, page):
    project, runs = pipeline
    link = runs_link(ui_log)
    assert link == f"{ui}/#/experiments/{experiment_id(project)}/runs?workflowType=machine_learning"
    page.goto(link)
    names = [
        "image/fetch sklearn-digits",
        "image/preprocess",
        "image/pretrain simclr",
        "image/evaluate",
        "image/finetune fixmatch 3/class seed 0",
        "image/finetune fixmatch 5/class seed 0",
    ]
    for name in names:
        page.get_by_text(name, exact=True).first.wait_for()
    digest = data_hash(project / "data" / "prepared")[:12]
    for run in runs:  # the Dataset column: the data's name and digest, and the part the run used (its context)
        data = page.locator(f'[role=row][row-id="{run["run_id"]}"] [col-id="{DATASET}"]')
        data.wait_for()
        assert data.inner_text().splitlines() == [f"data/prepared ({digest})", "Test"]


def test_experiment_page_shows_both_runs_with_their_macro_f1(ui, ui_log, pipeline, page):
    project, runs = pipeline
    assert runs[0]["run_id"] != runs[1]["run_id"]
    page.goto(runs_link(ui_log))
    rows = {run["run_id"]: page.locator(f'[role=row][row-id="{run["run_id"]}"]') for run in runs}
    for row in rows.values():
        row.first.wait_for()  # the column picker lists the metrics of the runs loaded when it opens
    # The runs table starts with attribute columns only: add the metric as a user does, through "Columns".
    page.get_by_role("button", name="Columns", exact=True).click()
    page.get_by_placeholder("Search columns").fill("ssl/macro_f1")
    page.get_by_role("dialog").get_by_text("ssl/macro_f1", exact=True).click()
    page.keyboard.press("Escape")
    for run in runs:
        row = rows[run["run_id"]]
        cell = row.locator(f'[col-id="{MACRO_F1}"]')
        cell.wait_for()
        assert float(cell.inner_text()) == pytest.approx(run["macro_f1"], abs=5e-4)
        assert "image/evaluate" in row.first.inner_text()


def test_compare_page_lines_up_the_metrics_of_both_runs(ui, pipeline, page):
    project, runs = pipeline
    ids = urllib.parse.quote(json.dumps([run["run_id"] for run in runs]))
    page.goto(f"{ui}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment_id(project)]))}")
    page.get_by_text("ssl/macro_f1", exact=True).first.wait_for()
    text = page.inner_text("body")
    # macro-F1 only: the page leaves out metrics equal in both runs, and the tiny models' weakest-class recall
    # is often 0 in both
    for group in ("ssl", "ssl-supervised", "scratch", "classical"):
        assert f"{group}/macro_f1" in text


def test_registered_model_page_shows_the_champion(ui, pipeline, page):
    project, _ = pipeline
    champion = (
        mlflow.MlflowClient(tracking_uri=env_for(project)["MLFLOW_TRACKING_URI"])
        .get_model_version_by_alias(NAME, "champion")
        .version
    )
    page.goto(f"{ui}/#/models/{NAME}")
    row = page.locator("[role=row]").filter(has_text=f"Version {champion}")
    row.first.wait_for()
    assert "champion" in row.first.inner_text()
