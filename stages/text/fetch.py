"""Fetch the text source named by params `text.fetch` into data/raw (documents or tagged sentences)."""

from pathlib import Path

from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.paths import Layout
from sslflow.text.config import Text
from sslflow.text.corpus import write_raw_text
from sslflow.text.sources import fetch_text
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
    manifest = write_raw_text(
        layout.raw, data.examples, data.classes,
        {"source": cfg.source, "task": text.task, "inputs": data.inputs, "license": data.license,
         "scheme": data.scheme, "recoded": list(data.recoded)},
    )
    record_data_stage(
        "fetch", run_name=f"{text.task}/fetch {cfg.source}", experiment=base.experiment,
        params={"task": text.task, **cfg.model_dump()}, upstream=None, tags={"sslflow.raw_sha256": manifest["sha256"]},
        data=(layout.raw, manifest["sha256"], "output"), metrics={"count": manifest["count"]},
        files=[layout.raw / "manifest.json", layout.raw / "classes.json"],
    )
    kind = "documents" if text.task == "text-classification" else f"sentences ({data.scheme} read as IOB2)"
    print(
        f"fetch: {cfg.source} -> {layout.raw}: {manifest['count']} {kind}, {len(data.classes)} classes/tags"
    )


if __name__ == "__main__":
    run(main)
