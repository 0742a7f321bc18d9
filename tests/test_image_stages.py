"""The image stages run as the pipeline runs them: subprocesses in a project directory, tiny data."""

import hashlib
import json
import shutil

import mlflow
import numpy as np
import pytest
from conftest import make_project, run_stage

from sslflow.metrics import read as read_metrics


def _digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_outputs_of_every_stage(tiny_pipeline):
    p = tiny_pipeline
    assert {"encoder.safetensors", "encoder.json"} <= {f.name for f in (p / "models" / "encoder").iterdir()}
    assert json.loads((p / "models" / "encoder" / "encoder.json").read_text())["arch"] == "small_cnn"
    finetuned = {f.name for f in (p / "models" / "finetuned").iterdir()}
    assert {"ssl.safetensors", "scratch.safetensors", "classical.npz", "budget.json"} <= finetuned
    # The default method uses the pool, so the supervised fits are saved beside it.
    assert {"ssl-supervised.safetensors", "scratch-supervised.safetensors"} <= finetuned
    assert json.loads((p / "models" / "finetuned" / "budget.json").read_text())["count"] == 30
    metrics = read_metrics(p / "reports")
    models = {"ssl", "ssl-supervised", "scratch", "scratch-supervised", "classical"}
    assert set(metrics) == models | {"lift"}
    assert set(metrics["lift"]) == {"pretraining", "pool", "pool_from_scratch", "ssl_minus_classical"}
    assert metrics["lift"]["pool"] == pytest.approx(metrics["ssl"]["macro_f1"] - metrics["ssl-supervised"]["macro_f1"])
    assert metrics["lift"]["pretraining"] == pytest.approx(metrics["ssl"]["macro_f1"] - metrics["scratch"]["macro_f1"])
    for name in models:
        assert 0 <= metrics[name]["macro_f1"] <= 1
        assert (p / "reports" / "classification" / f"{name}.json").is_file()
        assert (p / "reports" / "plots" / "confusion" / f"{name}.csv").is_file()
    assert "macro avg" in (p / "reports" / "classification.md").read_text()


def test_runs_are_tracked_and_linked(tiny_pipeline):
    mlflow.set_tracking_uri(f"sqlite:///{tiny_pipeline / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["sslflow"])
    by_stage = {row["tags.sslflow.stage"]: row for _, row in runs.iterrows()}
    assert set(by_stage) == {"fetch", "preprocess", "label", "pretrain", "finetune", "evaluate"}
    for stage, upstream in [
        ("preprocess", "fetch"), ("label", "preprocess"), ("pretrain", "preprocess"), ("finetune", "pretrain")
    ]:
        assert by_stage[stage]["tags.sslflow.upstream_run_id"] == by_stage[upstream]["run_id"]
    assert by_stage["evaluate"]["tags.sslflow.pipeline_id"] == by_stage["fetch"]["tags.sslflow.pipeline_id"]
    assert by_stage["fetch"]["params.fetch.source"] == "sklearn-digits" and by_stage["fetch"]["metrics.count"] == 1797
    assert by_stage["preprocess"]["tags.sslflow.data_hash"] == by_stage["pretrain"]["tags.sslflow.data_hash"]
    assert by_stage["preprocess"]["params.preprocess.split_seed"] == "0"
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(by_stage["fetch"]["run_id"], "fetch")}
    assert artifacts == {"fetch/manifest.json", "fetch/classes.json"}
    assert by_stage["evaluate"]["metrics.ssl/macro_f1"] >= 0
    assert by_stage["pretrain"]["params.pretrain.epochs"] == "1"
    # evaluate carries the settings that produced it, for the UI's compare view
    assert by_stage["evaluate"]["params.finetune.labels_per_class"] == "3"
    assert by_stage["evaluate"]["params.pretrain.epochs"] == "1"
    assert len(by_stage["pretrain"]["tags.sslflow.data_hash"]) == 64
    assert by_stage["pretrain"]["tags.mlflow.source.git.commit"]


def test_pretrain_is_reproducible(tiny_pipeline, tmp_path):
    again = make_project(tmp_path / "again")
    shutil.copytree(tiny_pipeline / "data", again / "data")
    run_stage(again, "pretrain")
    # the weights and config, byte for byte (pictures beside them are not part of the model)
    model_files = {"encoder.safetensors", "encoder.json"}
    first, second = _digest(tiny_pipeline / "models" / "encoder"), _digest(again / "models" / "encoder")
    assert model_files <= first.keys()
    assert {k: first[k] for k in model_files} == {k: second[k] for k in model_files}


def _lrs(project):
    lines = (project / "reports" / "pretrain_metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["pretrain/lr"] for line in lines if "pretrain/lr" in line]


def test_the_schedule_ends_with_max_steps_and_a_warm_up_that_outlasts_training_is_a_warning(tiny_pipeline, tmp_path):
    cut = make_project(tmp_path / "cut", {"pretrain": {"epochs": 5, "max_steps": 4}})
    shutil.copytree(tiny_pipeline / "data", cut / "data")
    assert "warning" not in run_stage(cut, "pretrain").stderr
    lrs = _lrs(cut)
    assert len(lrs) == 4 and lrs[-1] == pytest.approx(0.0, abs=1e-9)  # the cosine reaches zero at max_steps
    warm = make_project(tmp_path / "warm", {"pretrain": {"max_steps": 2, "optim": {"warmup_epochs": 1}}})
    shutil.copytree(tiny_pipeline / "data", warm / "data")
    lines = run_stage(warm, "pretrain").stderr.splitlines()
    warned = [line for line in lines if "warmup_epochs" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: pretrain.optim.warmup_epochs is 1 epoch(s)")
    assert _lrs(warm)[1] > _lrs(warm)[0]  # still rising at the last step, as the warning says


def test_a_model_that_predicts_one_class_is_called_degenerate_before_promotion(tiny_pipeline, tmp_path):
    import torch

    from sslflow.artifacts import load_classifier, load_encoder, save_classifier

    project = make_project(tmp_path / "p")
    for part in ("data", "models"):
        shutil.copytree(tiny_pipeline / part, project / part)
    finetuned = project / "models" / "finetuned"
    ssl = load_classifier(finetuned, "ssl")
    with torch.no_grad():
        ssl.head.bias[3] = 1e4  # class "3" whatever the image
    save_classifier(ssl, load_encoder(project / "models" / "encoder")[1], 10, finetuned, "ssl")
    proc = run_stage(project, "evaluate")
    assert "warning: the ssl model is degenerate: it predicts one class for all" in proc.stderr
    assert "Add type hints" not in proc.stderr  # MLflow's advice, not for a model with an explicit signature
    found = json.loads((project / "reports" / "degenerate.json").read_text())
    assert found["ssl"].startswith("it predicts one class")
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    version = client.get_model_version_by_alias("sslflow-image", "challenger")
    assert version.tags["sslflow.degenerate"] == found["ssl"]
    assert client.get_run(version.run_id).data.tags["sslflow.degenerate.ssl"] == found["ssl"]
    assert json.loads((tiny_pipeline / "reports" / "degenerate.json").read_text()).get("ssl") is None


def test_the_console_gets_a_summary_and_every_epoch_only_when_verbose(tiny_pipeline, tmp_path, monkeypatch):
    project = make_project(tmp_path / "p", {"pretrain": {"epochs": 3, "batch_size": 512}})
    shutil.copytree(tiny_pipeline / "data", project / "data")
    quiet = run_stage(project, "pretrain").stdout.splitlines()
    assert not [line for line in quiet if line.startswith("pretrain epoch")]
    assert quiet[-1].startswith("pretrain (simclr): encoder -> models/encoder, val kNN accuracy")
    shutil.rmtree(project / "checkpoints")
    monkeypatch.setenv("SSLFLOW_VERBOSE", "1")
    verbose = run_stage(project, "pretrain").stdout.splitlines()
    assert [line.split(" epoch_loss")[0] for line in verbose if line.startswith("pretrain epoch")] == [
        "pretrain epoch 1/3", "pretrain epoch 2/3", "pretrain epoch 3/3"
    ]


def test_views_made_on_the_device_train_reproducibly(tiny_pipeline, tmp_path):
    """pretrain.augment_on: device: the loader hands over uint8 rows, the views are batch ops in the step."""
    encoders = []
    for name in ("a", "b"):
        project = make_project(tmp_path / name, {"pretrain": {"augment_on": "device"}})
        shutil.copytree(tiny_pipeline / "data", project / "data")
        run_stage(project, "pretrain")
        encoders.append(_digest(project / "models" / "encoder")["encoder.safetensors"])
        summary = json.loads((project / "reports" / "pretrain.json").read_text())
        assert summary["pretrain/epoch_loss"] > 0 and 0 <= summary["monitor/val_knn_acc"] <= 1
    assert encoders[0] == encoders[1]
    assert encoders[0] != _digest(tiny_pipeline / "models" / "encoder")["encoder.safetensors"]  # other views
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["sslflow"])
    assert list(runs["tags.sslflow.augment_on"]) == ["device"]


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"finetune": {"labels_per_class": 500}}, "finetune.labels_per_class=500"),
        ({"finetune": {"learning_rate": 0.1}}, "finetune.learning_rate"),
        ({"finetune": {"fixmatch": {"threshold": 1.0}}}, "finetune.fixmatch.threshold"),
        ({"finetune": {"fixmatch": {"threshold": 0.0}}}, "finetune.fixmatch.threshold"),
        ({"finetune": {"fixmatch": {"mu": 0}}}, "finetune.fixmatch.mu"),
        ({"finetune": {"fixmatch": {"weight": -1.0}}}, "finetune.fixmatch.weight"),
        ({"finetune": {"method": "mixmatch"}}, "finetune.method"),
        ({"finetune": {"method": "distill", "distill": {"mu": 0}}}, "finetune.distill.mu"),
        (
            {"finetune": {"method": "distill", "distill": {"teacher": "models/nope/ssl.safetensors"}}},
            "finetune.distill.teacher",
        ),
    ],
)
def test_bad_finetune_params_fail_cleanly_and_keep_outputs(tiny_pipeline, tmp_path, overrides, needle):
    project = make_project(tmp_path / "p", overrides)
    for sub in ("data", "models"):
        shutil.copytree(tiny_pipeline / sub, project / sub)
    before = _digest(project / "models")
    proc = run_stage(project, "finetune", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1]
    assert _digest(project / "models") == before


def test_an_empty_pool_with_a_pool_method_fails_cleanly_and_keeps_outputs(tiny_pipeline, tmp_path):
    project = make_project(tmp_path / "p")
    for sub in ("data", "models"):
        shutil.copytree(tiny_pipeline / sub, project / sub)
    pool = project / "data" / "prepared" / "pool_images.npy"
    np.save(pool, np.load(pool)[:0])
    before = _digest(project / "models")
    proc = run_stage(project, "finetune", check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "finetune.method" in last and "pool_images.npy" in last and "empty" in last
    assert _digest(project / "models") == before


def test_the_pool_labels_are_never_read(tiny_pipeline, tmp_path):
    """The pool is the train and val images. With every val label wrong, fixmatch and distill give the same
    weights byte for byte, so no pool label reached training. (Train labels are read to draw the budget only:
    scrambling them would change which images are drawn.)"""
    weights = {}
    for scramble in (False, True):
        for method in ("fixmatch", "distill"):
            project = make_project(tmp_path / f"{method}-{scramble}", {"finetune": {"method": method}})
            shutil.copytree(tiny_pipeline / "data", project / "data")
            shutil.copytree(tiny_pipeline / "models" / "encoder", project / "models" / "encoder")
            if scramble:
                path = project / "data" / "labeled" / "val_labels.npy"
                np.save(path, (np.load(path) + 1) % 10)
            run_stage(project, "finetune")
            digests = _digest(project / "models" / "finetuned")
            weights[method, scramble] = {k: v for k, v in digests.items() if k.endswith(".safetensors")}
    assert weights["fixmatch", False] == weights["fixmatch", True]
    assert weights["distill", False] == weights["distill", True]
    assert weights["fixmatch", False]["ssl.safetensors"] != weights["distill", False]["ssl.safetensors"]  # it can tell
