"""One writer per directory: a second run of a stage in the same workspace is refused, not interleaved.

The lock is an flock on a file holding the owner's pid. The kernel drops an flock when its process dies, so
a lock file left by a killed run is simply taken over; the pid is only there to name the owner. A forked child
(a DataLoader worker) would share the locked file and keep the lock for as long as it outlives a killed
parent, so every child closes its copies of the held descriptors as it starts.
"""

import fcntl
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslflow.errors import SslflowError

_held: set[int] = set()  # descriptors of the locks this process holds


def _close_inherited() -> None:
    for fd in _held:
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _read(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


@contextmanager
def exclusive(path: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock at `path` for the block. If another process holds it, wait up to `wait_s` seconds for it
    (0: not at all), then SslflowError naming the owner's pid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd) or "unknown"
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            waited = f"; waited {wait_s:g} s" if wait_s else ""
            raise SslflowError(
                f"{what} is already running in this workspace (pid {owner} holds {path}{waited}); "
                "wait for it to finish, or stop that process"
            ) from None
        try:  # the owner unlinks the file before unlocking: retry unless we locked the file now at `path`
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    stale = _read(fd)
    if stale:
        print(f"note: took over the lock {path} left by pid {stale}, which is no longer running", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held.add(fd)
    try:
        yield
    finally:
        if fd in _held:  # not so in a forked child: it closed its copy at the fork, and the lock is not its own
            _held.discard(fd)
            path.unlink(missing_ok=True)
            os.close(fd)
