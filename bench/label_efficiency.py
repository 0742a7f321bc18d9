"""Benchmark of the label-efficiency sweep (not a test): test macro-F1 of every method, probe, variant fine-tuned
with the unlabeled pool (fixmatch, distill, ...) and baseline at every label budget, mean over label draws, plus
wall time, on the default data.

    python bench/label_efficiency.py [--draws 3] [--budgets 1 5 10 40 all] [--methods simclr ...]
        [--pool-methods fixmatch distill] [--jobs 2] [--out bench/label_efficiency]

It runs the sweep's commands (stages/image/sweep.py and friends) as subprocesses in a temporary copy of the project,
so the workspace is untouched, timing each; then writes <out>.json, <out>.md and <out>.png. The best
pretrained variant is compared with the best classical baseline of the image-pipeline benchmark (logistic
regression / RBF SVM / label spreading), given as REFERENCE.
"""

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
REFERENCE = {"1": 0.555, "5": 0.756, "10": 0.809, "40": 0.890}  # best classical macro-F1 on MNIST-5k


def run(project: Path, env: dict, *args: str, outputs: tuple[str, ...] = (), earlier: dict | None = None) -> float:
    """Run one step, or with `earlier` (a continued run) skip it when its `outputs` exist, taking its wall time
    from the earlier log."""
    if earlier is not None and outputs and all((project / o).exists() for o in outputs):
        print(f"{earlier[' '.join(args)]:7.1f} s  {' '.join(args)}  (earlier run)", flush=True)
        return earlier[" ".join(args)]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    print(f"{time.perf_counter() - start:7.1f} s  {' '.join(args)}", flush=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--budgets", nargs="+", default=None, help="default: sweep.budgets")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="default: sweep.methods (with the pool: those of them in sweep.semisupervised)",
    )
    ap.add_argument("--pool-methods", nargs="+", default=None, help="default: sweep.pool_methods")
    ap.add_argument(
        "--jobs", type=int, default=1, help="cells run this many at a time (each with OMP_NUM_THREADS=1 when > 1)"
    )
    ap.add_argument("--out", default=str(REPO / "bench" / "label_efficiency"))
    ap.add_argument(
        "--continue",
        dest="project",
        type=Path,
        help="an interrupted run's project dir: steps whose outputs exist are kept",
    )
    ap.add_argument(
        "--log",
        type=Path,
        nargs="*",
        default=[],
        help="with --continue: the earlier runs' output, for their wall times",
    )
    ap.add_argument(
        "--no-summary", action="store_true", help="run the steps only (e.g. one budget beside another process)"
    )
    args = ap.parse_args()

    earlier = None
    if args.project:
        project = args.project
        lines = [
            line.split(" s  ", 1)
            for log in args.log
            for line in log.read_text().splitlines()
            if " s  stages/" in line
        ]
        earlier = {cmd.removesuffix("  (earlier run)").strip(): float(t) for t, cmd in lines}
    else:
        project = Path(tempfile.mkdtemp(prefix="sslflow-le-bench-"))
        shutil.copytree(REPO / "stages", project / "stages")
    params = yaml.safe_load(((args.project or REPO) / "params.yaml").read_text())  # a continued run keeps its own
    sweep = params["sweep"]
    sweep["draws"] = args.draws
    if args.budgets:
        sweep["budgets"] = [b if b == "all" else int(b) for b in args.budgets]
    if args.methods:
        sweep["methods"] = args.methods
        sweep["semisupervised"] = [m for m in sweep["semisupervised"] if m in args.methods]
    if args.pool_methods:
        sweep["pool_methods"] = args.pool_methods
    if not args.project:
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    if args.jobs > 1:
        env["OMP_NUM_THREADS"] = "1"

    step = functools.partial(run, project, env, earlier=earlier)
    wall = {
        "data": step("stages/image/fetch.py", outputs=("data/raw/manifest.json",))
        + step("stages/image/preprocess.py", outputs=("data/prepared/split.json",))
    }
    for m in sweep["methods"]:
        wall[f"pretrain/{m}"] = step(
            "stages/image/pretrain.py", "--method", m, "--out", f"models/sweep/{m}",
            outputs=(f"models/sweep/{m}/pretrain.json",),
        )
    cells = []  # (name, sweep.py arguments, outputs): independent of each other, so they may run side by side
    for b in map(str, sweep["budgets"]):
        out = f"reports/sweep/cells/{b}"
        where = ("--budget", b, "--out", out)
        for m in sweep["methods"]:
            enc = ("--method", m, "--encoder", f"models/sweep/{m}/encoder")
            cells.append((f"cell/ssl-{m}/{b}", ("ssl", *enc, *where), (f"{out}/{m}.json", f"{out}/{m}-probe.json")))
        for p in sweep["pool_methods"]:
            for m in sweep["semisupervised"]:
                enc = ("--method", m, "--encoder", f"models/sweep/{m}/encoder")
                command = ("semisupervised", "--pool-method", p, *enc, *where)
                cells.append((f"cell/{m}-{p}/{b}", command, (f"{out}/{m}-{p}.json",)))
            command = ("semisupervised", "--pool-method", p, *where)
            cells.append((f"cell/scratch-{p}/{b}", command, (f"{out}/scratch-{p}.json",)))
        cells.append((f"cell/baselines/{b}", ("baselines", *where), (f"{out}/scratch.json", f"{out}/classical.json")))

    def cell(item):
        name, command, outputs = item
        return name, step("stages/image/sweep.py", *command, outputs=outputs)

    with ThreadPoolExecutor(args.jobs) as pool:
        wall.update(pool.map(cell, cells))
    if args.no_summary:
        return
    wall["label_efficiency"] = step("stages/image/label_efficiency.py", "--cells", "reports/sweep/cells")

    table = json.loads((project / "reports" / "label_efficiency.json").read_text())
    pretrain = {
        m: json.loads((project / "models" / "sweep" / m / "pretrain.json").read_text()) for m in sweep["methods"]
    }
    result = {
        "profile": {
            "source": params["fetch"]["source"],
            "pretrain_epochs": params["pretrain"]["epochs"],
            "sweep": sweep,
            "finetune": {k: params["finetune"][k] for k in ("mode", "epochs", "batch_size", "fixmatch", "distill")},
            "jobs": args.jobs,
        },
        "wall_s": wall,
        "total_wall_s": sum(wall.values()),
        "pretrain_val_knn_acc": {m: p["monitor/val_knn_acc"] for m, p in pretrain.items()},
        "reference_best_classical": REFERENCE,
        "target": {
            b: {
                "best_pretrained": table["best"][b]["best_pretrained"],
                "macro_f1": table["best"][b]["macro_f1"],
                "reference": ref,
                "met": table["best"][b]["macro_f1"] >= ref,
            }
            for b, ref in REFERENCE.items()
            if b in table["best"]
        },
        "table": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.copy(project / "reports" / "label_efficiency.png", out.with_suffix(".png"))
    lines = [
        (project / "reports" / "label_efficiency.md").read_text(),
        "| budget | best pretrained | macro-F1 | best classical (reference) | met |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {b} / class | {t['best_pretrained']} | {t['macro_f1']:.3f} | {t['reference']:.3f} "
        f"| {'yes' if t['met'] else 'no'} |"
        for b, t in result["target"].items()
    ]
    lines += ["", "| step | wall s |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in wall.items()]
    lines += [
        "",
        f"total {result['total_wall_s'] / 60:.1f} min; pretrain val kNN accuracy: "
        + ", ".join(f"{m} {a:.3f}" for m, a in result["pretrain_val_knn_acc"].items()),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(project)


if __name__ == "__main__":
    main()
