"""The test metrics, laid out for `dvc metrics show`: one JSON file per model under `reports/metrics/`
(macro-F1, accuracy, weakest-class recall; entity F1 for NER) and `lift.json` (what pretraining and the
unlabeled pool bought), so DVC prints a row per model rather than one row of twenty columns."""

import json
import shutil
from pathlib import Path

from sslflow.atomic import write_json

FOLDER = "metrics"


def write(reports_dir: Path, metrics: dict[str, dict]) -> Path:
    """Replace `reports_dir/metrics/` with one `<name>.json` per entry of `metrics`."""
    folder = Path(reports_dir) / FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # a model fitted last time but not now must not linger
    for name, values in metrics.items():
        write_json(folder / f"{name}.json", values)
    return folder


def read(reports_dir: Path) -> dict[str, dict]:
    """What `write` wrote: {model or "lift": its metrics}."""
    return {f.stem: json.loads(f.read_text()) for f in sorted((Path(reports_dir) / FOLDER).glob("*.json"))}
