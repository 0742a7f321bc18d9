"""Fetch the text source named by params `text.fetch` into data/raw (documents or tagged sentences), and the
unlabeled corpus of `text.fetch.unlabeled` beside it."""

from pathlib import Path

from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.paths import Layout
from sslflow.text.config import Text
from sslflow.text.corpus import plain_text, write_raw_text
from sslflow.text.sources import fetch_text, fetch_unlabeled
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    text = load(layout.params, "text", Text)
    base = load(layout.params, "base", Base)  # validated before anything is written
    cfg = text.fetch
    path = None if cfg.path is None else str(layout.project / Path(cfg.path).expanduser())  # as params.yaml says
    data = fetch_text(
        cfg.source, text.task, path=path, text_column=cfg.text_column, label_column=cfg.label_column,
        token_index=cfg.token_index, tag_index=cfg.tag_index, dataset=cfg.dataset, subset=cfg.subset,
        split=cfg.split,
    )
    provenance = {"source": cfg.source, "task": text.task, "inputs": data.inputs, "license": data.license,
                  "scheme": data.scheme, "recoded": list(data.recoded)}
    unlabeled, metrics, note = None, {}, ""
    if cfg.unlabeled:  # pretraining text only; anything overlapping a labeled text is dropped, so none leaks
        unlabeled, sources = fetch_unlabeled(cfg.unlabeled, [plain_text(e) for e in data.examples], layout.project)
        provenance["unlabeled"] = {"sources": sources}
        metrics = {"unlabeled": len(unlabeled), "unlabeled_duplicates": sum(s["duplicates"] for s in sources)}
        note = f"; unlabeled {metrics['unlabeled']} texts ({metrics['unlabeled_duplicates']} dropped as overlaps)"
    manifest = write_raw_text(layout.raw, data.examples, data.classes, provenance, unlabeled)
    record_data_stage(
        "fetch", run_name=f"{text.task}/fetch {cfg.source}", experiment=base.experiment,
        params={"task": text.task, **cfg.model_dump(exclude={"labels"})},  # text.fetch.labels is the label stage's
        upstream=None, tags={"sslflow.raw_sha256": manifest["sha256"]},
        data=(layout.raw, manifest["sha256"], "output"), metrics={"count": manifest["count"], **metrics},
        files=[layout.raw / "manifest.json", layout.raw / "classes.json"],
    )
    kind = "documents" if text.task == "text-classification" else f"sentences ({data.scheme} read as IOB2)"
    print(
        f"fetch: {cfg.source} -> {layout.raw}: {manifest['count']} {kind}, {len(data.classes)} classes/tags{note}"
    )

if __name__ == "__main__":
    run(main)
