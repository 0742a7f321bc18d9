import numpy as np
import pytest

from sslflow.errors import SslflowError
from sslflow.splits import data_hash, draw_budget, split_indices, write_prepared

CLASSES = ["a", "b", "c"]


def toy(counts=(40, 30, 20)):
    """Labels (N,) with counts[k] examples of class k; image n is filled with n % 256 to track it."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    images = (np.arange(len(labels)) % 256).astype(np.uint8)[:, None, None, None].repeat(4, axis=2)
    return images, labels  # images: (N, 1, 4, 1)


def split(labels, seed=0, test_mask=None):
    return split_indices(
        labels, CLASSES, test_fraction=0.2, val_fraction=0.25, seed=seed, test_mask=test_mask
    )


def test_split_is_deterministic_disjoint_and_complete():
    _, labels = toy()
    s1, s2, s3 = split(labels), split(labels), split(labels, seed=1)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    assert not np.array_equal(s1.test, s3.test)
    together = np.concatenate([s1.train, s1.val, s1.test])
    assert len(together) == len(labels) and len(np.unique(together)) == len(labels)


def test_split_is_stratified():
    _, labels = toy()
    s = split(labels)
    np.testing.assert_array_equal(np.bincount(labels[s.test]), [8, 6, 4])  # 20% of 40/30/20
    np.testing.assert_array_equal(np.bincount(labels[s.val]), [8, 6, 4])  # 25% of the remaining 32/24/16
    np.testing.assert_array_equal(np.bincount(labels[s.train]), [24, 18, 12])


def test_official_test_mask_is_the_test_split():
    _, labels = toy()
    mask = np.zeros(len(labels), bool)
    mask[[0, 1, 40, 41, 70, 71]] = True
    s = split(labels, test_mask=mask)
    np.testing.assert_array_equal(s.test, np.flatnonzero(mask))
    assert not set(s.train) & set(s.test) and not set(s.val) & set(s.test)


def test_split_errors_name_the_problem():
    with pytest.raises(SslflowError, match="empty"):
        split(np.zeros(0, np.int64))
    _, labels = toy((40, 30, 2))
    with pytest.raises(SslflowError, match="class 'c' has only 2 examples"):
        split(labels)
    _, labels = toy()
    mask = np.isin(np.arange(len(labels)), [0, 40])  # class 'c' has no official test examples
    with pytest.raises(SslflowError, match="class 'c' has no examples in the test split"):
        split(labels, test_mask=mask)


def write(tmp_path, images, labels, s):
    ids = [f"toy#{i}" for i in range(len(labels))]
    return write_prepared(tmp_path, images, labels, CLASSES, s, ids=ids, paths=[None] * len(labels))


def test_write_prepared_pool_and_hashes(tmp_path):
    images, labels = toy()
    s = split(labels)
    info = write(tmp_path, images, labels, s)
    train = np.load(tmp_path / "train_images.npy")
    val = np.load(tmp_path / "val_images.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "pool_images.npy"), np.concatenate([train, val]))
    np.testing.assert_array_equal(np.load(tmp_path / "test_labels.npy"), labels[s.test])
    assert not (tmp_path / "pool_labels.npy").exists()
    assert info["counts"] == {"train": 54, "val": 18, "test": 18, "pool": 72, "unlabeled": 0, "unlabeled_duplicates": 0}
    assert info["class_counts"]["test"] == {"a": 8, "b": 6, "c": 4}
    hashed = [*tmp_path.glob("*.npy"), tmp_path / "ids.json", tmp_path / "paths.json"]
    assert sorted(info["sha256"]) == sorted(p.name for p in hashed)
    assert data_hash(tmp_path) == info["data_hash"]
    for seed, same in ((0, True), (1, False)):
        again = write(tmp_path, images, labels, split(labels, seed))
        assert (again["data_hash"] == info["data_hash"]) == same


def test_data_hash_missing(tmp_path):
    with pytest.raises(SslflowError, match="split.json not found"):
        data_hash(tmp_path)


def test_budget_per_class_counts_and_determinism():
    _, labels = toy()
    idx = draw_budget(labels, labels_per_class=5, label_fraction=None, seed=3)
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [5, 5, 5])
    np.testing.assert_array_equal(idx, draw_budget(labels, labels_per_class=5, label_fraction=None, seed=3))
    bigger = draw_budget(labels, labels_per_class=10, label_fraction=None, seed=3)
    assert set(idx) <= set(bigger)  # growing the budget only adds labels


def test_budget_label_fraction():
    _, labels = toy((40, 30, 3))
    idx = draw_budget(labels, labels_per_class=None, label_fraction=0.1, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [4, 3, 1])  # at least one per class


def test_budget_too_large():
    _, labels = toy((40, 30, 20))
    message = "finetune.labels_per_class=25 exceeds the 20 training examples of class 'c'"
    with pytest.raises(SslflowError, match=message):
        draw_budget(labels, labels_per_class=25, label_fraction=None, seed=0, classes=CLASSES)
    with pytest.raises(SslflowError, match="class '2'"):
        draw_budget(labels, labels_per_class=25, label_fraction=None, seed=0)
