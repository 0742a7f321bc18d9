"""NER labels back in: Label Studio's JSON export of entity spans (the tasks select writes for NER, labeled with its
span config) read as IOB2 tags over each text's words.

A text's words are its whitespace-separated tokens, as the sentences are stored (tokens joined by spaces). A span
tags every word it touches, so a selection that stops inside a word tags the whole word: B-X on the first, I-X on
the others. An annotation submitted with no span says the text has no entity (all O); a task nobody annotated is
skipped.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from sslflow.errors import SslflowError
from sslflow.labels import label_studio_tasks, read_utf8

WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class SpanRow:
    key: str  # the item id (data.sslflow_id)
    text: str  # data.text: the spans' character offsets index it
    spans: tuple[tuple[int, int, str], ...]  # (start, end, type), end exclusive; () = no entity
    where: str  # how errors name the task, e.g. "labels/export.json task 12"


def read_span_file(path: Path) -> list[SpanRow]:
    """The annotated tasks of a Label Studio JSON export; a CSV cannot hold a sentence's tags and is refused."""
    path = Path(path)
    text = read_utf8(path)
    if path.suffix.lower() != ".json":
        raise SslflowError(
            f"{path}: NER labels come back as a Label Studio JSON export of entity spans (import "
            "reports/to_label_tasks.json with label_config.xml, label, export as JSON); a CSV cannot hold a "
            "sentence's tags"
        )
    rows = []
    for task, item, where in label_studio_tasks(text, path):
        spans = _last_spans(task.get("annotations") or [], where)
        if spans is not None:
            shown = task["data"].get("text")
            if not isinstance(shown, str):
                raise SslflowError(f"{where}: no data.text; the spans' offsets index the task's text")
            rows.append(SpanRow(item, shown, spans, where))
    return rows


def _last_spans(annotations: list, where: str) -> tuple[tuple[int, int, str], ...] | None:
    """The spans of the last annotation not cancelled (none: no annotation); predictions are never read."""
    for annotation in reversed(annotations):
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        spans = []
        for result in annotation.get("result") or []:
            if not isinstance(result, dict) or result.get("type") != "labels":
                continue
            value = result.get("value") or {}
            start, end, kinds = value.get("start"), value.get("end"), value.get("labels") or []
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end) or len(kinds) != 1:
                raise SslflowError(
                    f"{where}: annotation {annotation.get('id')}: a span needs start < end and one label, got "
                    f"start={start!r}, end={end!r}, labels={kinds!r}"
                )
            spans.append((start, end, str(kinds[0])))
        return tuple(sorted(spans))
    return None


def to_tags(row: SpanRow, types: set[str]) -> tuple[list[str], list[str]]:
    """The row's words and their IOB2 tags; an unknown type, a span past the text's end, or two spans on one word
    is one error naming the task."""
    words = [(m.start(), m.end()) for m in WORD.finditer(row.text)]
    tags = ["O"] * len(words)
    for start, end, kind in row.spans:
        if kind not in types:
            raise SslflowError(f"{row.where}: unknown entity type {kind!r}; the types are {sorted(types)}")
        if end > len(row.text):
            raise SslflowError(f"{row.where}: the span {start}:{end} ends past the text ({len(row.text)} characters)")
        touched = [i for i, (a, b) in enumerate(words) if a < end and start < b]
        for n, i in enumerate(touched):
            if tags[i] != "O":
                raise SslflowError(
                    f"{row.where}: the word {row.text[words[i][0]:words[i][1]]!r} is in two spans; a word has one tag"
                )
            tags[i] = ("B-" if n == 0 else "I-") + kind
    return [row.text[a:b] for a, b in words], tags
