"""The promote stage against a real MLflow registry (sqlite in tmp_path) holding tiny dummy versions."""

import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import mlflow
import pytest

from sslflow.promotion import REASON, evidence_tags
from sslflow.tracking.registry import CHALLENGER, CHAMPION, ModelRegistry

REPO = Path(__file__).resolve().parents[1]
PROMOTE = REPO / "stages" / "promote.py"
NAME = "digits"
PARAMS = f"registry:\n  model_names:\n    image: {NAME}\npromote:\n  min_delta: 0.01\n  min_class_recall: 0.5\n"


@pytest.fixture
def project(tmp_path, empty_store, monkeypatch):
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("dummy\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def register(project, macro_f1, min_class_recall=0.7, data_hash="hash-a", champion=False, baseline=0.5) -> str:
    """A new dummy version as evaluate registers one (alias challenger); optionally also the champion."""
    registry = ModelRegistry(NAME, f"sqlite:///{project / 'mlflow.db'}")
    tags = evidence_tags(
        macro_f1=macro_f1,
        min_class_recall=min_class_recall,
        data_hash=data_hash,
        run_id=f"run-{macro_f1}",
        git_commit="abc",
        chance_f1=0.1,
        labeled=20,
        baselines={"scratch": baseline - 0.1, "classical": baseline},
    )
    version = registry.register_challenger(str(project / "model"), tags)
    if champion:
        client(project).set_registered_model_alias(NAME, CHAMPION, version)
    return version


def client(project):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def aliases(project) -> dict[str, str]:
    return {alias: str(v) for alias, v in client(project).get_registered_model(NAME).aliases.items()}


def promote(capsys) -> str:
    """Run the stage in this process, as `python stages/promote.py` would; returns its stdout."""
    with patch.object(sys, "argv", [str(PROMOTE)]):  # its argument parser must not see pytest's
        runpy.run_path(str(PROMOTE), run_name="__main__")
    return capsys.readouterr().out


def promote_process(project, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROMOTE)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_first_model_becomes_champion(project, capsys):
    v1 = register(project, 0.80)
    assert f"version {v1} is champion" in promote(capsys)
    assert aliases(project) == {CHALLENGER: v1, CHAMPION: v1}
    result = json.loads((project / "reports" / "promotion.json").read_text())
    assert result["promoted"] and result["champion"] is None and result["challenger"]["macro_f1"] == 0.80
    assert client(project).get_model_version(NAME, v1).tags[REASON].startswith("promoted: first model")


def test_better_challenger_takes_champion(project, capsys):
    v1 = register(project, 0.80, champion=True)
    v2 = register(project, 0.85)
    promote(capsys)
    assert aliases(project) == {CHALLENGER: v2, CHAMPION: v2}
    result = json.loads((project / "reports" / "promotion.json").read_text())
    assert result["promoted"] and result["champion"]["version"] == v1 and result["challenger"]["version"] == v2


@pytest.mark.parametrize(
    "challenger, reason",
    [
        ({"macro_f1": 0.70}, "not better"),
        ({"macro_f1": 0.80}, "not better"),
        ({"macro_f1": 0.95, "data_hash": "hash-b"}, "different data"),
        ({"macro_f1": 0.95, "min_class_recall": 0.3}, "min class recall 0.3000"),
    ],
    ids=["worse", "equal", "other-test-data", "class-recall-drop"],
)
def test_rejected_challenger_leaves_champion(project, capsys, challenger, reason):
    v1 = register(project, 0.80, champion=True)
    v2 = register(project, **challenger)
    assert f"version {v2} stays challenger" in promote(capsys)
    assert aliases(project) == {CHALLENGER: v2, CHAMPION: v1}
    result = json.loads((project / "reports" / "promotion.json").read_text())
    assert not result["promoted"] and reason in result["reason"]
    assert client(project).get_model_version(NAME, v2).tags[REASON] == f"kept out: {result['reason']}"


def test_a_first_model_below_its_baseline_does_not_become_champion(project, capsys):
    v1 = register(project, 0.506, baseline=0.551)
    assert f"version {v1} stays challenger" in promote(capsys)
    assert aliases(project) == {CHALLENGER: v1}
    result = json.loads((project / "reports" / "promotion.json").read_text())
    assert not result["promoted"] and result["champion"] is None
    gate = "is not at least promote.min_delta 0.01 above the classical baseline 0.551 trained on the same 20 labels"
    assert f"macro-F1 0.506 {gate}" in result["reason"]
    assert result["margins"]["over_best_baseline"] == pytest.approx(0.506 - 0.551)
    tags = client(project).get_model_version(NAME, v1).tags
    assert tags[REASON] == f"kept out: {result['reason']}" and tags["sslflow.best_baseline"] == "classical"


def test_rerun_after_promotion_changes_nothing(project, capsys):
    v1 = register(project, 0.80)
    promote(capsys)
    first_reason = client(project).get_model_version(NAME, v1).tags[REASON]
    assert "already the champion" in promote(capsys)
    assert client(project).get_model_version(NAME, v1).tags[REASON] == first_reason


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_fails_closed(project):
    v1 = register(project, 0.80, champion=True)
    v2 = register(project, 0.95)
    uri = f"http://127.0.0.1:{closed_port()}"
    result = promote_process(
        project, MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: model registry at {uri}: cannot read")
    assert aliases(project) == {CHALLENGER: v2, CHAMPION: v1}
    assert not (project / "reports" / "promotion.json").exists()


def test_champion_without_evidence_fails_closed(project):
    v1 = register(project, 0.80, champion=True)
    client(project).delete_model_version_tag(NAME, v1, "sslflow.data_hash")
    v2 = register(project, 0.95)
    result = promote_process(project)
    assert result.returncode == 2 and f"version {v1} lacks the tags sslflow.data_hash" in result.stderr
    assert aliases(project) == {CHALLENGER: v2, CHAMPION: v1}


def test_no_challenger_is_an_error(project, capsys):
    with pytest.raises(SystemExit) as exit_info:
        promote(capsys)
    assert exit_info.value.code == 2
    assert f"no version of '{NAME}' has the alias 'challenger'" in capsys.readouterr().err


def test_challenger_from_another_workspace_is_an_error(project, capsys):
    v1 = register(project, 0.80)
    (project / "reports" / "lineage").mkdir(parents=True)
    (project / "reports" / "lineage" / "evaluate.json").write_text(json.dumps({"run_id": "someone-else"}))
    with pytest.raises(SystemExit):
        promote(capsys)
    assert "is the model this workspace evaluated (run someone-else)" in capsys.readouterr().err
    assert aliases(project) == {CHALLENGER: v1}


def test_credentials_stay_out_of_errors(project):
    result = promote_process(
        project,
        MLFLOW_TRACKING_URI=f"http://user:secret@127.0.0.1:{closed_port()}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    assert result.returncode == 2 and "secret" not in result.stderr.splitlines()[-1]


def workspace(root: Path, store: Path, evaluated: str) -> Path:
    """A workspace whose evaluate recorded the run `evaluated` in reports/lineage/evaluate.json (as stage_run
    writes it), sharing the registry `store` with others, as `dvc queue start -j 2` copies do."""
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS)
    (root / "reports" / "lineage").mkdir(parents=True)
    (root / "reports" / "lineage" / "evaluate.json").write_text(json.dumps({"run_id": evaluated, "pipeline_id": "p"}))
    return root


def decisions(project) -> dict[str, str]:
    """version -> its recorded decision tag; also checks that no half-done decision is left."""
    out = {}
    for version in client(project).search_model_versions(f"name = '{NAME}'"):
        assert "sslflow.promotion.pending" not in version.tags, version.tags
        out[str(version.version)] = version.tags.get(REASON, "")
    return out


def test_concurrent_promotes_each_decide_the_version_their_evaluate_registered(project, tmp_path):
    """Two queued experiments evaluate at once: both register (the `challenger` alias ends on the later one),
    then both promote at once. Each decides its own version, each version gets exactly one decision, and the
    champion is the best that passed the gate."""
    v1 = register(project, 0.80)
    assert promote_process(project).returncode == 0  # v1 becomes the first champion
    v2, v3 = register(project, 0.90), register(project, 0.85)  # qa's, then qb's
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    qa = workspace(tmp_path / "qa", project / "mlflow.db", "run-0.9")
    qb = workspace(tmp_path / "qb", project / "mlflow.db", "run-0.85")
    procs = [
        subprocess.Popen([sys.executable, str(PROMOTE)], cwd=ws, env={**os.environ, **env}, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for ws in (qb, qa)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert aliases(project)[CHAMPION] == v2
    reasons = decisions(project)
    assert reasons[v1].startswith("promoted") and reasons[v2].startswith("promoted")
    assert reasons[v3].startswith("kept out")
    assert json.loads((qa / "reports" / "promotion.json").read_text())["challenger"]["version"] == v2
    assert json.loads((qb / "reports" / "promotion.json").read_text())["challenger"]["version"] == v3


def test_a_version_left_undecided_is_decided_by_the_next_promote(project, capsys):
    """Evaluate registered v2, then its promote was killed (or never ran); v3's promote decides both, in order."""
    v1 = register(project, 0.80, champion=True)
    v2, v3 = register(project, 0.95), register(project, 0.90)
    out = promote(capsys)
    assert f"version {v3} stays challenger" in out
    assert aliases(project)[CHAMPION] == v2
    reasons = decisions(project)
    assert reasons[v2].startswith("promoted:") and "vs 0.8000 of champion version " + v1 in reasons[v2]
    assert reasons[v3].startswith("kept out:") and f"champion version {v2}" in reasons[v3]


def test_a_decision_cut_after_the_alias_moved_is_finished(project, capsys):
    """Killed after moving `champion` and before recording why: the next promote records the decision."""
    register(project, 0.80, champion=True)
    v2 = register(project, 0.95)
    client(project).set_model_version_tag(NAME, v2, "sslflow.promotion.pending", "promoted: gain +0.15")
    client(project).set_registered_model_alias(NAME, CHAMPION, v2)
    assert f"version {v2} is champion" in promote(capsys)
    assert decisions(project)[v2] == "promoted: gain +0.15"
    assert aliases(project)[CHAMPION] == v2


def test_a_decision_cut_before_the_alias_moved_is_rolled_back_and_redone(project, capsys):
    """Killed after writing the intent and before moving `champion`: no tag may say promoted while the alias
    points elsewhere; the next promote drops the intent and decides again."""
    v1 = register(project, 0.80, champion=True)
    v2 = register(project, 0.70)
    client(project).set_model_version_tag(NAME, v2, "sslflow.promotion.pending", "promoted: stale")
    promote(capsys)
    assert aliases(project)[CHAMPION] == v1
    assert decisions(project)[v2].startswith("kept out:") and "not better" in decisions(project)[v2]


def test_a_version_from_a_failed_evaluate_run_is_kept_out(project, capsys):
    """Evaluate registered its model and then failed: DVC kept none of its outputs, so the version is refused."""
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = client(project).create_run(client(project).create_experiment("e"))
    client(project).set_terminated(run.info.run_id, "FAILED")
    registry = ModelRegistry(NAME, f"sqlite:///{project / 'mlflow.db'}")
    tags = evidence_tags(macro_f1=0.9, min_class_recall=0.9, data_hash="h", run_id=run.info.run_id,
                         git_commit="abc", chance_f1=0.1, labeled=20, baselines={"classical": 0.5})
    v1 = registry.register_challenger(str(project / "model"), tags)
    assert f"version {v1} stays challenger" in promote(capsys)
    assert CHAMPION not in aliases(project)
    assert "ended FAILED" in decisions(project)[v1]


def test_promotes_wait_for_each_other(project, tmp_path):
    """The registry lock is held while deciding: a second holder waits, then fails with the owner's pid."""
    registry = ModelRegistry(NAME, f"sqlite:///{project / 'mlflow.db'}")
    refused = f"pid {os.getpid()} holds .*; waited 0.3 s"
    with registry.deciding(), pytest.raises(Exception, match=refused), registry.deciding(wait_s=0.3):
        pass
    with registry.deciding(wait_s=0.3):  # released
        pass
