"""Seeded, stratified train/val/test splits of the raw form, and the labelled budget drawn from train.

The test split is fixed (the source's official one when it has one) and never seen by training. Only labeled
items are split; unlabeled ones (label -1) go to the pretraining pool unless their bytes equal a val or test
image. The pool is train + val + those unlabeled images, without labels; the budget is drawn later, inside
finetune, so changing it does not rerun preprocess.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from sslflow.atomic import write_json, write_with
from sslflow.errors import SslflowError
from sslflow.rawdata import UNLABELED, npy_bytes

SPLITS = ("train", "val", "test")


def _no_index() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(frozen=True)
class Splits:
    """Sorted indices into the raw arrays; all five are disjoint and cover every example."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    unlabeled: np.ndarray = field(default_factory=_no_index)  # unlabeled items kept for the pool
    duplicates: np.ndarray = field(default_factory=_no_index)  # unlabeled items equal to a val or test image


def _stratified(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int, key: str):
    try:
        rest, held = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels[indices]
        )
    except ValueError as err:
        raise SslflowError(f"cannot stratify with {key}={fraction}: {err}") from None
    return np.sort(rest), np.sort(held)


def split_indices(
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    test_mask: np.ndarray | None = None,
) -> Splits:
    """Test = `test_fraction` (or the `test_mask` rows), val = `val_fraction` of the rest, train the rest."""
    if len(labels) == 0:
        raise SslflowError("the dataset is empty: nothing to split")
    all_idx = np.arange(len(labels))
    if test_mask is None:
        counts = np.bincount(labels, minlength=len(classes))
        for name, n in zip(classes, counts, strict=True):
            if n < 3:
                raise SslflowError(
                    f"class '{name}' has only {n} examples; "
                    "a stratified train/val/test split needs at least 3"
                )
        rest, test = _stratified(all_idx, labels, test_fraction, seed, "preprocess.test_fraction")
    else:
        rest, test = all_idx[~test_mask], all_idx[test_mask]
        counts = np.bincount(labels[rest], minlength=len(classes))
        for name, n in zip(classes, counts, strict=True):
            if n < 2:
                raise SslflowError(
                    f"class '{name}' has only {n} examples outside the official test split; "
                    "a stratified train/val split needs at least 2"
                )
    train, val = _stratified(rest, labels, val_fraction, seed, "preprocess.val_fraction")

    splits = Splits(train=train, val=val, test=test)
    for split in SPLITS:
        present = np.bincount(labels[getattr(splits, split)], minlength=len(classes))
        for name, n in zip(classes, present, strict=True):
            if n == 0:
                raise SslflowError(
                    f"class '{name}' has no examples in the {split} split; "
                    "add examples or change preprocess.test_fraction / preprocess.val_fraction"
                )
    return splits


def split_items(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    test_mask: np.ndarray | None = None,
) -> Splits:
    """The labeled items (label >= 0) split by split_indices, exactly as if they were all there is (none: three
    empty splits); the unlabeled ones kept for the pool unless their bytes equal a val or test image, so no
    evaluation image is pretrained on. images: (N, C, H, W), labels: (N,) with -1 = unlabeled."""
    labeled = np.flatnonzero(labels != UNLABELED)
    if len(labeled):
        within = split_indices(
            labels[labeled], classes, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
            test_mask=None if test_mask is None else test_mask[labeled],
        )
        train, val, test = labeled[within.train], labeled[within.val], labeled[within.test]
    else:
        train, val, test = _no_index(), _no_index(), _no_index()
    unlabeled = np.flatnonzero(labels == UNLABELED)
    held_out = {_digest(images[i]) for i in np.concatenate([val, test])}
    copied = np.array([_digest(images[i]) in held_out for i in unlabeled], bool)
    return Splits(train, val, test, unlabeled=unlabeled[~copied], duplicates=unlabeled[copied])


def _digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()


def _class_counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    return dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist(), strict=True))


def write_prepared(
    dir: Path,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    splits: Splits,
    *,
    ids: Sequence[str],
    paths: Sequence[str | None],
) -> dict:
    """Write the split arrays, the unlabelled pool (train + val + kept unlabeled images), their item ids and
    paths (ids.json, paths.json: {split: [...]} with pool too), classes.json, then split.json."""
    dir = Path(dir)
    arrays = {}
    for split in SPLITS:
        idx = getattr(splits, split)
        arrays[f"{split}_images.npy"] = images[idx]  # (n, C, H, W) uint8
        arrays[f"{split}_labels.npy"] = labels[idx]  # (n,) int64
    pool = np.concatenate([splits.train, splits.val, splits.unlabeled])
    arrays["pool_images.npy"] = images[pool]

    parts = {split: getattr(splits, split) for split in SPLITS} | {"pool": pool}
    files = {name: npy_bytes(array) for name, array in arrays.items()}
    for name, per_item in (("ids.json", ids), ("paths.json", paths)):
        listed = {part: [per_item[i] for i in idx] for part, idx in parts.items()}
        files[name] = (json.dumps(listed, indent=2) + "\n").encode()

    hashes = {}
    all_files = hashlib.sha256()
    for name in sorted(files):
        hashes[name] = hashlib.sha256(files[name]).hexdigest()
        # Names go into the hash too, so moving bytes between files changes it.
        all_files.update(name.encode() + b"\0" + files[name])
        write_with(dir / name, lambda tmp, data=files[name]: tmp.write_bytes(data))
    write_json(dir / "classes.json", list(classes))

    info = {
        "counts": {split: len(getattr(splits, split)) for split in SPLITS}
        | {"pool": len(pool), "unlabeled": len(splits.unlabeled), "unlabeled_duplicates": len(splits.duplicates)},
        "class_counts": {split: _class_counts(labels[getattr(splits, split)], classes) for split in SPLITS},
        "sha256": hashes,
        "data_hash": all_files.hexdigest(),
    }
    write_json(dir / "split.json", info)
    return info


def data_hash(dir: Path) -> str:
    """The prepared data's hash from split.json, for tagging tracking runs."""
    path = Path(dir) / "split.json"
    if not path.is_file():
        raise SslflowError(f"{path} not found; run the preprocess stage first")
    try:
        return json.loads(path.read_text())["data_hash"]
    except (ValueError, KeyError, TypeError) as err:
        raise SslflowError(f"{path}: no readable data_hash ({err})") from None


def draw_budget(
    labels: np.ndarray,
    *,
    labels_per_class: int | None,
    label_fraction: float | None,
    seed: int,
    classes: Sequence[str] | None = None,
) -> np.ndarray:
    """Sorted indices into `labels` (the train split): `labels_per_class` per class, or
    round(`label_fraction` * class count), at least 1. `classes` only names classes in errors.

    Each class is shuffled once per seed and its first n are taken, so a larger budget is a superset.
    """
    if (labels_per_class is None) == (label_fraction is None):
        raise SslflowError("set exactly one of finetune.labels_per_class and finetune.label_fraction")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        name = classes[c] if classes is not None else str(c)
        if labels_per_class is not None:
            n = labels_per_class
            if n > len(idx):
                raise SslflowError(
                    f"finetune.labels_per_class={n} exceeds the {len(idx)} training examples "
                    f"of class '{name}'"
                )
        else:
            n = max(1, round(label_fraction * len(idx)))
        chosen.append(rng.permutation(idx)[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
