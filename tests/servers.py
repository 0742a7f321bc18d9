"""A server process for tests (mlflow ui, mlflow models serve) on a free port of 127.0.0.1, stopped afterwards."""

import os
import signal
import socket
import subprocess
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
