"""The labeled splits finetune, evaluate and select read (data/labeled): the source's labels merged with the
labels people gave in `fetch.labels`.

An item with a source label keeps the split preprocess gave it. An item labeled only by people gets its split
from its id alone (sslflow.labels.assign_splits), so labels brought back in later rounds never move earlier ones.

    {train,val,test}_images.npy  uint8 (n, C, H, W)   {train,val,test}_labels.npy  int64 (n,)
    items.json     per split: ids, and whether each label came from fetch.labels ("from_file")
    pool_rows.npy  int64: rows of data/prepared/pool_images.npy not in the test split (people may label pool
                   items into test; those leave the unlabeled pool that fine-tuning uses)
    classes.json   K names;  labeled.json  counts, the label files read and their hashes, the data hash
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from sslflow.atomic import write_json
from sslflow.errors import SslflowError
from sslflow.labelfiles import LabelFiles
from sslflow.labels import assign_splits, merge_labels
from sslflow.rawdata import npy_bytes, require_two_classes, write_npy
from sslflow.splits import SPLITS


def _items(prepared: Path) -> tuple[list[str], list[str | None], np.ndarray, np.ndarray]:
    """Every item once, in the order test, train, val, unlabeled (pool rows after train and val): ids, paths,
    known labels (-1 none) and the split preprocess gave them (-1: none, an unlabeled item)."""
    ids = json.loads((prepared / "ids.json").read_text())
    paths = json.loads((prepared / "paths.json").read_text())
    n = {split: len(ids[split]) for split in SPLITS}
    unlabeled = slice(n["train"] + n["val"], None)
    known = np.concatenate(
        [np.load(prepared / f"{s}_labels.npy") for s in ("test", "train", "val")]
        + [np.full(len(ids["pool"][unlabeled]), -1, dtype=np.int64)]
    )
    split = np.concatenate(
        [np.full(n[s], SPLITS.index(s), dtype=np.int64) for s in ("test", "train", "val")]
        + [np.full(len(ids["pool"][unlabeled]), -1, dtype=np.int64)]
    )
    return (ids["test"] + ids["train"] + ids["val"] + ids["pool"][unlabeled],
            paths["test"] + paths["train"] + paths["val"] + paths["pool"][unlabeled], known, split)


def build_labeled(
    prepared: Path, out: Path, found: LabelFiles, *, test_fraction: float, val_fraction: float, seed: int
) -> dict:
    """Merge `found` into the prepared splits and write data/labeled (`out`); returns labeled.json's content."""
    ids, paths, known, split = _items(prepared)
    classes = json.loads((prepared / "classes.json").read_text())
    merged = merge_labels(found.rows, ids=ids, paths=paths, known=known, classes=classes, source="fetch.labels")
    new = (split < 0) & (merged.labels >= 0)
    if new.any():
        split[new] = assign_splits([ids[i] for i in np.flatnonzero(new)], test_fraction=test_fraction,
                                   val_fraction=val_fraction, seed=seed)
    test = np.load(prepared / "test_images.npy")
    pool = np.load(prepared / "pool_images.npy", mmap_mode="r")

    def images(rows: np.ndarray) -> np.ndarray:  # items (in _items order) -> their images
        return np.concatenate([test[rows[rows < len(test)]], pool[rows[rows >= len(test)] - len(test)]])

    arrays, items, digest = {}, {}, hashlib.sha256()
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero((split == code) & (merged.labels >= 0))
        arrays[f"{name}_images.npy"] = images(rows)
        arrays[f"{name}_labels.npy"] = merged.labels[rows]
        items[name] = {"ids": [ids[i] for i in rows], "from_file": merged.from_file[rows].tolist()}
    in_test = (split == SPLITS.index("test")) & (merged.labels >= 0)
    arrays["pool_rows.npy"] = np.flatnonzero(~in_test[len(test):]).astype(np.int64)
    for name in sorted(arrays):
        data = npy_bytes(arrays[name])
        digest.update(name.encode() + b"\0" + data)
        write_npy(out / name, data)
    write_json(out / "items.json", items)
    write_json(out / "classes.json", merged.classes)
    info = {
        "counts": {name: len(items[name]["ids"]) for name in SPLITS},
        "from_file": {name: int(sum(items[name]["from_file"])) for name in SPLITS},
        "unlabeled": int((merged.labels < 0).sum()),  # items no source and no person has labeled
        "files": found.files,
        "classes": len(merged.classes),
        "data_hash": digest.hexdigest(),
    }
    write_json(out / "labeled.json", info)
    return info


def people_budget(from_file: np.ndarray, labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """The training items people labeled (`from_file` (n,) bool over the train split), as the fine-tuning budget."""
    budget = np.flatnonzero(from_file)
    if len(budget) == 0:
        raise SslflowError(
            "finetune.labels_per_class and finetune.label_fraction are null, so the budget is the labels in "
            "fetch.labels, and none of them is in the train split yet: label the items in reports/to_label.csv, "
            "save the file in labels/, then rerun"
        )
    require_two_classes(labels[budget], classes, "the training labels of fetch.labels", "label more items")
    return budget
