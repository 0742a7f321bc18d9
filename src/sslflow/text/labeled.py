"""The text track's labeled splits (data/labeled), which finetune, evaluate and select read: the source's labels
merged with the labels people gave in `text.fetch.labels`; the unlabeled pool beside them; NER's labeling config.

A text with a source label keeps the split preprocess gave it. A text of the unlabeled corpus that people labeled
gets its split from its id alone (sslflow.labels.assign_splits), so labels brought back in later rounds never move
earlier ones. Documents take a class per text (CSV or Label Studio choices); NER takes entity spans from a Label
Studio export (sslflow.text.spans), tags over the text's words.

    {train,val,test}.jsonl  the prepared split's records as they are, then the people-labeled unlabeled texts
                            the split got, {"id", "text", "label"} (NER: {"id", "tokens", "tags"}), in the order
                            of unlabeled.jsonl
    items.json     per split: ids, and whether each label came from text.fetch.labels ("from_file")
    classes.json   the classes;  labeled.json  counts, the label files read and their hashes, the data hash
"""

import hashlib
import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from sslflow.atomic import write_json, write_with
from sslflow.errors import SslflowError
from sslflow.labelfiles import LabelFiles
from sslflow.labels import assign_splits, merge_labels
from sslflow.rawdata import require_two_classes
from sslflow.splits import SPLITS
from sslflow.text.corpus import jsonl_bytes, plain_text, read_json, read_jsonl
from sslflow.text.spans import to_tags

KEY = "text.fetch.labels"


def build_labeled(
    prepared: Path, out: Path, found: LabelFiles, *, task: str, test_fraction: float, val_fraction: float, seed: int
) -> dict:
    """Merge `found` into the prepared splits and write data/labeled (`out`); returns labeled.json's content.
    Every check runs before the first file is written, so bad labels leave the last good splits."""
    splits = {name: read_jsonl(prepared / f"{name}.jsonl") for name in SPLITS}
    unlabeled = read_jsonl(prepared / "unlabeled.jsonl")
    classes = read_json(prepared / "classes.json")
    if task != "text-classification":
        return _merge_sentences(splits, unlabeled, classes, found, out, test_fraction, val_fraction, seed)
    for row in found.rows:
        if row.by != "id":
            raise SslflowError(
                f"{KEY}: {row.where}: texts are named by id (texts#<row>, unlabeled#<row>, as reports/to_label.csv "
                "gives them), but the file has no `id` column"
            )
    records = [r for name in SPLITS for r in splits[name]] + unlabeled  # (N,), the unlabeled texts last
    ids = [r["id"] for r in records]
    known = np.array([r["label"] for name in SPLITS for r in splits[name]] + [-1] * len(unlabeled), dtype=np.int64)
    split = np.concatenate(
        [np.full(len(splits[name]), code) for code, name in enumerate(SPLITS)] + [np.full(len(unlabeled), -1)]
    ).astype(np.int64)
    merged = merge_labels(found.rows, ids=ids, paths=[None] * len(ids), known=known, classes=classes, source=KEY)
    new = (split < 0) & (merged.labels >= 0)
    if new.any():
        split[new] = assign_splits([ids[i] for i in np.flatnonzero(new)], test_fraction=test_fraction,
                                   val_fraction=val_fraction, seed=seed)
    parts = {}
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero((split == code) & (merged.labels >= 0))
        # a prepared record as it is (a file may only repeat its label); an unlabeled text gets its label
        parts[name] = (
            [records[i] if known[i] >= 0 else {**records[i], "label": int(merged.labels[i])} for i in rows],
            merged.from_file[rows].tolist(),
        )
    return _write(out, parts, merged.classes, found, unlabeled=int((merged.labels < 0).sum()))


def _merge_sentences(
    splits: dict[str, list[dict]], unlabeled: list[dict], tags: list[str], found: LabelFiles, out: Path,
    test_fraction: float, val_fraction: float, seed: int,
) -> dict:
    """NER: people's span rows (sslflow.text.spans) as tags over the prepared sentences and the unlabeled texts.
    A prepared sentence may only be given its own tags again; an unlabeled text people tagged joins a split."""
    known = {r["id"]: r for name in SPLITS for r in splits[name]}
    texts = {r["id"]: r for r in unlabeled}
    types = {t[2:] for t in tags if t != "O"}
    given: dict[str, tuple[list[str], list[str], str]] = {}  # id -> (words, tags, where)
    for row in found.rows:
        record = known.get(row.key) or texts.get(row.key)
        if record is None:
            raise SslflowError(
                f"{KEY}: {row.where}: unknown id {row.key!r}; it is not among the {len(known) + len(texts)} "
                "fetched texts"
            )
        if row.text != plain_text(record):
            raise SslflowError(
                f"{KEY}: {row.where}: the task's text is not the text of {row.key!r}; label the tasks select wrote "
                "without editing their text"
            )
        words, tagged = to_tags(row, types)
        if row.key in given and given[row.key][1] != tagged:
            raise SslflowError(f"{KEY}: item {row.key!r} is tagged differently in {given[row.key][2]} and {row.where}")
        if row.key in known and known[row.key]["tags"] != tagged:
            raise SslflowError(
                f"{KEY}: {row.where}: item {row.key!r} is tagged {tagged}, but its tags are already "
                f"{known[row.key]['tags']}"
            )
        given[row.key] = (words, tagged, row.where)
    new = [r["id"] for r in unlabeled if r["id"] in given]
    split = assign_splits(new, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed) if new else []
    parts = {}
    for code, name in enumerate(SPLITS):
        added = [{"id": item, "tokens": given[item][0], "tags": given[item][1]}
                 for item, s in zip(new, split, strict=True) if s == code]
        parts[name] = (splits[name] + added, [r["id"] in given for r in splits[name]] + [True] * len(added))
    return _write(out, parts, tags, found, unlabeled=len(unlabeled) - len(new))


def _write(out: Path, parts: dict[str, tuple[list[dict], list[bool]]], classes: list[str], found: LabelFiles,
           *, unlabeled: int) -> dict:
    items = {name: {"ids": [r["id"] for r in records], "from_file": flags} for name, (records, flags) in parts.items()}
    files = {f"{name}.jsonl": jsonl_bytes(records) for name, (records, _) in parts.items()}
    files["items.json"] = (json.dumps(items, indent=2, sort_keys=True) + "\n").encode()
    files["classes.json"] = json.dumps(classes).encode()  # as preprocess writes it
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name])
        write_with(out / name, lambda tmp, data=files[name]: tmp.write_bytes(data))
    info = {
        "counts": {name: len(items[name]["ids"]) for name in SPLITS},
        "from_file": {name: int(sum(items[name]["from_file"])) for name in SPLITS},
        "unlabeled": unlabeled,  # texts of the unlabeled corpus nobody has labeled
        "files": found.files,
        "classes": len(classes),
        "data_hash": digest.hexdigest(),
    }
    write_json(out / "labeled.json", info)
    return info


def people_budget(from_file: list[bool], labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """The training texts people labeled (`from_file` over the train split), as the fine-tuning budget."""
    budget = np.flatnonzero(np.asarray(from_file, dtype=bool))
    if len(budget) == 0:
        raise SslflowError(
            "text.finetune.labels_per_class and label_fraction are null, so the budget is the labels in "
            f"{KEY}, and none of them is in the train split yet: label the texts select proposed (text/reports/"
            "to_label.csv, or to_label_tasks.json in Label Studio), save the file in text/labels/, then rerun"
        )
    if len(classes) > 1:  # documents; NER budgets sentences (one budget class)
        require_two_classes(labels[budget], classes, f"the training labels of {KEY}", "label more texts")
    return budget


def pool_items(prepared: Path, without: set[str] = frozenset()) -> tuple[list[str], list[str]]:
    """The unlabeled pool's item ids and texts, less the ids in `without`: the prepared train split's texts (labels
    unread), then the unlabeled corpus's (text.fetch.unlabeled)."""
    records = read_jsonl(prepared / "train.jsonl") + read_jsonl(prepared / "unlabeled.jsonl")
    kept = [r for r in records if r["id"] not in without]
    return [r["id"] for r in kept], [plain_text(r) for r in kept]


def held_out(labeled: Path) -> set[str]:
    """The ids of the val and test texts: never pooled for training nor proposed (people may label unlabeled
    texts into them)."""
    items = read_json(labeled / "items.json")
    return {item for name in ("val", "test") for item in items[name]["ids"]}


def span_config(tags: list[str]) -> str:
    """Label Studio's labeling config for marking entity spans of the types in `tags` (IOB2), for NER's proposed
    sentences; the label stage reads the export back (sslflow.text.spans)."""
    labels = "\n".join(f"    <Label value={quoteattr(kind)}/>" for kind in sorted({t[2:] for t in tags if t != "O"}))
    return (
        f'<View>\n  <Labels name="label" toName="text">\n{labels}\n  </Labels>\n  <Text name="text" value="$text"/>\n'
        "</View>\n"
    )
