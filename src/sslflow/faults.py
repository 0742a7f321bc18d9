"""Faults a training run must survive or report clearly: stop signals, non-finite losses, a full disk."""

import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sslflow.errors import SslflowError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
PARENT_POLL_S = 0.5
_watched_parent: list[int] = []  # the ancestor pid watch_parent watches in this process, once
SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}  # what DVC may run a stage's cmd in
MAX_SHELLS = 3  # shells looked through between a stage and its starter
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class Interrupted(SystemExit):
    """Raised at a step boundary once the checkpoint is saved; the process exits 128 + the signal number
    (143 for SIGTERM, 130 for SIGINT), as a shell reports a process killed by that signal."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class NonFiniteLoss(SslflowError):
    """The loss stayed NaN or infinite for the allowed number of consecutive steps."""


class DiskFull(SslflowError):
    """A write ran out of space; the file it would have replaced is untouched."""


@dataclass
class StopRequest:
    signum: int | None = None  # the stop signal received, if any


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM and SIGINT only set `request.signum`, so the training loop can save at
    the next step boundary; a second signal of the same kind stops the process at once."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield request
        return

    def handle(signum, frame):
        request.signum = signum
        signal.signal(signum, signal.SIG_DFL)
        name = signal.Signals(signum).name
        print(
            f"\n{name}: saving a checkpoint at the next step boundary (send {name} again to stop now)", file=sys.stderr
        )

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _parent_of(pid: int) -> int | None:
    """The parent pid of `pid` from /proc, None when it is gone (or a zombie) or /proc cannot tell."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state in ("Z", "X") else int(ppid)


def _is_shell(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() in SHELLS
    except OSError:
        return False


def _chain() -> list[tuple[int, int]]:
    """(pid, parent pid) links from this process up to its first ancestor that is not a shell.

    DVC runs a stage as `$SHELL -c cmd`: bash replaces itself with the command, but dash (`/bin/sh`, used when
    SHELL is unset) stays in between, and when `dvc repro` dies that shell is the one reparented, not us."""
    links = [(os.getpid(), os.getppid())]
    while links[-1][1] > 1 and len(links) <= MAX_SHELLS and _is_shell(links[-1][1]):
        shell = links[-1][1]
        parent = _parent_of(shell)
        if parent is None:
            break
        links.append((shell, parent))
    return links


def watch_parent(poll_s: float = PARENT_POLL_S) -> None:
    """Stop this process as on SIGTERM when the process that started it dies.

    `dvc repro` killed with SIGTERM does not pass the signal on: its stage would run on as an orphan holding
    DVC's lock. A daemon thread notices within `poll_s` that a link from this process up to the first non-shell
    ancestor (`dvc repro`, through the `sh -c` DVC may leave in between) has changed, and sends this process
    SIGTERM, so the training loop saves a checkpoint at the next step boundary (stop_on_signals) and an open
    MLflow run ends KILLED. Idempotent; does nothing when this process is already an orphan."""
    if _watched_parent or os.getppid() == 1:
        return
    links = _chain()
    _watched_parent.append(links[-1][1])

    def intact() -> bool:
        return os.getppid() == links[0][1] and all(_parent_of(pid) == parent for pid, parent in links[1:])

    def watch() -> None:
        while intact():
            time.sleep(poll_s)
        print(f"\nthe parent process (pid {links[-1][1]}) is gone: stopping as on SIGTERM", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sslflow-watch-parent", daemon=True).start()


@contextmanager
def disk_full_is_clear(path: Path, kept: str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT while writing `path` into one DiskFull line that says what was kept (`kept`)."""
    try:
        yield
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        raise DiskFull(f"no space left on the device while writing {path}; {kept}. Free space and rerun") from None
