"""The whole pipeline through `dvc repro` on the tiny profile, in a temporary git + DVC copy of the repo."""

import json

import pytest
import yaml
from conftest import env_for, make_project, ran, sh

pytestmark = pytest.mark.slow




def test_dvc_repro_end_to_end(tmp_path):
    project = make_project(tmp_path / "project", dvc=True)
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    first = sh(project, "dvc", "repro")
    order = ran(first.stdout)
    assert set(order) == {
        "check", "fetch", "preprocess", "label", "pretrain", "finetune", "evaluate", "promote", "select"
    }
    assert order[:3] == ["check", "fetch", "preprocess"] and order.index("label") < order.index("finetune")
    assert order.index("pretrain") < order.index("finetune") < order.index("evaluate") < order.index("promote")
    assert ran(sh(project, "dvc", "repro").stdout) == []

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["base"].update(experiment="renamed", num_workers=2)  # operational: where runs go, how data loads
    params["pretrain"]["train"]["checkpoint_every"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # only the params check sees it (it reads the whole file); no stage that trains or writes results does
    assert set(json.loads(sh(project, "dvc", "status", "--json", "dvc.yaml").stdout)) <= {"check"}
    assert ran(sh(project, "dvc", "repro").stdout) == ["check"]

    params["finetune"]["labels_per_class"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = ran(sh(project, "dvc", "repro").stdout)
    assert rerun[:3] == ["check", "finetune", "evaluate"] and set(rerun) <= {"check", "finetune", "evaluate", "promote"}

    shown = json.loads(sh(project, "dvc", "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"reports/metrics/ssl.json", "reports/metrics/scratch.json", "reports/metrics/classical.json",
            "reports/metrics/lift.json"} <= set(files)
    assert {"macro_f1", "accuracy", "min_class_recall"} <= set(files["reports/metrics/ssl.json"]["data"])
    table = sh(project, "dvc", "metrics", "show").stdout.splitlines()  # a row per model, a few columns
    assert len(table[0].split()) <= 8 and max(map(len, table)) <= 160, table[0]
    plots = sh(project, "dvc", "plots", "show", "--json").stdout
    assert "confusion" in plots and "precision_recall" in plots


def _outputs(project) -> dict[str, bytes]:
    """Every file under every output dvc.yaml declares, with its bytes."""
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    found = {}
    for stage in pipeline["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                path = project / (next(iter(out)) if isinstance(out, dict) else out)
                for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                    if f.is_file():
                        found[str(f.relative_to(project))] = f.read_bytes()
    return found


BAD = {  # what a user gets wrong -> what the error line names
    "evaluate.pr_points: 1": ("evaluate.pr_points", lambda p: p["evaluate"].update(pr_points=1)),
    "base.modality: audio": ("base.modality", lambda p: p["base"].update(modality="audio")),
    "a misspelt section": ("pretrian", lambda p: p.update(pretrian={"epochs": 1})),
    "more labels than the train split has": ("labels_per_class", lambda p: p["finetune"].update(labels_per_class=500)),
    "a batch larger than the pool": ("pretrain.batch_size", lambda p: p["pretrain"].update(batch_size=100_000)),
}


def test_dvc_repro_with_bad_input_keeps_every_output(tmp_path):
    """DVC removes a stage's outputs before it runs it: a bad value must stop dvc repro before that (the check
    stage), or the stage must keep them (persist outputs, replaced only once the data checks pass)."""
    project = make_project(tmp_path / "project", dvc=True)
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    sh(project, "dvc", "repro")
    good_params = (project / "params.yaml").read_text()
    before = _outputs(project)
    assert "models/finetuned/models.json" in before and "reports/metrics/ssl.json" in before

    for what, (named, spoil) in BAD.items():
        params = yaml.safe_load(good_params)
        spoil(params)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        failed = sh(project, "dvc", "repro", check=False)
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert failed.returncode != 0, what
        assert errors and named in errors[0], f"{what}: {failed.stderr[-1500:]}"
        assert _outputs(project) == before, f"{what}: an output changed or went missing"
    (project / "params.yaml").write_text(good_params[:40] + "\n  : [unclosed\n" + good_params[40:])
    failed = sh(project, "dvc", "repro", check=False)  # DVC reads params.yaml first, and says so itself
    assert failed.returncode != 0 and "params.yaml" in failed.stderr and "Traceback" not in failed.stderr
    assert _outputs(project) == before
    by_hand = sh(project, "python", "stages/check.py", check=False)  # a stage run by hand: one line, exit 2
    assert by_hand.returncode == 2 and by_hand.stderr.startswith("error: ")
    assert "YAML syntax error at line 5" in by_hand.stderr
    assert len(by_hand.stderr.strip().splitlines()) == 1

    (project / "params.yaml").write_text(good_params)
    assert set(ran(sh(project, "dvc", "repro").stdout)) <= {"check"}  # nothing else was touched
    assert _outputs(project) == before


def test_queued_experiments_in_parallel_rerun_no_pretraining_and_each_get_one_decision(tmp_path):
    """The README's experiment queue: two budgets' draws queued, run two at a time in DVC's temp copies. They
    share the project's MLflow store: neither reruns pretraining, and every registered version gets one decision."""
    from mlflow import MlflowClient

    project = make_project(tmp_path / "project", dvc=True)
    (project / ".gitignore").write_text("mlflow.db\nmlartifacts/\n__pycache__/\n")
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    for seed in (1, 2):
        sh(project, "dvc", "exp", "run", "--queue", "-S", f"finetune.label_seed={seed}", "-n", f"draw{seed}")
    sh(project, "dvc", "exp", "run", "--run-all", "-j", "2")

    client = MlflowClient(env_for(project)["MLFLOW_TRACKING_URI"])
    params = yaml.safe_load((project / "params.yaml").read_text())
    experiment = client.get_experiment_by_name(params["base"]["experiment"])
    runs = client.search_runs([experiment.experiment_id], max_results=200)
    stages = [r.data.tags.get("sslflow.stage") for r in runs]
    assert stages.count("pretrain") == 1 and stages.count("finetune") == 3 and stages.count("evaluate") == 3
    versions = client.search_model_versions("name='sslflow-image'")
    assert len(versions) == 3
    for v in versions:  # one decision each, none half made
        assert v.tags.get("sslflow.promotion", "").startswith(("promoted: ", "kept out: ")), v.tags
        assert "sslflow.promotion.pending" not in v.tags
    promoted = [v for v in versions if v.tags["sslflow.promotion"].startswith("promoted: ")]
    aliases = {a: v.version for v in versions for a in v.aliases}
    if promoted:  # the champion is the best version that passed the gate
        best = max(promoted, key=lambda v: float(v.tags["sslflow.macro_f1"]))
        assert aliases.get("champion") == best.version
    else:
        assert "champion" not in aliases
