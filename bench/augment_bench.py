"""Where pretraining's views are made (`pretrain.augment_on`): the data-wait share of a pretrain epoch.

    python bench/augment_bench.py [--epochs 1] [--repeats 2] [--out bench/augment]

Runs the real pretrain stage (default params.yaml, SimCLR on MNIST-5k's pool) in a scratch project, once per
setting and repeat, alternating the order: `loader` (torchvision.transforms.v2 per image in the DataLoader
worker) and `device` (sslflow.image.batch_views.SimCLRView on the training device, here the CPU). From the stage's
reports/pretrain.json (the last epoch): seconds waiting for data, seconds computing, their sum and
samples/s. Writes <out>.json and a Markdown table <out>.md; the medians over repeats.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("loader", "device")


def pretrain(project: Path, augment_on: str, epochs: int) -> dict[str, float]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pretrain"].update(epochs=epochs, augment_on=augment_on)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(project / "checkpoints", ignore_errors=True)  # never resume the other setting's run
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, str(REPO / "stages" / "image" / "pretrain.py")], cwd=project, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"pretrain ({augment_on}) failed:\n{result.stderr[-3000:]}")
    summary = json.loads((project / "reports" / "pretrain.json").read_text())
    wait, compute = summary["pretrain/data_wait_s"], summary["pretrain/compute_s"]
    return {
        "data_wait_s": wait,
        "compute_s": compute,
        "epoch_s": wait + compute,
        "wait_share": wait / (wait + compute),
        "samples_per_s": summary["pretrain/samples_per_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "augment")
    args = ap.parse_args()
    prepared = REPO / "data" / "prepared"
    if not (prepared / "pool_images.npy").is_file():
        raise SystemExit(f"error: {prepared} has no pool_images.npy: run `dvc repro preprocess` first")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        shutil.copytree(prepared, project / "data" / "prepared")
        for repeat in range(args.repeats):
            for setting in SETTINGS if repeat % 2 == 0 else SETTINGS[::-1]:
                runs[setting].append(pretrain(project, setting, args.epochs))
                print(f"{setting} #{repeat + 1}: {runs[setting][-1]}", flush=True)
    medians = {s: {k: statistics.median(r[k] for r in runs[s]) for k in runs[s][0]} for s in SETTINGS}
    result = {
        "machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}, {platform.processor() or platform.machine()}",
        "load_avg_before_after": [list(load_before), list(os.getloadavg())],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "epochs": args.epochs,
        "runs": runs,
        "median": medians,
        "wait_share_cut": 1 - medians["device"]["wait_share"] / medians["loader"]["wait_share"],
    }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| {s} | {m['data_wait_s']:.1f} | {m['compute_s']:.1f} | {m['epoch_s']:.1f} | {m['wait_share']:.1%} "
        f"| {m['samples_per_s']:.0f} |"
        for s, m in medians.items()
    ]
    table = "\n".join(
        [
            f"Machine: {result['machine']}; "
            f"load average before/after {result['load_avg_before_after']} ({result['date']}).",
            f"One pretrain epoch (SimCLR, default params), median of {args.repeats} runs per setting.",
            "",
            "| pretrain.augment_on | data wait (s) | compute (s) | epoch (s) | data-wait share | samples/s |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Data-wait share cut by {result['wait_share_cut']:.0%} with the views made on the device.",
        ]
    )
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
