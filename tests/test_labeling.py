"""The "to label" outputs: the fillable CSV, Label Studio tasks and config, the Markdown list, and the contact
sheet and PNGs of proposed images."""

import base64
import csv
import io
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from sslflow.image.contact_sheet import contact_sheet, png_bytes
from sslflow.labeling import label_studio_config, label_studio_tasks, markdown_list, write_to_label_csv

ROWS = [
    {
        "id": np.int64(17),
        "path": "pool/17.png",
        "suggested_label": "cat",
        "confidence": np.float32(0.8312),
        "score": 0.25,
    },
    {
        "id": "a-3",
        "path": 'a text, with "quotes"\nand a newline',
        "suggested_label": None,
        "confidence": None,
        "score": 1.5,
    },
]


def test_to_label_csv_is_fillable(tmp_path):
    path = tmp_path / "to_label.csv"
    write_to_label_csv(path, ROWS)
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["id", "path", "suggested_label", "confidence", "score", "label"]
    assert read[0] == {
        "id": "17",
        "path": "pool/17.png",
        "suggested_label": "cat",
        "confidence": "0.8312",
        "score": "0.25",
        "label": "",
    }
    assert read[1]["path"] == ROWS[1]["path"]  # commas, quotes and newlines survive
    assert read[1]["suggested_label"] == read[1]["confidence"] == read[1]["label"] == ""
    assert [p.name for p in tmp_path.iterdir()] == ["to_label.csv"]  # no temp file left behind


def test_label_studio_tasks_for_images_and_text():
    image = np.zeros((1, 4, 4), np.uint8)
    rows = [dict(ROWS[0], png=png_bytes(image)), dict(ROWS[1], png=png_bytes(image))]
    tasks = label_studio_tasks(rows, kind="image", classes=["cat", "dog"])
    assert tasks[0]["data"]["sslflow_id"] == 17 and type(tasks[0]["data"]["sslflow_id"]) is int
    uri = tasks[0]["data"]["image"]
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == rows[0]["png"]
    (prediction,) = tasks[0]["predictions"]
    assert prediction["model_version"] == "sslflow" and abs(prediction["score"] - 0.8312) < 1e-6
    assert prediction["result"] == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
    ]
    assert "predictions" not in tasks[1]  # no suggestion, nothing pre-filled

    texts = label_studio_tasks(ROWS, kind="text", classes=["cat", "dog"])
    assert texts[1]["data"] == {"text": ROWS[1]["path"], "sslflow_id": "a-3"}
    assert texts[0]["predictions"][0]["result"][0]["to_name"] == "text"


def test_label_studio_config_names_match_the_tasks():
    for kind in ("image", "text"):
        view = ET.fromstring(label_studio_config(kind, ["cat", 'say "hi" & <bye>']))
        shown, choices = list(view)
        assert shown.get("name") == kind and shown.get("value") == f"${kind}"
        assert choices.get("name") == "label" and choices.get("toName") == kind and choices.get("choice") == "single"
        assert [c.get("value") for c in choices] == ["cat", 'say "hi" & <bye>']


def test_markdown_list_numbers_the_texts():
    text = markdown_list(ROWS)
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1. pool/17.png") and "`17`" in lines[0] and "cat (0.83)" in lines[0]
    assert lines[1].startswith('2. a text, with "quotes" and a newline') and "no suggestion" in lines[1]


def test_png_bytes_round_trip():
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        image = rng.integers(0, 256, size=(channels, 5, 7), dtype=np.uint8)
        decoded = np.asarray(Image.open(io.BytesIO(png_bytes(image))))
        expected = image[0] if channels == 1 else image.transpose(1, 2, 0)
        np.testing.assert_array_equal(decoded, expected)


def test_contact_sheet_grows_with_rows(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    sizes = []
    for n in (4, 12):
        path = tmp_path / f"sheet{n}.png"
        contact_sheet(path, images[:n], [f"{i}: cat" for i in range(n)], columns=4)
        with Image.open(path) as sheet:
            sheet.verify()
        with Image.open(path) as sheet:
            sizes.append(sheet.size)
    assert sizes[0][0] == sizes[1][0] and sizes[1][1] > 2 * sizes[0][1]  # same width; 3 rows against 1
