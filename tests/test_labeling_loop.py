"""The labeling loop: select proposes, people label (here an oracle fills to_label.csv with the hidden labels),
the label stage merges, finetune trains on exactly those labels; new labels never rerun pretraining."""

import csv
import json

import numpy as np
import pytest
from conftest import make_project, ran, run_stage, sh
from PIL import Image


def _oracle(project, to_label, name: str) -> list[str]:
    """Fill the label column of `to_label` with the hidden source labels (ids `sklearn-digits#row`) into labels/."""
    labels = np.load(project / "data" / "raw" / "labels.npy")
    ids = json.loads((project / "data" / "raw" / "ids.json").read_text())
    truth = dict(zip(ids, labels.tolist(), strict=True))
    with open(to_label, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["label"] = str(truth[row["id"]])
    with open(project / "labels" / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return [row["id"] for row in rows]


LOOP = {"finetune": {"labels_per_class": None, "method": "supervised"}, "select": {"budget": 20}}


@pytest.mark.slow
def test_dvc_loop_with_an_oracle_never_reruns_pretraining(tmp_path):
    project = make_project(tmp_path / "project", LOOP, dvc=True)
    sh(project, "git", "init", "-q")
    sh(project, "dvc", "init", "-q")
    first = ran(sh(project, "dvc", "repro", "select").stdout)  # before any label: typical needs none
    assert "pretrain" in first and "finetune" not in first
    round1 = _oracle(project, project / "reports" / "to_label.csv", "round1.csv")
    assert len(round1) == 20

    rerun = ran(sh(project, "dvc", "repro").stdout)
    assert {"label", "finetune", "evaluate", "select"} <= set(rerun)
    assert not {"fetch", "preprocess", "pretrain"} & set(rerun)
    budget = json.loads((project / "models" / "finetuned" / "budget.json").read_text())
    items = json.loads((project / "data" / "labeled" / "items.json").read_text())["train"]
    assert sorted(items["ids"][i] for i in budget["indices"]) == sorted(round1)  # exactly the people's labels

    round2 = _oracle(project, project / "reports" / "to_label.csv", "round2.csv")
    assert not set(round2) & set(round1)  # never proposes what is labeled
    rerun = ran(sh(project, "dvc", "repro").stdout)
    assert "pretrain" not in rerun and "finetune" in rerun
    assert json.loads((project / "models" / "finetuned" / "budget.json").read_text())["count"] == 40


def _png_folder(folder, n: int) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(n):
        sub = folder / f"batch{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.uint8(digits.images[i] * 255 / 16)).save(sub / f"{i:04d}.png")


@pytest.mark.slow  # every stage on a PNG folder, pretraining included: about 3 min on 2 loaded cores
def test_a_png_folder_without_labels_goes_round_the_loop(tmp_path):
    """fetch.source none + a folder of PNGs: select proposes before any label; labels come back by path."""
    folder = tmp_path / "pngs"
    _png_folder(folder, 400)
    project = make_project(tmp_path / "project", LOOP | {
        "fetch": {"source": "none", "unlabeled": [{"source": "folder", "path": str(folder)}]},
        "select": {"budget": 150},
    })
    for stage in ("fetch", "preprocess", "pretrain", "label", "propose"):
        run_stage(project, stage)
    with open(project / "reports" / "to_label.csv", newline="") as f:
        proposed = list(csv.DictReader(f))
    assert len(proposed) == 150 and all(row["path"].endswith(".png") for row in proposed)
    assert (project / "reports" / "to_label.png").stat().st_size > 0
    tasks = json.loads((project / "reports" / "to_label_tasks.json").read_text())
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")

    from sklearn.datasets import load_digits

    truth = load_digits().target
    (project / "labels").mkdir(exist_ok=True)
    with open(project / "labels" / "round1.csv", "w", newline="") as f:
        f.write("path,label\n" + "".join(f"{r['path']},digit{truth[int(r['path'][-8:-4])]}\n" for r in proposed))
    label = run_stage(project, "label")
    assert "150 from" not in label.stdout  # spread over train / val / test by each id's hash
    info = json.loads((project / "data" / "labeled" / "labeled.json").read_text())
    assert sum(info["from_file"].values()) == 150 and info["counts"]["test"] > 0
    assert json.loads((project / "data" / "labeled" / "classes.json").read_text())[0] == "digit0"
    run_stage(project, "finetune")
    evaluate = run_stage(project, "evaluate")
    assert f"the test split holds {info['counts']['test']} items" in evaluate.stdout
    run_stage(project, "propose")
    with open(project / "reports" / "to_label.csv", newline="") as f:
        second = {row["id"] for row in csv.DictReader(f)}
    assert not second & {row["id"] for row in proposed}


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("id,label\nnot-an-item,3\n", "unknown id 'not-an-item'"),
        ("id,label\nsklearn-digits#0,0\nsklearn-digits#0,1\n", "sklearn-digits#0"),
        ("id,label\nsklearn-digits#0,cat\n", "unknown class 'cat'"),
        ("path,label\n/nonexistent/x.png,3\n", "file not found"),
    ],
)
def test_a_bad_labels_row_is_one_error_and_keeps_the_labeled_splits(tmp_path, content, named):
    project = make_project(tmp_path / "project")
    for stage in ("fetch", "preprocess", "label"):
        run_stage(project, stage)
    before = {f.name: f.read_bytes() for f in (project / "data" / "labeled").iterdir()}
    (project / "labels").mkdir(exist_ok=True)
    (project / "labels" / "bad.csv").write_text(content)
    proc = run_stage(project, "label", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1 and named in errors[0] and "bad.csv" in errors[0], proc.stderr
    assert {f.name: f.read_bytes() for f in (project / "data" / "labeled").iterdir()} == before
