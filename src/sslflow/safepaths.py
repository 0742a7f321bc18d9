"""Paths that come from params or from files (manifests, user folders), checked before anything is read.

params.yaml is the user's own: a path there may be absolute (data kept outside the project, e.g. /data/mnist),
but a relative one may not climb out of the project with `..`. A path read from a file, or a file found in a
user's folder, is data: it must stay inside its root, also after following symlinks.
"""

from pathlib import Path

from sslflow.errors import SslflowError


def param_dir(value: str, key: str, project: Path) -> Path:
    """The directory a params key names, resolved; relative to `project` and inside it unless absolute."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        if ".." in path.parts:
            raise SslflowError(
                f"{key}: {value!r} climbs out of the project with '..'; give an absolute path for data kept elsewhere"
            )
        path = project / path
    resolved = path.resolve()
    if not resolved.is_dir():
        raise SslflowError(f"{key}: directory not found: {resolved}")
    return resolved


def inside(root: Path, path: str | Path, what: str) -> Path:
    """`path` (relative to `root`, or already joined to it) resolved, refused unless it stays inside `root`."""
    root = Path(root).resolve()
    given = Path(path)
    if (given.is_absolute() and not given.is_relative_to(root)) or ".." in given.parts:
        raise SslflowError(f"{what}: {str(path)!r} is not a path inside {root} (absolute, or with '..')")
    resolved = (root / given).resolve()
    if not resolved.is_relative_to(root):
        raise SslflowError(f"{what}: {str(path)!r} leads outside {root} through a symbolic link")
    return resolved
