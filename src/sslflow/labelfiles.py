"""The label files a track's `labels` param names (image `fetch.labels`, text `text.fetch.labels`): a file, or a
folder whose .csv and .json files are read in name order (by sslflow.labels.read_label_file, or NER's
sslflow.text.spans.read_span_file), with their hashes."""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sslflow.errors import SslflowError
from sslflow.labels import read_label_file

LABEL_SUFFIXES = {".csv", ".json"}


@dataclass(frozen=True)
class LabelFiles:
    rows: list  # LabelRow, or NER's SpanRow
    files: list[dict]  # [{"path", "sha256", "rows"}]


def read_label_files(
    value: str | None, labels_dir: Path, *, key: str, reader: Callable[[Path], list] = read_label_file
) -> LabelFiles:
    """The rows `reader` finds in `value` (params key `key`), relative to the folder above `labels_dir`. It must lie
    inside `labels_dir`, the folder the label stage depends on, so DVC sees every change to it."""
    if value is None:
        return LabelFiles([], [])
    root = labels_dir.resolve()
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else labels_dir.parent / path).resolve()
    if not path.is_relative_to(root):
        raise SslflowError(
            f"{key}: {value!r} is outside {root}; keep label files in that folder (the label stage's DVC "
            "dependency), so that dvc repro sees new labels"
        )
    if path == root and not path.exists():  # the default folder, not made yet: no labels
        return LabelFiles([], [])
    if not path.exists():
        raise SslflowError(f"{key}: not found: {path}")
    files = (
        sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in LABEL_SUFFIXES)
        if path.is_dir() else [path]
    )
    rows, read = [], []
    for f in files:
        found = reader(f)
        rows += found
        read.append({"path": str(f.relative_to(root.parent)), "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                     "rows": len(found)})
    return LabelFiles(rows, read)
