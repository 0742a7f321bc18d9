"""select: propose the `select.budget` pool items worth labeling next, by `select.strategy`.

Writes reports/to_label.csv (fill its `label` column, save it in labels/, then `dvc repro`), a contact sheet of the
proposed images and the same items as Label Studio tasks. It reads the pretrained encoder and the labels known,
not the fine-tuned models, so it runs before the first label exists (`dvc repro select`). Items already labeled
by people, and the val and test items, are never proposed.
"""

import json

import numpy as np

from sslflow import config
from sslflow.artifacts import load_encoder
from sslflow.atomic import write_json, write_text
from sslflow.cli import run
from sslflow.image.contact_sheet import contact_sheet, png_bytes
from sslflow.image.embed import apply
from sslflow.labeling import label_studio_config, label_studio_tasks, write_to_label_csv
from sslflow.paths import Layout
from sslflow.runtime import resolve
from sslflow.selection import probe_probs, propose
from sslflow.splits import data_hash
from sslflow.tracking import stage_run

NEEDS_LABELS = ("margin", "badge")


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "select", config.Select)
    runtime = resolve(base)
    pool = np.load(layout.prepared / "pool_images.npy", mmap_mode="r")  # (N, C, H, W) uint8
    ids = json.loads((layout.prepared / "ids.json").read_text())["pool"]
    paths = json.loads((layout.prepared / "paths.json").read_text())["pool"]
    items = json.loads((layout.labeled / "items.json").read_text())
    classes = json.loads((layout.labeled / "classes.json").read_text())
    train_y = np.load(layout.labeled / "train_labels.npy")

    # The probe learns from the training items people labeled; val and test are never proposed.
    row = {item: i for i, item in enumerate(ids)}
    people = [(row[item], int(y)) for item, y, f in zip(items["train"]["ids"], train_y, items["train"]["from_file"],
                                                         strict=True) if f]
    held = {item for split in ("val", "test") for item in items[split]["ids"]}
    candidates = np.array([item not in held for item in ids]) & ~np.isin(np.arange(len(ids)), [r for r, _ in people])
    labeled = np.array([r for r, _ in people], dtype=np.int64)
    labels = np.array([y for _, y in people], dtype=np.int64)

    encoder, _ = load_encoder(layout.encoder)
    embeddings = apply(encoder, pool, runtime)  # (N, D)
    probs = None
    if len(np.unique(labels)) >= 2:
        probs = probe_probs(embeddings, labeled, labels, c=cfg.probe_c, seed=cfg.seed, num_classes=len(classes))
    strategy = cfg.strategy
    if strategy in NEEDS_LABELS and probs is None:
        strategy = "typical"  # no probe before two classes are labeled; typical needs no label
        print(f"select: {cfg.strategy} needs people's labels of two classes in the train split; using typical")
    chosen = propose(strategy, embeddings=embeddings, candidates=candidates, labeled=labeled, probs=probs,
                     budget=cfg.budget, seed=cfg.seed)

    rows = []
    for i, score in zip(chosen.indices, chosen.scores, strict=True):
        guess = None if probs is None else int(probs[i].argmax())
        rows.append({
            "id": ids[i], "path": paths[i] or "", "score": float(score),
            "suggested_label": None if guess is None else classes[guess],
            "confidence": None if guess is None else float(probs[i, guess]),
            "png": png_bytes(np.asarray(pool[i])),
        })
    out = layout.reports
    write_to_label_csv(out / "to_label.csv", rows)
    captions = [r["id"] + (f"\n{r['suggested_label']}?" if r["suggested_label"] else "") for r in rows]
    contact_sheet(out / "to_label.png", np.asarray(pool[chosen.indices]), captions)
    write_json(out / "to_label_tasks.json", label_studio_tasks(rows, kind="image", classes=classes))
    write_text(out / "label_config.xml", label_studio_config("image", classes))
    summary = {"strategy": strategy, "proposed": len(rows), "candidates": int(candidates.sum()),
               "labeled_by_people": len(people)}
    write_json(out / "select.json", summary)
    prepared_hash = data_hash(layout.prepared)
    with stage_run(
        "select", run_name=f"image/select {strategy}", experiment=base.experiment, params=cfg.model_dump(),
        upstream="pretrain", tags={"sslflow.data_hash": prepared_hash}, data=(layout.prepared, prepared_hash, "pool"),
    ) as tracker:
        tracker.log({k: v for k, v in summary.items() if k != "strategy"}, 0)
        for name in ("to_label.csv", "to_label.png", "to_label_tasks.json", "label_config.xml"):
            tracker.log_artifact(out / name, "select")
    n = int(candidates.sum())
    print(
        f"select ({strategy}): {len(rows)} of {n} unlabeled items proposed -> {out / 'to_label.csv'}"
        f" (contact sheet {out / 'to_label.png'}, Label Studio tasks {out / 'to_label_tasks.json'})"
    )


if __name__ == "__main__":
    run(main)
