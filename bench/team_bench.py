"""What logging to the team server costs against the embedded sqlite store (issue #15): a replay of the MLflow
calls of one default image pipeline run, not a pipeline run.

    python bench/team_bench.py [--out bench/team]

Needs the workspace's default run (reports/lineage/, reports/*_metrics.jsonl, mlflow.db, mlartifacts/,
models/finetuned/, data/prepared/) and Debian's postgresql. A whole default pipeline takes ~10 minutes per
backend on 2 CPUs, nearly all of it training; this replays its MLflow calls alone, through the pipeline's own
tracking code (sslflow.tracking.stage_run, in a scratch project), stage by stage:

- open: the run, with the real run's name, own params, sslflow tags and dataset (read from a copy of mlflow.db;
  the upstream run's params come along, as in the pipeline);
- metrics: one `log` call per record of reports/<stage>_metrics.jsonl, with its keys and values. Pretrain's
  file starts at step 101 (that run was resumed there); steps 1-100 are replayed with the records one epoch
  later, so the replay has the uninterrupted run's calls;
- artifacts: what the real run uploaded (mlartifacts/<run>/artifacts): fetch and preprocess file by file (as
  record_data_stage does), the other stages a directory or file per call;
- model (evaluate): the ssl model logged as the pyfunc (log_image_classifier), registered with the evidence
  tags of the real version, and given the `challenger` alias;
- end: the run ended FINISHED.

Backends, each replayed in its own process: (a) a fresh sqlite store with a local artifact directory (its tables
made before timing, as a workspace has them); (b) scripts/team_server.sh with its defaults on a throwaway
PostgreSQL cluster (tests/servers.py), as a maintainer (basic auth, artifacts proxied through the server), on
this machine; (c) the same with MLflow's basic-auth credential cache off (SSLFLOW_TEAM_AUTH_CACHE_S=0: every
request checks the password hash), on the same database. Then the cost of one request (a small read, one
log_metric) on each, as the admin too, and on the same `mlflow server` without the auth app. Writes <out>.json
and a Markdown table <out>.md, with `uptime` before and after each replay.
"""

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = {"fetch": None, "preprocess": "fetch", "pretrain": "preprocess", "finetune": "pretrain",
          "evaluate": "finetune"}  # stage: its upstream
GROUPS = ("open", "metrics", "artifacts", "model", "end")
SET_BY_STAGE_RUN = ("sslflow.stage", "sslflow.pipeline_id", "sslflow.upstream_run_id", "sslflow.upstream_offline_id",
                    "sslflow.host", "sslflow.pid", "sslflow.pid_start", "sslflow.resumed_at_step")
MODEL = "sslflow-image"
MAINTAINER = ("bench-maintainer", "bench-maintainer-password")


def complete(records: list[dict]) -> list[dict]:
    """The records of an uninterrupted run: a file that starts after step 1 (a resumed run) gets the steps before,
    each a copy of the record(s) a whole number of epochs later. The epoch is the distance between the records
    with the most keys (the per-epoch summaries)."""
    first = min(r["step"] for r in records)
    if first <= 1:
        return records
    widest = max(len(r) for r in records)
    ends = sorted(r["step"] for r in records if len(r) == widest)
    epoch = ends[1] - ends[0]
    by_step: dict[int, list[dict]] = {}
    for record in records:
        by_step.setdefault(record["step"], []).append(record)
    before = [
        {**record, "step": step}
        for step in range(1, first)
        for record in by_step[step + epoch * math.ceil((first - step) / epoch)]
    ]
    return before + records


def spec(db: Path, snapshot: Path) -> dict:
    """What each stage's run logged, read from the workspace: a copy of its store (`db`), its metrics files, and
    its uploaded artifacts and evaluate's model inputs, copied into `snapshot` (a `dvc repro` may replace them
    while the replay runs)."""
    import numpy as np

    store = sqlite3.connect(db)
    stages = {}
    for stage in STAGES:
        run_id = json.loads((REPO / "reports" / "lineage" / f"{stage}.json").read_text())["run_id"]
        (name,) = store.execute("select name from runs where run_uuid = ?", (run_id,)).fetchone()
        params = dict(store.execute("select key, value from params where run_uuid = ? and key like ?",
                                    (run_id, f"{stage}.%")))
        tags = dict(store.execute("select key, value from tags where run_uuid = ? and key like 'sslflow.%'", (run_id,)))
        data = store.execute(
            "select d.name, d.digest, t.value from inputs i join datasets d on d.dataset_uuid = i.source_id "
            "join input_tags t on t.input_uuid = i.input_uuid where i.destination_id = ?", (run_id,)
        ).fetchone()
        lines = (REPO / "reports" / f"{stage}_metrics.jsonl").read_text().splitlines()
        records = complete([json.loads(line) for line in lines])
        logged = Path(shutil.copytree(REPO / "mlartifacts" / run_id / "artifacts", snapshot / stage))
        artifacts = []
        for entry in sorted(logged.iterdir()):
            if stage in ("fetch", "preprocess"):  # record_data_stage: file by file, under the stage's name
                artifacts += [[str(f), entry.name] for f in sorted(entry.iterdir())]
            else:
                artifacts.append([str(entry), entry.name if entry.is_dir() else None])
        stages[stage] = {
            "run_name": name,
            "params": {key.removeprefix(f"{stage}."): value for key, value in params.items()},
            "tags": {k: v for k, v in tags.items() if k not in SET_BY_STAGE_RUN},
            "data": list(data),
            "records": [{k: v for k, v in r.items() if k not in ("step", "timestamp")} | {"step": r["step"]}
                        for r in records],
            "artifacts": artifacts,
            "artifact_bytes": sum(f.stat().st_size for f in logged.rglob("*") if f.is_file()),
        }
    evaluated = json.loads((REPO / "reports" / "lineage" / "evaluate.json").read_text())["run_id"]
    (version,) = store.execute("select version from model_versions where run_id = ? and name = ?",
                               (evaluated, MODEL)).fetchone()
    evidence = dict(store.execute("select key, value from model_version_tags where name = ? and version = ?",
                                  (MODEL, version)))
    model = {"dir": str(shutil.copytree(REPO / "models" / "finetuned", snapshot / "finetuned")),
             "classes": str(shutil.copy(REPO / "data" / "prepared" / "classes.json", snapshot / "classes.json")),
             "example": str(snapshot / "example.npy")}
    np.save(model["example"], np.load(REPO / "data" / "prepared" / "test_images.npy", mmap_mode="r")[:2])
    return {"stages": stages, "model": model,
            "evidence": {k: v for k, v in evidence.items() if k != "sslflow.promotion"}}


def replay(plan: dict) -> dict:
    """In a scratch project (the cwd), against MLFLOW_TRACKING_URI: every stage's calls; seconds per group."""
    import mlflow
    import numpy as np

    from sslflow.tracking import log_image_classifier, stage_run

    seconds = {}
    for stage, upstream in STAGES.items():
        s = plan["stages"][stage]
        took = dict.fromkeys(GROUPS, 0.0)
        start = time.perf_counter()
        with stage_run(stage, run_name=s["run_name"], experiment="sslflow", params=s["params"], upstream=upstream,
                       tags=s["tags"], data=(Path(s["data"][0]), s["data"][1], s["data"][2])) as run:
            took["open"] = time.perf_counter() - start
            start = time.perf_counter()
            for record in s["records"]:
                run.log({k: v for k, v in record.items() if k != "step"}, record["step"])
            took["metrics"] = time.perf_counter() - start
            start = time.perf_counter()
            for path, artifact_path in s["artifacts"]:
                run.log_artifact(Path(path), artifact_path)
            took["artifacts"] = time.perf_counter() - start
            if stage == "evaluate":
                start = time.perf_counter()
                model = plan["model"]
                uri = log_image_classifier(Path(model["dir"]), "ssl", Path(model["classes"]), np.load(model["example"]))
                version = mlflow.register_model(uri, MODEL, tags=plan["evidence"]).version
                mlflow.MlflowClient().set_registered_model_alias(MODEL, "challenger", version)
                took["model"] = time.perf_counter() - start
            if not run.online:
                raise SystemExit(f"error: the {stage} replay lost the tracking server: its times mean nothing")
            start = time.perf_counter()
        took["end"] = time.perf_counter() - start
        seconds[stage] = {k: round(v, 2) for k, v in took.items()}
    return seconds


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def run_replay(plan: Path, project: Path, env: dict) -> dict:
    """The replay in its own process (a fresh MLflow client), in `project`; seconds per stage and group."""
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", project / "params.yaml")  # marks the project root for sslflow.paths
    out = project / "timings.json"
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--replay", str(plan), "--timings", str(out)],
                          cwd=project, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the replay failed:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def backend_env(**mlflow_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, **mlflow_vars, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@contextmanager
def signed_in(user: tuple[str, str] | None) -> Iterator[None]:
    """This process's MLflow client as `user` (basic auth), or with no credentials."""
    saved = {k: os.environ.pop(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if k in os.environ}
    if user:
        os.environ.update(MLFLOW_TRACKING_USERNAME=user[0], MLFLOW_TRACKING_PASSWORD=user[1])
    try:
        yield
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key, None)
        os.environ.update(saved)


def request_ms(uri: str, user: tuple[str, str] | None, count: int = 20) -> dict[str, float]:
    """Median milliseconds of one small read (get_experiment_by_name) and one log_metric, as `user`."""
    import mlflow

    with signed_in(user):
        client = mlflow.MlflowClient(uri)
        run_id = client.create_run(client.get_experiment_by_name("sslflow").experiment_id,
                                   run_name="bench: requests").info.run_id
        reads, writes = [], []
        for step in range(count):
            start = time.perf_counter()
            client.get_experiment_by_name("sslflow")
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.log_metric(run_id, "x", 1.0, step=step)
            writes.append(time.perf_counter() - start)
        client.set_terminated(run_id)
    return {"read_ms": round(1000 * statistics.median(reads)), "log_metric_ms": round(1000 * statistics.median(writes))}


@contextmanager
def auth_cache(seconds: str | None) -> Iterator[None]:
    """scripts/team_server.sh started meanwhile remembers a passed password check for `seconds` (None: its
    default)."""
    saved = os.environ.pop("SSLFLOW_TEAM_AUTH_CACHE_S", None)
    if seconds is not None:
        os.environ["SSLFLOW_TEAM_AUTH_CACHE_S"] = seconds
    try:
        yield
    finally:
        os.environ.pop("SSLFLOW_TEAM_AUTH_CACHE_S", None)
        if saved is not None:
            os.environ["SSLFLOW_TEAM_AUTH_CACHE_S"] = saved


def cache_default() -> str:
    """scripts/team_server.sh's default of SSLFLOW_TEAM_AUTH_CACHE_S, as it reads it."""
    found = re.search(r"SSLFLOW_TEAM_AUTH_CACHE_S:-(\d+)", (REPO / "scripts" / "team_server.sh").read_text())
    return found.group(1) if found else "0"


@contextmanager
def open_server(pg, home: Path) -> Iterator[str]:
    """The team server's `mlflow server` command on the same database, without the auth app."""
    from servers import local_server

    home.mkdir()
    with local_server(
        lambda port: ["mlflow", "server", "--backend-store-uri", pg.uri("mlflow"), "--artifacts-destination",
                      str(home / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=None, env=backend_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), log=home / "server.log",
        health="/health",
    ) as url:
        yield url


def measure(plan: Path, tmp: Path) -> tuple[dict, dict, dict]:
    """Replays on sqlite, the team server and the team server with its credential cache off; per-request costs;
    `uptime` around each replay."""
    import mlflow

    sys.path.insert(0, str(REPO / "tests"))
    from servers import ADMIN, PG_BIN, Postgres, team_server

    from sslflow.tracking.team import add_user, grant

    if not (PG_BIN / "initdb").exists():
        raise SystemExit("error: PostgreSQL is not installed (Debian's postgresql)")
    backends, requests, load = {}, {}, {}

    def replay_on(name: str, project: Path, env: dict) -> None:
        before = uptime()
        backends[name] = run_replay(plan, project, env)
        load[name] = [before, uptime()]
        print(f"{name}: {sum(sum(g.values()) for g in backends[name].values()):.1f} s", file=sys.stderr)

    uri = f"sqlite:///{tmp / 'sqlite' / 'mlflow.db'}"
    (tmp / "sqlite").mkdir()
    mlflow.MlflowClient(uri).search_experiments()  # the tables, made before timing
    replay_on("sqlite", tmp / "sqlite", backend_env(MLFLOW_TRACKING_URI=uri))
    requests["sqlite"] = request_ms(uri, None)

    pg = Postgres()
    pg.init("mlflow", "mlflow_auth")
    try:
        for name, cache in (("team", None), ("team, no auth cache", "0")):
            with auth_cache(cache), team_server(pg, tmp / "team-home", tmp / f"{name}.log") as url:
                if cache is None:
                    with signed_in(ADMIN):
                        add_user(url, *MAINTAINER)
                        grant(url, MAINTAINER[0], "maintainer", "sslflow", [MODEL])
                replay_on(name, tmp / name.replace(", ", "-").replace(" ", "-"), backend_env(
                    MLFLOW_TRACKING_URI=url, MLFLOW_TRACKING_USERNAME=MAINTAINER[0],
                    MLFLOW_TRACKING_PASSWORD=MAINTAINER[1],
                ))
                what = f"team server, auth cache {cache or cache_default()} s"
                requests[f"{what}, admin"] = request_ms(url, ADMIN)
                requests[f"{what}, maintainer"] = request_ms(url, MAINTAINER)
        with open_server(pg, tmp / "open-home") as url:
            requests["the same mlflow server on PostgreSQL without the auth app"] = request_ms(url, None)
    finally:
        pg.stop()
    return backends, requests, load


BACKENDS = ("sqlite", "team", "team, no auth cache")


def table(result: dict) -> str:
    seconds = {b: result["backends"][b] for b in BACKENDS}
    total = result["total_s"]

    def row(label: str, what: str, times: list[float]) -> str:
        a, b, c = times
        return f"| {label} | {what} | {a:.1f} | {b:.1f} | {c:.1f} | {b / a:.1f} | {c / a:.1f} |"

    rows = []
    for stage, s in result["stages"].items():
        what = (f"{s['metric_calls']} metric calls ({s['metric_points']} values), {s['artifact_calls']} artifact "
                f"calls ({s['artifact_bytes'] / 1024:.0f} KiB)")
        what += ", model log + register + alias" if stage == "evaluate" else ""
        rows.append(row(stage, what, [sum(seconds[b][stage].values()) for b in BACKENDS]))
    rows.append(row("**total**", "", [total[b] for b in BACKENDS]))
    groups = [row(group, "", [sum(seconds[b][stage][group] for stage in seconds[b]) for b in BACKENDS])
              for group in GROUPS if group != "model"]
    groups.append(row("model", "", [seconds[b]["evaluate"]["model"] for b in BACKENDS]))
    requests = [f"| {name} | {ms['read_ms']} | {ms['log_metric_ms']} |" for name, ms in result["requests"].items()]
    load = "; ".join(f"{b}: `{before}` / `{after}`" for b, (before, after) in result["uptime"].items())
    header = "| | | sqlite (s) | team server (s) | cache off (s) | team / sqlite | cache off / sqlite |"
    return "\n".join([
        "# MLflow calls of one default image pipeline run: team server vs sqlite",
        "",
        "A **replay of the MLflow calls** the default image pipeline made, **not a pipeline run**: no training "
        "happens, so the times are those of the MLflow calls alone. What is replayed is read from this "
        "workspace's default run (its metrics files, its runs' params, tags and uploaded artifacts, evaluate's "
        "model) and goes through the pipeline's own tracking code (`stage_run`, `StageRun.log`, "
        "`log_image_classifier`); bench/team_bench.py says exactly what.",
        "",
        "- sqlite: a fresh `mlflow.db` with a local artifact directory (its tables made before timing).",
        f"- team server: `scripts/team_server.sh` with its defaults (`mlflow server --app-name basic-auth`, 1 "
        f"worker; a passed password check remembered {result['auth_cache_s']} s) on PostgreSQL "
        f"{result['postgresql']}, as a maintainer (basic auth), artifacts proxied through the server.",
        "- cache off: the same with `SSLFLOW_TEAM_AUTH_CACHE_S=0` (MLflow's own default: every request checks "
        "the password hash), on the same database (which already holds the previous replay's runs).",
        f"- Server, PostgreSQL and client on one machine: {result['cpus']} CPUs shared with other work, "
        f"{result['date']}. `uptime` before / after each replay: {load}.",
        "",
        header.replace("| | |", "| stage | calls replayed |"),
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        header.replace("| | |", "| call group (all stages) | |"),
        "|---|---|---|---|---|---|---|",
        *groups,
        "",
        "One request, median of 20 (ms):",
        "",
        "| server | small read (`get_experiment_by_name`) | `log_metric` |",
        "|---|---|---|",
        *requests,
        "",
        "The stages make one request per metric record (`StageRun.log` calls `mlflow.log_metrics` at every "
        "step), so the metric calls dominate. Each request to the team server pays HTTP and the basic-auth "
        "check of the password, a deliberately slow hash (scrypt): with the credential cache off it is computed "
        "for every request, and a non-admin user's request costs more again (the admin and maintainer rows); "
        "with the cache on, once per user and cache period. Against the ~10 minutes of a default image run on "
        f"this machine, the team server adds {total['team'] - total['sqlite']:.0f} s of MLflow calls over "
        f"sqlite; with the cache off, {total['team, no auth cache'] - total['sqlite']:.0f} s.",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "team")
    ap.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # in the child process: the plan to replay
    ap.add_argument("--timings", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replay:
        args.timings.write_text(json.dumps(replay(json.loads(args.replay.read_text()))))
        return
    for needed in ("reports/lineage/evaluate.json", "mlflow.db", "mlartifacts", "models/finetuned"):
        if not (REPO / needed).exists():
            raise SystemExit(f"error: {REPO / needed} is missing: run the default image pipeline (`dvc repro`) first")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(REPO / "mlflow.db", tmp / "workspace.db")  # read a copy: the workspace's store is left alone
        plan = spec(tmp / "workspace.db", tmp / "snapshot")
        (tmp / "plan.json").write_text(json.dumps(plan))
        backends, requests, load = measure(tmp / "plan.json", tmp)
    from servers import PG_BIN

    result = {
        "what": "a replay of the MLflow calls of one default image pipeline run (not a pipeline run)",
        "stages": {
            stage: {
                "metric_calls": len(s["records"]),
                "metric_points": sum(len(r) - 1 for r in s["records"]),
                "params_own": len(s["params"]),
                "artifact_calls": len(s["artifacts"]),
                "artifact_bytes": s["artifact_bytes"],
            }
            for stage, s in plan["stages"].items()
        },
        "backends": backends,
        "total_s": {name: round(sum(sum(g.values()) for g in b.values()), 1) for name, b in backends.items()},
        "requests": requests,
        "postgresql": PG_BIN.parent.name,
        "auth_cache_s": cache_default(),
        "uptime": load,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    total = result["total_s"]
    result["ratio_team_to_sqlite"] = round(total["team"] / total["sqlite"], 1)
    result["ratio_no_cache_to_sqlite"] = round(total["team, no auth cache"] / total["sqlite"], 1)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
