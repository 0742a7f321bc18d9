"""One writer per directory: a second run of a stage in the same workspace is refused, not interleaved.

The lock is a POSIX record lock (lockf) on a file holding the owner's pid. The kernel drops it when the owning
process dies, so a lock file left by a killed run is simply taken over; the pid is only there to name the owner.
Unlike an flock, a record lock is not shared with forked children: a DataLoader worker that outlives its killed
parent for a few seconds does not keep the workspace locked. Record locks do not exclude within one process, so
the paths this process holds are also kept in `_held`.
"""

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslflow.errors import SslflowError

_held: set[Path] = set()


def _refuse(what: str, path: Path, owner: str) -> SslflowError:
    return SslflowError(
        f"{what} is already running in this workspace (pid {owner} holds {path}); wait for it to finish, or stop that process"
    )


def _read(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at `path` for the block; SslflowError naming the owner's pid if another process holds it."""
    path = Path(path)
    key = path.resolve()
    if key in _held:  # closing a second descriptor of the file would drop this process's record lock
        raise _refuse(what, path, str(os.getpid()))
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EAGAIN or EACCES, depending on the platform
            owner = _read(fd) or "unknown"
            os.close(fd)
            raise _refuse(what, path, owner) from None
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
    _held.add(key)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        _held.discard(key)
        os.close(fd)
