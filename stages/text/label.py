"""label: the text track's labeled splits in data/labeled, the source's labels merged with the files of
`text.fetch.labels`: classes of documents (CSV or Label Studio choices), or NER's entity spans (Label Studio).

Only this stage reads people's labels, and pretraining does not depend on it: new labels rerun label, finetune,
evaluate, promote and select, never fetch, preprocess or pretrain.
"""

from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.labelfiles import read_label_files
from sslflow.labels import read_label_file
from sslflow.paths import Layout
from sslflow.text.config import Text
from sslflow.text.labeled import KEY, build_labeled
from sslflow.text.spans import read_span_file
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    text = load(layout.params, "text", Text)
    base = load(layout.params, "base", Base)  # validated before anything is written
    split = text.preprocess
    reader = read_label_file if text.task == "text-classification" else read_span_file
    found = read_label_files(text.fetch.labels, layout.labels, key=KEY, reader=reader)
    info = build_labeled(
        layout.prepared, layout.labeled, found, task=text.task, test_fraction=split.test_fraction,
        val_fraction=split.val_fraction, seed=split.split_seed,
    )
    n, people = info["counts"], info["from_file"]
    record_data_stage(
        "label", run_name=f"{text.task}/label", experiment=base.experiment, params={"labels": text.fetch.labels},
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
