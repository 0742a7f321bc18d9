"""The common raw form every fetch source is turned into, and the only code that reads or writes it.

    images.npy      uint8 (N, C, H, W), C in {1, 3}
    labels.npy      int64 (N,), values 0..K-1
    classes.json    K class names
    test_mask.npy   bool (N,), only when the source has an official test split
    manifest.json   provenance; its sha256 covers images.npy + labels.npy, written last
"""

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslflow.atomic import write_json, write_with
from sslflow.errors import SslflowError

MANIFEST_GIVEN = ("source", "inputs", "license", "skipped")
MANIFEST_OPTIONAL = ("class_names",)  # where the class names came from: "source", "params" or a names file


@dataclass(frozen=True)
class RawData:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]  # K names
    manifest: dict
    test_mask: np.ndarray | None = None  # (N,) bool


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
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise SslflowError(
            f"{name('classes', '.json')}: expected a non-empty list of distinct strings, got {classes!r}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        got = f"{labels.min()}..{labels.max()}"
        raise SslflowError(f"{name('labels')}: values must lie in 0..{len(classes) - 1}, got {got}")
    if test_mask is not None and (test_mask.dtype != np.bool_ or test_mask.shape != labels.shape):
        got = f"{test_mask.dtype} {test_mask.shape}"
        raise SslflowError(f"{name('test_mask')}: expected bool ({len(labels)},), got {got}")


def require_two_classes(labels: np.ndarray, classes: list[str], where: str, fix: str) -> None:
    """A classifier needs examples of at least two classes; with fewer, finetune and evaluate cannot run (and
    scikit-learn would say so only after pretraining). `where` names the data, `fix` says what to do."""
    counts = np.bincount(labels, minlength=len(classes))[: len(classes)]
    present = [f"'{name}' ({n})" for name, n in zip(classes, counts, strict=True) if n > 0]
    if len(present) < 2:
        found = f"only class {present[0]}" if present else "no class"
        raise SslflowError(f"{where}: {found} has examples; classification needs at least two classes: {fix}")


def write_raw(
    dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    manifest: dict,
    test_mask: np.ndarray | None = None,
) -> dict:
    """Validate, then write the raw form atomically file by file; returns the full manifest.

    `manifest` gives source, inputs, license and skipped (and maybe class_names); count, class_counts, shape,
    test_count and sha256 are derived here from the arrays, so they cannot disagree with them.
    """
    dir = Path(dir)
    missing = [k for k in MANIFEST_GIVEN if k not in manifest]
    if missing:
        raise SslflowError(f"manifest is missing {missing}")
    _check(images, labels, classes, test_mask, None)
    if len(labels) == 0:
        raise SslflowError("no images to write: the dataset is empty")
    fix = "add images of another class"
    if manifest["source"] == "imagefolder":
        fix += " (imagefolder: one subdirectory of fetch.path per class)"
    require_two_classes(labels, classes, f"fetch.source {manifest['source']!r}", fix)

    image_bytes, label_bytes = npy_bytes(images), npy_bytes(labels)
    counts = np.bincount(labels, minlength=len(classes))
    full = {
        **{k: manifest[k] for k in MANIFEST_GIVEN},
        **{k: manifest[k] for k in MANIFEST_OPTIONAL if k in manifest},
        "count": len(labels),
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "shape": list(images.shape[1:]),
        "test_count": None if test_mask is None else int(test_mask.sum()),
        "sha256": hashlib.sha256(image_bytes + label_bytes).hexdigest(),
    }
    mask_bytes = None if test_mask is None else npy_bytes(test_mask)

    write_npy(dir / "images.npy", image_bytes)
    write_npy(dir / "labels.npy", label_bytes)
    write_json(dir / "classes.json", list(classes))
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
    require_two_classes(labels, classes, str(dir / "labels.npy"), "rerun fetch on data with at least two classes")
    if (None if test_mask is None else int(test_mask.sum())) != manifest.get("test_count"):
        raise SslflowError(f"{mask_path}: disagrees with test_count in manifest.json; rerun fetch")
    return RawData(images, labels, classes, manifest, test_mask)
