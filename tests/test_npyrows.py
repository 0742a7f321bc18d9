"""NpyRows reads the rows np.load would give, in every process, and refuses files it cannot read row by row."""

import io
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sslflow.errors import SslflowError
from sslflow.image.datasets import Images
from sslflow.image.npyrows import NpyRows


@pytest.mark.parametrize(
    "array",
    [
        np.arange(5 * 1 * 4 * 3, dtype=np.uint8).reshape(5, 1, 4, 3),
        np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32),
        np.arange(4, dtype=np.int64),  # one axis: a row is a scalar
    ],
)
def test_rows_equal_np_load(tmp_path, array):
    np.save(tmp_path / "a.npy", array)
    rows = NpyRows(tmp_path / "a.npy")
    assert len(rows) == len(array) and rows.shape == array.shape
    for i in range(-len(array), len(array)):
        assert np.array_equal(rows[i], array[i]) and rows[i].dtype == array.dtype
    with pytest.raises(IndexError):
        rows[len(array)]


def test_a_header_of_format_2_is_read(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    with open(tmp_path / "v2.npy", "wb") as f:
        np.lib.format.write_array(f, array, version=(2, 0))
    assert np.array_equal(NpyRows(tmp_path / "v2.npy")[2], array[2])


def test_loader_workers_and_pickled_copies_read_through_their_own_descriptor(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, size=(12, 1, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "pool.npy", images)
    rows = NpyRows(tmp_path / "pool.npy")
    rows[0]  # the parent has a descriptor open before the workers start
    loader = DataLoader(Images(rows, lambda x: x), batch_size=4, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), torch.from_numpy(images))
    copy = pickle.loads(pickle.dumps(rows))
    assert copy._fd is None and np.array_equal(copy[5], images[5])


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"not numpy at all"), "not a .npy file"),
        (lambda p: np.save(p, np.asfortranarray(np.ones((3, 4)))), "C-order"),
        (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "plain values"),
        (lambda p: p.write_bytes(_npy_bytes(np.ones((10, 10)))[:-8]), "truncated"),
    ],
)
def test_unreadable_files_are_refused_with_their_path(tmp_path, write, message):
    path = tmp_path / "bad.npy"
    write(path)
    with pytest.raises(SslflowError, match=message) as err:
        NpyRows(path)
    assert str(path) in str(err.value)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
