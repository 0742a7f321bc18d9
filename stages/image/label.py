"""label: the labeled splits in data/labeled, the source's labels merged with the files of `fetch.labels`.

Only this stage reads people's labels, and pretraining does not depend on it: new labels rerun label, finetune,
evaluate, promote and select, never fetch, preprocess or pretrain.
"""

from sslflow.cli import run
from sslflow.config import Base, Fetch, Preprocess, load
from sslflow.image.labeled import build_labeled
from sslflow.labelfiles import read_label_files
from sslflow.paths import Layout
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    fetch = load(layout.params, "fetch", Fetch)
    split = load(layout.params, "preprocess", Preprocess)
    base = load(layout.params, "base", Base)  # validated before anything is written
    found = read_label_files(fetch.labels, layout.project / "labels", key="fetch.labels")
    info = build_labeled(
        layout.prepared, layout.labeled, found, test_fraction=split.test_fraction, val_fraction=split.val_fraction,
        seed=split.split_seed,
    )
    n, people = info["counts"], info["from_file"]
    record_data_stage(
        "label", run_name="image/label", experiment=base.experiment, params={"labels": fetch.labels},
        upstream="preprocess", tags={"sslflow.labels_hash": info["data_hash"]},
        data=(layout.labeled, info["data_hash"], "labeled"),
        metrics={f"{k}_labeled": v for k, v in n.items()} | {f"{k}_from_file": v for k, v in people.items()}
        | {"unlabeled": info["unlabeled"]},
        files=[layout.labeled / "labeled.json"],
    )
    files = ", ".join(f"{f['path']} ({f['rows']} labels)" for f in info["files"]) or "no label files"
    print(
        f"label: train {n['train']} / val {n['val']} / test {n['test']} labeled ({people['train']} / {people['val']} / "
        f"{people['test']} from {files}), {info['classes']} classes, {info['unlabeled']} unlabeled -> {layout.labeled}"
    )


if __name__ == "__main__":
    run(main)
