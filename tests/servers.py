"""Server processes for tests on free ports of 127.0.0.1, stopped afterwards: mlflow ui, mlflow models serve, and
the team server (scripts/team_server.sh) on a throwaway PostgreSQL cluster."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (it runs its workers as children), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def local_server(
    command: Callable[[int], list[str]], *, cwd: Path | None, env: dict, log: Path, health: str
) -> Iterator[str]:
    """Start `command(port)`, wait until `health` answers, yield the base URL; the output goes to `log`."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            command(port), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for(f"http://127.0.0.1:{port}{health}", proc, 180)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


# Debian's postgresql (.ci/run installs it), whichever major version the release ships: the newest installed.
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: [int(n) for n in p.parent.name.split(".") if n.isdigit()],
    default=Path("/nonexistent"),
)
ADMIN = ("admin", "team-admin-pw-for-tests")


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: there, run it as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """A throwaway PostgreSQL cluster on a free port of 127.0.0.1 (trust auth, user `mlflow`), its files in a new
    temp directory that the `postgres` user can reach (pytest's are private to root), removed at exit."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="sslflow-pg-"))
        self.log = self.root / "log"
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)
        self.data = self.root / "data"
        self.port = free_port()

    def uri(self, db: str) -> str:
        return f"postgresql+psycopg://mlflow@127.0.0.1:{self.port}/{db}"

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
                          "-w", "-t", "60", *args]),
            check=True, capture_output=True, cwd="/",
        )

    def init(self, *databases: str) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "mlflow", "--auth=trust", "-E", "UTF8"]),
            check=True, capture_output=True, cwd="/",
        )
        self.start()
        for db in databases:
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "-d", "postgres", "-q",
                 "-c", f"create database {db}"],
                check=True, capture_output=True,
            )

    def start(self) -> None:
        self._ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")


def postgres_or_skip(*databases: str) -> Postgres:
    import pytest

    if not (PG_BIN / "initdb").exists() or shutil.which("psql") is None:
        pytest.skip("PostgreSQL is not installed (Debian's postgresql: .ci/run installs it with apt)")
    pg = Postgres()
    pg.init(*databases)
    return pg


@contextmanager
def team_server(pg: Postgres, home: Path, log: Path, port: int | None = None) -> Iterator[str]:
    """scripts/team_server.sh against `pg` (databases mlflow, mlflow_auth), its files in `home`; yields the URL."""
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "SSLFLOW_TEAM_DB": pg.uri("mlflow"),
        "SSLFLOW_TEAM_HOME": str(home),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    port = port or free_port()
    with log.open("a") as out:
        proc = subprocess.Popen(
            ["bash", str(repo / "scripts" / "team_server.sh"), "--workers", "1"],
            env={**env, "SSLFLOW_TEAM_PORT": str(port)}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/health", proc, 180)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


@contextmanager
def team_with_users(root: Path, users: dict[str, tuple[str, str]], models: list[str]) -> Iterator[str]:
    """A throwaway cluster and team server (files in `root`) with `users` = {name: (password, role)} granted their
    role on the experiment `sslflow` and `models` by the admin; yields the URL, stops both afterwards."""
    from sslflow.tracking.team import add_user, grant

    pg = postgres_or_skip("mlflow", "mlflow_auth")
    try:
        with team_server(pg, root / "home", root / "server.log") as url:
            os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN[0], MLFLOW_TRACKING_PASSWORD=ADMIN[1])
            try:
                for name, (password, role) in users.items():
                    add_user(url, name, password)
                    grant(url, name, role, "sslflow", models)
            finally:
                del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
            yield url
    finally:
        pg.stop()
