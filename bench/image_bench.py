"""Benchmark of the default image profile (not a test): stage wall time and peak RSS, pretrain images/s, and
macro-F1 of ssl / scratch / classical at several label budgets, averaged over label draws.

    python bench/image_bench.py [--budgets 1 5 10] [--draws 3] [--out bench/image]

It runs the stages as subprocesses in a temporary copy of the project (so the workspace is untouched) and
writes <out>.json plus a short Markdown table <out>.md.
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

from sslflow.metrics import read as read_metrics

REPO = Path(__file__).resolve().parents[1]


def run_stage(project: Path, stage: str, env: dict) -> dict:
    """Wall time and peak RSS (MiB) of one stage process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, f"stages/image/{stage}.py"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed:\n{out[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench" / "image"))
    ap.add_argument("--reuse", type=Path, help="a project dir from an earlier run: skip its pipeline, sweep only")
    args = ap.parse_args()

    project = args.reuse or Path(tempfile.mkdtemp(prefix="sslflow-bench-"))
    if not args.reuse:
        shutil.copytree(REPO / "stages", project / "stages")
        shutil.copy(REPO / "params.yaml", project / "params.yaml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    params = yaml.safe_load((project / "params.yaml").read_text())

    pipeline = ("fetch", "preprocess", "label", "pretrain", "finetune", "evaluate")
    stages = {} if args.reuse else {s: run_stage(project, s, env) for s in pipeline}
    pretrain = json.loads((project / "reports" / "pretrain.json").read_text())
    result = {
        "profile": {
            "source": params["fetch"]["source"],
            "pretrain_epochs": params["pretrain"]["epochs"],
            "finetune": {k: params["finetune"][k] for k in ("method", "mode", "epochs", "fixmatch", "distill")},
        },
        "stages": stages,
        "default_repro_wall_s": sum(s["wall_s"] for s in stages.values()),
        "pretrain_images_per_s": pretrain["pretrain/samples_per_s"],
        "pretrain_val_knn_acc": pretrain["monitor/val_knn_acc"],
        "budgets": {},
    }
    for budget in args.budgets:
        draws = []
        for draw in range(args.draws):
            params["finetune"].update(labels_per_class=budget, label_fraction=None, label_seed=draw)
            (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            run_stage(project, "finetune", env)
            run_stage(project, "evaluate", env)
            metrics = read_metrics(project / "reports")
            scores = {m: v["macro_f1"] for m, v in metrics.items() if m != "lift"}
            draws.append(scores | {f"lift/{k}": v for k, v in metrics["lift"].items()})
            print(f"labels/class {budget} draw {draw}: {draws[-1]}", flush=True)
        result["budgets"][str(budget)] = {
            m: {"mean": float(np.mean([d[m] for d in draws])), "std": float(np.std([d[m] for d in draws]))}
            for m in draws[0]
        } | {"draws": draws}
    if not args.reuse:
        shutil.rmtree(project)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| stage | wall s | peak RSS MiB |", "|---|---|---|"]
    lines += [f"| {s} | {v['wall_s']:.1f} | {v['peak_rss_mib']:.0f} |" for s, v in stages.items()]
    lines += [
        "",
        f"default repro {result['default_repro_wall_s']:.0f} s; "
        f"pretrain {result['pretrain_images_per_s']:.0f} images/s",
        "",
    ]
    columns = [m for m in next(iter(result["budgets"].values())) if m != "draws"]
    lines += ["| labels/class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for budget, r in result["budgets"].items():
        lines.append(f"| {budget} | " + " | ".join(f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" for m in columns) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
