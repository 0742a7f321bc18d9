"""The common raw form every fetch source is turned into, and the only code that reads or writes it.

    images.npy      uint8 (N, C, H, W), C in {1, 3}
    labels.npy      int64 (N,), values 0..K-1, or -1 for an unlabeled image (fetch.unlabeled)
    classes.json    K class names (K may be 0 when fetch.source is none: no labeled image yet)
    ids.json        N distinct item ids: "<name>#<row>" for arrays, "<folder name>/<relative path>" for files
    paths.json      N absolute file paths of file-based items, null for rows of arrays
    test_mask.npy   bool (N,), only when the source has an official test split
    manifest.json   provenance; its sha256 covers images.npy + labels.npy, written last
"""

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sslflow.atomic import write_json, write_with
from sslflow.errors import SslflowError

MANIFEST_GIVEN = ("source", "inputs", "license", "skipped")
MANIFEST_OPTIONAL = ("class_names",)  # where the class names came from: "source", "params" or a names file
UNLABELED = -1  # the label of an image without one
NO_LABELED_SOURCE = "none"  # fetch.source: every image is unlabeled, classes come later from people's labels


@dataclass(frozen=True)
class RawData:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]  # K names
    manifest: dict
    test_mask: np.ndarray | None = None  # (N,) bool
    ids: list[str] = field(default_factory=list)  # N distinct item ids
    paths: list[str | None] = field(default_factory=list)  # N file paths, None for rows of arrays


def npy_bytes(array: np.ndarray) -> bytes:
    """Exactly what np.save writes, so a hash of these bytes is the hash of the file."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_npy(path: Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def _check(images, labels, classes, test_mask, dir: Path | None) -> None:
    """Raise SslflowError if the arrays break the raw form, naming the file in `dir` (or the argument)."""

    def name(stem: str, ext: str = ".npy") -> str:
        return str(dir / f"{stem}{ext}") if dir else stem

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        got = f"{images.dtype} {images.shape}"
        raise SslflowError(f"{name('images')}: expected uint8 (N, C, H, W) with C 1 or 3, got {got}")
    if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
        got = f"{labels.dtype} {labels.shape}"
        raise SslflowError(f"{name('labels')}: expected int64 ({len(images)},), got {got}")
    if not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise SslflowError(f"{name('classes', '.json')}: expected a list of distinct strings, got {classes!r}")
    if len(labels) and (labels.min() < UNLABELED or labels.max() >= len(classes)):
        got = f"{labels.min()}..{labels.max()}"
        raise SslflowError(
            f"{name('labels')}: values must lie in 0..{len(classes) - 1} or be {UNLABELED} (unlabeled), got {got}"
        )
    if test_mask is not None and (test_mask.dtype != np.bool_ or test_mask.shape != labels.shape):
        got = f"{test_mask.dtype} {test_mask.shape}"
        raise SslflowError(f"{name('test_mask')}: expected bool ({len(labels)},), got {got}")


def _check_items(ids, paths, n: int, dir: Path | None) -> None:
    """ids: n distinct strings; paths: n strings or None."""
    where = (lambda f: str(dir / f)) if dir else (lambda f: f.removesuffix(".json"))
    if not (isinstance(ids, list) and len(ids) == n and all(isinstance(i, str) for i in ids)):
        raise SslflowError(f"{where('ids.json')}: expected a list of {n} item ids (strings)")
    if len(set(ids)) != n:
        repeated = next(i for i, count in Counter(ids).items() if count > 1)
        raise SslflowError(f"{where('ids.json')}: item id {repeated!r} is given more than once")
    if not (isinstance(paths, list) and len(paths) == n and all(p is None or isinstance(p, str) for p in paths)):
        raise SslflowError(f"{where('paths.json')}: expected a list of {n} file paths or nulls")


def labeled_part(labels: np.ndarray) -> np.ndarray:
    """The labels of the labeled items (those not UNLABELED), in order."""
    return labels[labels != UNLABELED]


def require_two_classes(labels: np.ndarray, classes: list[str], where: str, fix: str) -> None:
    """A classifier needs examples of at least two classes; with fewer, finetune and evaluate cannot run (and
    scikit-learn would say so only after pretraining). `where` names the data, `fix` says what to do."""
    counts = np.bincount(labels, minlength=len(classes))[: len(classes)]
    present = [f"'{name}' ({n})" for name, n in zip(classes, counts, strict=True) if n > 0]
    if len(present) < 2:
        found = f"only class {present[0]}" if present else "no class"
        raise SslflowError(f"{where}: {found} has examples; classification needs at least two classes: {fix}")


def _full_manifest(given: dict, shape: tuple, labels: np.ndarray, classes: list[str], test_mask) -> dict:
    """`given` with what the arrays say (all but sha256)."""
    labeled = labeled_part(labels)
    counts = np.bincount(labeled, minlength=len(classes))
    return {
        **{k: given[k] for k in MANIFEST_GIVEN},
        **{k: given[k] for k in MANIFEST_OPTIONAL if k in given},
        "count": len(labels),
        "labeled_count": len(labeled),
        "unlabeled_count": len(labels) - len(labeled),
        "unlabeled": list(given.get("unlabeled", [])),
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "shape": list(shape[1:]),
        "test_count": None if test_mask is None else int(test_mask.sum()),
    }


def write_raw(
    dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    manifest: dict,
    test_mask: np.ndarray | None = None,
    *,
    ids: list[str] | None = None,
    paths: list[str | None] | None = None,
) -> dict:
    """Validate, then write the raw form atomically file by file; returns the full manifest.

    `manifest` gives source, inputs, license and skipped (and maybe class_names and unlabeled: one entry per
    fetch.unlabeled source); count, labeled_count, unlabeled_count, class_counts (of the labeled items), shape,
    test_count and sha256 are derived here from the arrays, so they cannot disagree with them. `ids` default to
    "<source>#<row>", `paths` to null.
    """
    dir = Path(dir)
    missing = [k for k in MANIFEST_GIVEN if k not in manifest]
    if missing:
        raise SslflowError(f"manifest is missing {missing}")
    ids = [f"{manifest['source']}#{row}" for row in range(len(labels))] if ids is None else list(ids)
    paths = [None] * len(labels) if paths is None else list(paths)
    _check(images, labels, classes, test_mask, None)
    _check_items(ids, paths, len(labels), None)
    if len(labels) == 0:
        raise SslflowError("no images to write: the dataset is empty")
    if manifest["source"] != NO_LABELED_SOURCE:
        fix = "add images of another class"
        if manifest["source"] == "imagefolder":
            fix += " (imagefolder: one subdirectory of fetch.path per class)"
        require_two_classes(labeled_part(labels), classes, f"fetch.source {manifest['source']!r}", fix)

    image_bytes, label_bytes = npy_bytes(images), npy_bytes(labels)
    full = _full_manifest(manifest, images.shape, labels, classes, test_mask)
    full["sha256"] = hashlib.sha256(image_bytes + label_bytes).hexdigest()
    mask_bytes = None if test_mask is None else npy_bytes(test_mask)

    write_npy(dir / "images.npy", image_bytes)
    write_npy(dir / "labels.npy", label_bytes)
    write_json(dir / "classes.json", list(classes))
    write_json(dir / "ids.json", ids)
    write_json(dir / "paths.json", paths)
    if mask_bytes is None:
        (dir / "test_mask.npy").unlink(missing_ok=True)  # a mask left by an earlier source would be wrong
    else:
        write_npy(dir / "test_mask.npy", mask_bytes)
    write_json(dir / "manifest.json", full)
    return full


def _load_npy(path: Path) -> tuple[np.ndarray, bytes]:
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the fetch stage first")
    data = path.read_bytes()
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), data
    except (ValueError, OSError, EOFError) as err:
        raise SslflowError(f"{path}: not a readable .npy file ({err})") from None


def _load_json(path: Path):
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the fetch stage first")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise SslflowError(f"{path}: not valid JSON ({err})") from None


def read_raw(dir: Path) -> RawData:
    """Load and check the raw form; any missing, torn or malformed file is an SslflowError naming it."""
    dir = Path(dir)
    manifest = _load_json(dir / "manifest.json")
    images, image_bytes = _load_npy(dir / "images.npy")
    labels, label_bytes = _load_npy(dir / "labels.npy")
    classes = _load_json(dir / "classes.json")
    mask_path = dir / "test_mask.npy"
    test_mask = _load_npy(mask_path)[0] if mask_path.is_file() else None

    if not isinstance(classes, list):
        raise SslflowError(f"{dir / 'classes.json'}: expected a list of class names")
    _check(images, labels, classes, test_mask, dir)
    if hashlib.sha256(image_bytes + label_bytes).hexdigest() != manifest.get("sha256"):
        raise SslflowError(
            f"{dir / 'manifest.json'}: sha256 does not match images.npy + labels.npy; rerun fetch"
        )
    if manifest.get("source") != NO_LABELED_SOURCE:
        fix = "rerun fetch on data with at least two classes"
        require_two_classes(labeled_part(labels), classes, str(dir / "labels.npy"), fix)
    if (None if test_mask is None else int(test_mask.sum())) != manifest.get("test_count"):
        raise SslflowError(f"{mask_path}: disagrees with test_count in manifest.json; rerun fetch")
    ids, paths = _load_json(dir / "ids.json"), _load_json(dir / "paths.json")
    _check_items(ids, paths, len(labels), dir)
    return RawData(images, labels, classes, manifest, test_mask, ids, paths)
