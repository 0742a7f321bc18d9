"""Evaluate's cost as the test set grows: the real evaluate stage on a 10,000-image test split.

    python bench/evaluate_bench.py [--test-images 10000] [--out bench/evaluate]

Needs the workspace's default run (data/prepared, models/encoder, models/finetuned: `dvc repro finetune`).
The test split is made from MNIST-5k's labeled images (train, val, test), repeated with a one-pixel shift per
copy until it holds --test-images; evaluate then runs in a scratch project twice: with
`evaluate.embedding_sample` at its default (the t-SNE picture on a stratified sample) and at the test set's
size (every image in the picture, as before the setting existed). Wall time of each, from the stage's start to
its exit. Writes <out>.json and a Markdown table <out>.md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_split(prepared: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([np.load(prepared / f"{s}_images.npy") for s in ("train", "val", "test")])
    labels = np.concatenate([np.load(prepared / f"{s}_labels.npy") for s in ("train", "val", "test")])
    copies = -(-size // len(images))
    images = np.concatenate([np.roll(images, k, axis=-1) for k in range(copies)])[:size]
    return images, np.tile(labels, copies)[:size]


def evaluate(project: Path, sample: int) -> float:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"]["embedding_sample"] = sample
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(REPO / "stages" / "image" / "evaluate.py")], cwd=project, env=env,
                            capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"evaluate failed:\n{result.stderr[-3000:]}")
    return round(seconds, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--test-images", type=int, default=10000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "evaluate")
    args = ap.parse_args()
    for needed in ("data/prepared", "models/encoder", "models/finetuned"):
        if not (REPO / needed).is_dir():
            raise SystemExit(f"error: {REPO / needed} is missing: run `dvc repro finetune` first")
    default = yaml.safe_load((REPO / "params.yaml").read_text())["evaluate"]["embedding_sample"]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copytree(REPO / "data" / "prepared", project / "data" / "prepared")
        for models in ("encoder", "finetuned"):
            shutil.copytree(REPO / "models" / models, project / "models" / models)
        images, labels = test_split(project / "data" / "prepared", args.test_images)
        np.save(project / "data" / "prepared" / "test_images.npy", images)
        np.save(project / "data" / "prepared" / "test_labels.npy", labels)
        seconds = {
            f"sample {default}": evaluate(project, default),
            f"all {len(labels)}": evaluate(project, len(labels)),
        }
    result = {
        "test_images": len(labels),
        "wall_s": seconds,
        "load_avg_before_after": [list(load_before), list(os.getloadavg())],
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {name} | {s} |" for name, s in seconds.items()]
    (a, sa), (b, sb) = seconds.items()
    table = "\n".join([
        f"evaluate on {len(labels)} test images, {result['cpus']} CPUs, load average before/after "
        f"{result['load_avg_before_after']} ({result['date']})", "",
        "| t-SNE picture | evaluate wall (s) |", "|---|---|", *rows, "", f"{a} / {b}: {sa / sb:.2f} of the time",
    ])
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
