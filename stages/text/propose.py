"""select: propose the `text.select.budget` pool texts worth labeling next, by `text.select.strategy`.

The pool is the train split's texts and the text.fetch.unlabeled corpus; texts people labeled, and the val and test
texts, are never proposed. Writes reports/to_label.csv (its `path` column is the text: fill `label`, save the file in
text/labels/, then `dvc repro text/dvc.yaml`), the same texts as a Markdown list to read, and as Label Studio tasks
with their labeling config. It reads the pretrained encoder and the labels known, not the fine-tuned models, so it
runs before the first label exists. margin and badge need a probe fitted on people's labels of two classes; until
then they fall back to typical, and so they always do for NER, whose sentences have no single class to probe.
"""

import hashlib

import numpy as np

from sslflow.atomic import write_json, write_text
from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.labeling import label_studio_config, label_studio_tasks, markdown_list, write_to_label_csv
from sslflow.paths import Layout
from sslflow.runtime import resolve
from sslflow.selection import probe_probs, propose
from sslflow.splits import data_hash
from sslflow.text.config import Text
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.embed import embed, first_chunks
from sslflow.text.labeled import held_out, pool_items, span_config
from sslflow.text.models import load_encoder
from sslflow.text.tokenizer import load_tokenizer
from sslflow.tracking import stage_run

NEEDS_LABELS = ("margin", "badge")


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    text = load(layout.params, "text", Text)
    cfg, documents = text.select, text.task == "text-classification"
    runtime = resolve(base)
    tokenizer = load_tokenizer(layout.prepared / "tokenizer.json")
    encoding = read_json(layout.prepared / "encoding.json")
    ids, texts = pool_items(layout.prepared)  # (N,) the train split's texts, then the unlabeled corpus
    items = read_json(layout.labeled / "items.json")
    classes = read_json(layout.labeled / "classes.json")
    train = read_jsonl(layout.labeled / "train.jsonl")

    # The probe learns from the training texts people labeled (all of them pool texts); val and test never go.
    row = {item: i for i, item in enumerate(ids)}
    people = [(row[r["id"]], r.get("label", 0)) for r, f in zip(train, items["train"]["from_file"], strict=True) if f]
    labeled = np.array([i for i, _ in people], dtype=np.int64)
    labels = np.array([y for _, y in people], dtype=np.int64)
    held = held_out(layout.labeled)
    candidates = np.array([item not in held for item in ids], dtype=bool)
    candidates[labeled] = False

    tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
    encoder, _ = load_encoder(layout.encoder, tokenizer_sha)
    chunks = first_chunks(tokenizer, texts, encoding["max_length"], encoding["stride"])
    embeddings = embed(runtime.prepare(encoder), chunks, runtime)  # (N, H)
    probs = None
    if documents and len(np.unique(labels)) >= 2:
        probs = probe_probs(embeddings, labeled, labels, c=cfg.probe_c, seed=cfg.seed, num_classes=len(classes))
    strategy = cfg.strategy
    if strategy in NEEDS_LABELS and probs is None:
        strategy = "typical"  # no probe without labels of two classes; typical needs no label
        needs = "people's labels of two classes in the train split" if documents else "a class per text (NER has none)"
        print(f"select: {cfg.strategy} needs {needs}; using typical")
    chosen = propose(strategy, embeddings=embeddings, candidates=candidates, labeled=labeled, probs=probs,
                     budget=cfg.budget, seed=cfg.seed)

    rows = []
    for i, score in zip(chosen.indices, chosen.scores, strict=True):
        guess = None if probs is None else int(probs[i].argmax())
        rows.append({
            "id": ids[i], "path": texts[i], "score": float(score),
            "suggested_label": None if guess is None else classes[guess],
            "confidence": None if guess is None else float(probs[i, guess]),
        })
    out = layout.reports
    write_to_label_csv(out / "to_label.csv", rows)
    write_text(out / "to_label.md", markdown_list(rows))
    write_json(out / "to_label_tasks.json", label_studio_tasks(rows, kind="text", classes=classes))
    write_text(out / "label_config.xml", label_studio_config("text", classes) if documents else span_config(classes))
    summary = {"strategy": strategy, "proposed": len(rows), "candidates": int(candidates.sum()),
               "labeled_by_people": len(people)}
    write_json(out / "select.json", summary)
    prepared_hash = data_hash(layout.prepared)
    with stage_run(
        "select", run_name=f"{text.task}/select {strategy}", experiment=base.experiment, params=cfg.model_dump(),
        upstream="pretrain", tags={"sslflow.data_hash": prepared_hash}, data=(layout.prepared, prepared_hash, "pool"),
    ) as tracker:
        tracker.log({k: v for k, v in summary.items() if k != "strategy"}, 0)
        for name in ("to_label.csv", "to_label.md", "to_label_tasks.json", "label_config.xml"):
            tracker.log_artifact(out / name, "select")
    print(
        f"select ({strategy}): {len(rows)} of {summary['candidates']} unlabeled texts proposed -> "
        f"{out / 'to_label.csv'} (to read: {out / 'to_label.md'}, Label Studio tasks {out / 'to_label_tasks.json'})"
    )


if __name__ == "__main__":
    run(main)
