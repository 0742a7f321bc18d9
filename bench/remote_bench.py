"""A teammate's `dvc pull` from a shared directory remote against rerunning pretraining (issue #15).

    python bench/remote_bench.py [--out bench/remote]

Needs the workspace's default run of both tracks, with dvc.lock and text/dvc.lock as committed. Pushes this
workspace's DVC cache to a fresh directory remote (a remote in .dvc/config.local, git-ignored, removed
afterwards: no tracked file changes), `git clone`s HEAD into a temp directory, and times there: `dvc pull`
(everything both tracks track), `dvc status`, and `dvc repro --all-pipelines`, run only when status is up to
date (it must then run nothing). Pretraining's time is read from the real run's reports/pretrain.json: the
last epoch's `pretrain/data_wait_s` + `pretrain/compute_s` times `pretrain.epochs`, the training loop alone
(no start-up, no per-epoch kNN monitor), so a lower bound. Writes <out>.json and a Markdown table <out>.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
REMOTE = "bench-team"


def sh(cwd: Path, *args: str) -> tuple[str, float]:
    """Runs a command with the venv's dvc first on PATH; its output and wall seconds."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(args)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr, round(seconds, 1)


def size_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def push(remote: Path) -> float:
    """`dvc push` from this workspace into `remote`, through a local-only remote that is removed again."""
    local = REPO / ".dvc" / "config.local"
    existed = local.exists()
    before = sh(REPO, "git", "status", "--porcelain")[0]
    sh(REPO, "dvc", "remote", "add", "--local", REMOTE, str(remote))
    try:
        seconds = sh(REPO, "dvc", "push", "-r", REMOTE)[1]
    finally:
        sh(REPO, "dvc", "remote", "remove", "--local", REMOTE)
        if not existed and not local.read_text().strip():
            local.unlink()
    if sh(REPO, "git", "status", "--porcelain")[0] != before:
        raise SystemExit("error: dvc push changed tracked files in the workspace")
    return seconds


def pretrain_loop_s() -> dict:
    report = json.loads((REPO / "reports" / "pretrain.json").read_text())
    epochs = yaml.safe_load((REPO / "params.yaml").read_text())["pretrain"]["epochs"]
    epoch_s = report["pretrain/data_wait_s"] + report["pretrain/compute_s"]
    return {"last_epoch_s": round(epoch_s, 1), "epochs": epochs, "loop_s": round(epoch_s * epochs, 1),
            "fields": "reports/pretrain.json: pretrain/data_wait_s + pretrain/compute_s, x params pretrain.epochs"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "remote")
    args = ap.parse_args()
    # The clone gets HEAD, so the workspace's locks must be HEAD's (uncommitted code edits do not matter: the
    # cache holds what the locks list, and `dvc push` fails on anything missing)
    changed = sh(REPO, "git", "status", "--porcelain", "dvc.lock", "text/dvc.lock")[0]
    if changed:
        raise SystemExit(f"error: commit the locks (or restore them) first:\n{changed}")
    uptime_before = sh(REPO, "uptime")[0].strip()
    with tempfile.TemporaryDirectory() as tmp:
        remote, clone = Path(tmp) / "team-remote", Path(tmp) / "clone"
        push_s = push(remote)
        sh(Path(tmp), "git", "clone", "-q", str(REPO), str(clone))
        sh(clone, "dvc", "remote", "add", "-d", "team", str(remote))
        pull_out, pull_s = sh(clone, "dvc", "pull")
        status_out, status_s = sh(clone, "dvc", "status")
        up_to_date = "Data and pipelines are up to date" in status_out
        ran, repro_s = None, None
        if up_to_date:  # else it would retrain: the comparison is already lost
            repro_out, repro_s = sh(clone, "dvc", "repro", "--all-pipelines")
            ran = [line.split("'")[1] for line in repro_out.splitlines() if line.startswith("Running stage")]
        result = {
            "remote_mib": size_mib(remote),
            "pulled_mib": size_mib(clone / ".dvc" / "cache"),
            "push_s": push_s,
            "pull_s": pull_s,
            "pull_summary": pull_out.strip().splitlines()[-1],
            "status_s": status_s,
            "status_up_to_date": up_to_date,
            "repro_s": repro_s,
            "repro_ran": ran,
            "pretrain": pretrain_loop_s(),
            "uptime_before_after": [uptime_before, sh(REPO, "uptime")[0].strip()],
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    p = result["pretrain"]
    table = "\n".join([
        f"`dvc pull` of both tracks from a directory remote into a fresh clone, {result['cpus']} CPUs "
        f"({result['date']}); `uptime` before: `{uptime_before}`; after: `{result['uptime_before_after'][1]}`", "",
        "| step | wall (s) |", "|---|---|",
        f"| `dvc push` from the workspace ({result['remote_mib']} MiB into the remote) | {push_s} |",
        f"| `dvc pull` in the clone ({result['pull_summary']}) | {pull_s} |",
        f"| `dvc status` in the clone (up to date: {up_to_date}) | {status_s} |",
        f"| `dvc repro --all-pipelines` in the clone (stages run: {ran}) | {repro_s} |",
        f"| rerunning pretrain instead: image training loop, {p['epochs']} epochs x {p['last_epoch_s']} s "
        f"({p['fields']}) | {p['loop_s']} |", "",
        f"`dvc pull` / image pretraining loop: {pull_s / p['loop_s']:.3f} of the time",
    ])
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
