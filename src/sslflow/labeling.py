"""What goes to the people who label the proposed items: a CSV to fill in, Label Studio tasks with the probe's
suggestion as a pre-annotation, and a Markdown list for texts.

A row is a dict: id, path (a file path, or for text the text itself), suggested_label (str or None),
confidence (float or None), score (float); for Label Studio image tasks also png (bytes).
"""

import base64
import csv
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from sslflow.atomic import write_with

CSV_COLUMNS = ("id", "path", "suggested_label", "confidence", "score", "label")  # `label`: for the person to fill
KINDS = ("image", "text")


def _plain(value):
    """A numpy scalar as the Python one, so it serialises as JSON and prints without its type."""
    return value.item() if isinstance(value, np.generic) else value


def _blank(value, fmt: str) -> str:
    return "" if value is None else format(_plain(value), fmt)


def write_to_label_csv(path: Path, rows: list[dict]) -> None:
    """A CSV with an empty `label` column; once filled it is a valid labels file (id, label, extra columns)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(CSV_COLUMNS)
            for row in rows:
                suggested = row.get("suggested_label")
                confidence = _blank(row.get("confidence"), ".4f")
                out.writerow(
                    [_plain(row["id"]), row["path"], suggested or "", confidence, _blank(row["score"], ".6g"), ""]
                )

    write_with(path, write)


def label_studio_tasks(rows: list[dict], *, kind: str, classes: list[str]) -> list[dict]:
    """Label Studio tasks (https://labelstud.io/guide/tasks.html), one per row, for `label_studio_config(kind, ...)`;
    a suggestion becomes a prediction the labeler accepts or corrects."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    tasks = []
    for row in rows:
        if kind == "image":
            value = "data:image/png;base64," + base64.b64encode(row["png"]).decode("ascii")
        else:
            value = row["path"]
        task = {"data": {kind: value, "sslflow_id": _plain(row["id"])}}
        suggested = row.get("suggested_label")
        if suggested is not None:
            if suggested not in classes:
                raise ValueError(f"suggested label {suggested!r} of item {row['id']} is not one of the classes")
            choice = {"from_name": "label", "to_name": kind, "type": "choices", "value": {"choices": [suggested]}}
            prediction = {"model_version": "sslflow", "result": [choice]}
            if row.get("confidence") is not None:
                prediction["score"] = float(row["confidence"])
            task["predictions"] = [prediction]
        tasks.append(task)
    return tasks


def label_studio_config(kind: str, classes: list[str]) -> str:
    """The labeling config XML: the image or text, and one single-choice `label` over the classes."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shown = '<Image name="image" value="$image"/>' if kind == "image" else '<Text name="text" value="$text"/>'
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in classes)
    return (
        f'<View>\n  {shown}\n  <Choices name="label" toName="{kind}" choice="single">\n{choices}\n  </Choices>\n'
        "</View>\n"
    )


def markdown_list(rows: list[dict]) -> str:
    """A numbered list of the proposed texts (on one line each) with id, suggestion and score."""
    lines = []
    for n, row in enumerate(rows, 1):
        text = " ".join(str(row["path"]).split())
        suggested = row.get("suggested_label")
        if suggested is None:
            hint = "no suggestion"
        else:
            confidence = row.get("confidence")
            hint = f"suggested {suggested}" + ("" if confidence is None else f" ({_plain(confidence):.2f})")
        lines.append(f"{n}. {text} — id `{_plain(row['id'])}`, {hint}, score {_plain(row['score']):.4g}")
    return "\n".join(lines) + "\n"
