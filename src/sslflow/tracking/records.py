"""Who owns a stage's MLflow run, and how a run ends when its process cannot end it: SIGTERM ends it KILLED, and
the next run of the stage marks KILLED a run whose process is gone (SIGKILL, the OOM killer)."""

import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslflow.faults import Interrupted

# Who runs a stage's MLflow run: the next run of the stage closes (KILLED) a RUNNING one whose process is gone.
HOST, PID, PID_START = "sslflow.host", "sslflow.pid", "sslflow.pid_start"


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, /proc/<pid>/stat field 22), so that a reused pid is
    not taken for the process that owned a run; "" where /proc is not there, or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_tags() -> dict[str, str]:
    """The tags that name this process as the owner of a run."""
    return {HOST: socket.gethostname(), PID: str(os.getpid()), PID_START: _started(os.getpid())}


def _owner_is_gone(tags: dict[str, str]) -> bool:
    """True only when the run's owner ran on this host and no longer runs (a run from another host, or from a
    version of sslflow that did not record its owner, is left alone)."""
    if tags.get(HOST) != socket.gethostname() or not tags.get(PID, "").isdigit():
        return False
    pid = int(tags[PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = _started(pid)
    return bool(tags.get(PID_START)) and bool(started) and started != tags[PID_START]  # the pid was reused


def close_orphaned_runs(client, experiment_id: str, stage: str, keep: str | None = None) -> list[str]:
    """Mark KILLED the runs of `stage` still RUNNING whose process is gone (killed with SIGKILL, or by the OOM
    killer: nothing could end them); returns their ids. `keep`: a run id to leave alone (this stage's own)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`sslflow.stage` = '{stage}' and attributes.status = 'RUNNING'"
    )
    closed = []
    for run in found:
        if run.info.run_id != keep and _owner_is_gone(run.data.tags):
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed


@contextmanager
def sigterm_ends_the_run() -> Iterator[None]:
    """While a run is open, SIGTERM (default action: die at once, leaving the run RUNNING) raises Interrupted,
    so the run ends KILLED and the process exits 143. A handler already installed (the training loop's
    stop_on_signals, which installs its own inside) is kept."""
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handle(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        raise Interrupted(signum)

    signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
