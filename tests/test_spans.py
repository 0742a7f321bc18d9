"""NER labels back in: Label Studio span annotations read as IOB2 tags over whitespace words."""

import json

import pytest

from sslflow.errors import SslflowError
from sslflow.text.spans import SpanRow, read_span_file, to_tags
from sslflow.text.tags import spans

TYPES = {"PER", "LOC"}


def _row(text, *spans_):
    return SpanRow("unlabeled#0", text, tuple(spans_), "labels/export.json task 7")


def test_spans_become_iob2_over_the_words_they_touch():
    text = "Lena  Berg flew to New York."
    words, tags = to_tags(_row(text, (0, 10, "PER"), (19, 28, "LOC")), TYPES)
    assert words == ["Lena", "Berg", "flew", "to", "New", "York."]
    assert tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
    # a selection that stops inside a word tags the whole word; two adjacent entities of one type stay two
    words, tags = to_tags(_row("Omar Ines left", (1, 3, "PER"), (5, 9, "PER")), TYPES)
    assert tags == ["B-PER", "B-PER", "O"] and spans(tags) == [("PER", 0, 1), ("PER", 1, 2)]
    assert to_tags(_row("Nobody came ."), TYPES) == (["Nobody", "came", "."], ["O", "O", "O"])


@pytest.mark.parametrize("row, expected", [
    (_row("Omar left", (0, 4, "ORG")), "unknown entity type 'ORG'"),
    (_row("Omar left", (0, 4, "PER"), (2, 9, "LOC")), "'Omar' is in two spans"),
    (_row("Omar left", (5, 40, "LOC")), "ends past the text"),
])
def test_bad_spans_name_the_task(row, expected):
    with pytest.raises(SslflowError, match="labels/export.json task 7") as err:
        to_tags(row, TYPES)
    assert expected in str(err.value)


def test_the_export_reads_the_last_annotation_and_skips_tasks_nobody_annotated(tmp_path):
    def result(start, end, kind):
        return {"type": "labels", "value": {"start": start, "end": end, "labels": [kind]}}

    tasks = [
        {"id": 1, "data": {"text": "Omar left", "sslflow_id": "a"}, "annotations": [
            {"id": 1, "result": [result(0, 4, "LOC")]},
            {"id": 2, "result": [result(0, 4, "PER")]},
            {"id": 3, "result": [], "was_cancelled": True},
        ], "predictions": [{"result": [result(5, 9, "LOC")]}]},
        {"id": 2, "data": {"text": "Nobody came", "sslflow_id": "b"}, "annotations": [{"id": 4, "result": []}]},
        {"id": 3, "data": {"text": "Not yet", "sslflow_id": "c"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    rows = read_span_file(path)
    assert [(r.key, r.spans) for r in rows] == [("a", ((0, 4, "PER"),)), ("b", ())]
    assert rows[0].where == f"{path} task 1"


def test_a_csv_or_a_span_without_one_label_is_refused(tmp_path):
    csv = tmp_path / "tags.csv"
    csv.write_text("id,label\na,B-PER\n")
    with pytest.raises(SslflowError, match="a CSV cannot hold a sentence's tags"):
        read_span_file(csv)
    bad = tmp_path / "export.json"
    bad.write_text(json.dumps([{"id": 5, "data": {"text": "Omar", "sslflow_id": "a"}, "annotations": [
        {"id": 9, "result": [{"type": "labels", "value": {"start": 0, "end": 4, "labels": ["PER", "LOC"]}}]}]}]))
    with pytest.raises(SslflowError, match=r"task 5: annotation 9: a span needs start < end and one label"):
        read_span_file(bad)
