"""Images without labels (fetch.unlabeled, fetch.source none): read, matched to the labeled images, written in the
raw form with label -1, and split by preprocess into the pool only (never a copy of a val or test image)."""

import gzip
import json
import re
import shutil

import mlflow
import numpy as np
import pytest
from conftest import env_for, make_project, run_stage
from PIL import Image

from sslflow.config import UnlabeledImages
from sslflow.errors import SslflowError
from sslflow.image.imagefiles import IDX_IMAGES_MAGIC
from sslflow.image.sources import load_imagefolder, load_sklearn_digits
from sslflow.image.unlabeled import resolve_unlabeled, to_channels, with_unlabeled
from sslflow.rawdata import read_raw, write_raw
from sslflow.splits import split_indices, split_items, write_prepared

RNG = np.random.default_rng(0)


def pixels(*shape) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def save(path, array, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt)


def write_idx_images(path, x, magic=IDX_IMAGES_MAGIC, gz=False):
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in x.shape) + x.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fetch_with(project, *entries, labeled=None, image_size=None, max_bad_files=0):
    """with_unlabeled on `entries` ((source, path relative to `project`) pairs), resolved as the fetch stage does."""
    sources = resolve_unlabeled([UnlabeledImages(source=s, path=p) for s, p in entries], project)
    return with_unlabeled(labeled, sources, image_size=image_size, max_bad_files=max_bad_files)


# --- reading each kind of source ---


def test_folder_is_read_recursively_without_class_folders(tmp_path):
    a, c = pixels(6, 5), pixels(6, 5)
    save(tmp_path / "extra" / "a.png", a)
    save(tmp_path / "extra" / "sub" / "b.jpg", np.full((6, 5), 90, np.uint8), "JPEG")
    save(tmp_path / "extra" / "sub" / "deeper" / "c.png", c)
    save(tmp_path / "extra" / ".cache" / "hidden.png", pixels(6, 5))  # hidden directory: left out
    (tmp_path / "extra" / "notes.txt").write_text("not an image")

    data = fetch_with(tmp_path, ("folder", "extra"))

    assert data.images.shape == (3, 1, 6, 5) and data.images.dtype == np.uint8
    assert data.ids == ["extra/a.png", "extra/sub/b.jpg", "extra/sub/deeper/c.png"]
    folder = (tmp_path / "extra").resolve()
    assert data.paths == [str(folder / "a.png"), str(folder / "sub" / "b.jpg"), str(folder / "sub/deeper/c.png")]
    np.testing.assert_array_equal(data.labels, [-1, -1, -1])
    assert data.labels.dtype == np.int64 and data.classes == [] and data.test_mask is None
    np.testing.assert_array_equal(data.images[0, 0], a)  # PNG is lossless
    np.testing.assert_array_equal(data.images[2, 0], c)
    assert abs(int(data.images[1].mean()) - 90) <= 2  # JPEG nearly
    (info,) = data.unlabeled
    assert info["source"] == "folder" and info["path"] == str(folder) and info["count"] == 3
    assert info["skipped"] == [] and len(info["sha256"]) == 64


@pytest.mark.parametrize("gz", [False, True])
def test_idx_images_file_after_a_labeled_source(tmp_path, gz):
    x = pixels(5, 8, 8)
    name = "extra-images-idx3-ubyte" + (".gz" if gz else "")
    write_idx_images(tmp_path / name, x, gz=gz)
    digits = load_sklearn_digits()

    data = fetch_with(tmp_path, ("idx", name), labeled=digits)

    n = len(digits.labels)
    assert data.images.shape == (n + 5, 1, 8, 8)
    np.testing.assert_array_equal(data.images[:n], digits.images)  # the labeled part unchanged
    np.testing.assert_array_equal(data.labels[:n], digits.labels)
    assert data.classes == digits.classes and data.inputs == digits.inputs
    np.testing.assert_array_equal(data.images[n:, 0], x)
    np.testing.assert_array_equal(data.labels[n:], [-1] * 5)
    assert data.ids[:2] == ["sklearn-digits#0", "sklearn-digits#1"]
    assert data.ids[n:] == [f"extra-images-idx3-ubyte#{i}" for i in range(5)]
    assert data.paths == [None] * (n + 5)
    assert data.unlabeled[0]["count"] == 5 and data.unlabeled[0]["source"] == "idx"


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npy_layouts(tmp_path, layout):
    nchw = pixels(4, 1, 6, 5) if layout == "NHW" else pixels(4, 3, 6, 5)
    stored = {"NHW": nchw[:, 0], "NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw}[layout]
    np.save(tmp_path / "more.npy", np.ascontiguousarray(stored))

    data = fetch_with(tmp_path, ("npy", "more.npy"))

    np.testing.assert_array_equal(data.images, nchw)
    assert data.ids == [f"more.npy#{i}" for i in range(4)] and data.paths == [None] * 4
    np.testing.assert_array_equal(data.labels, [-1] * 4)


def test_unlabeled_images_take_the_labeled_images_channels(tmp_path):
    for label in ("cat", "dog"):
        for i in range(2):
            save(tmp_path / "pets" / label / f"{i}.png", pixels(6, 5, 3))
    gray = pixels(6, 5)
    save(tmp_path / "extra" / "g.png", gray)
    np.save(tmp_path / "gray.npy", pixels(2, 6, 5))
    labeled = load_imagefolder((tmp_path / "pets").resolve(), image_size=None, max_bad_files=0)

    data = fetch_with(tmp_path, ("folder", "extra"), ("npy", "gray.npy"), labeled=labeled)

    assert data.images.shape == (4 + 1 + 2, 3, 6, 5)
    np.testing.assert_array_equal(data.images[:4], labeled.images)
    np.testing.assert_array_equal(data.labels[:4], labeled.labels)
    assert data.ids[:4] == labeled.ids and data.paths[:4] == labeled.paths
    assert data.ids[4:] == ["extra/g.png", "gray.npy#0", "gray.npy#1"]
    for c in range(3):  # gray repeated into RGB
        np.testing.assert_array_equal(data.images[4, c], gray)


def test_rgb_arrays_become_gray_as_pil_converts_them():
    rgb = pixels(3, 3, 7, 6)  # (n, C, H, W)
    pil = [np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L")) for img in rgb]
    np.testing.assert_array_equal(to_channels(rgb, 1)[:, 0], np.stack(pil))


def test_folder_images_are_resized_to_image_size(tmp_path):
    for i in range(2):
        save(tmp_path / "big" / f"{i}.png", pixels(10, 12))
    digits = load_sklearn_digits()
    data = fetch_with(tmp_path, ("folder", "big"), labeled=digits, image_size=(8, 8))
    assert data.images.shape == (len(digits.labels) + 2, 1, 8, 8)
    with pytest.raises(SslflowError, match=r"0\.png: image size 10x12 differs from the labeled images' 8x8"):
        fetch_with(tmp_path, ("folder", "big"), labeled=digits)


def test_unreadable_files_are_skipped_within_max_bad_files(tmp_path):
    save(tmp_path / "extra" / "ok.png", pixels(4, 4))
    (tmp_path / "extra" / "sub").mkdir()
    (tmp_path / "extra" / "sub" / "broken.png").write_bytes(b"\x89PNG not really")
    data = fetch_with(tmp_path, ("folder", "extra"), max_bad_files=1)
    assert data.ids == ["extra/ok.png"] and data.unlabeled[0]["skipped"] == ["sub/broken.png"]


# --- bad input: one error line naming the file ---


def unreadable(tmp_path):
    save(tmp_path / "extra" / "ok.png", pixels(4, 4))
    (tmp_path / "extra" / "broken.png").write_bytes(b"\x89PNG not really")
    return [("folder", "extra")], None, [tmp_path / "extra" / "broken.png", "fetch.max_bad_files=0"]


def truncated_idx(tmp_path, gz=False):
    name = "x-idx3-ubyte" + (".gz" if gz else "")
    path = write_idx_images(tmp_path / name, pixels(5, 4, 4), gz=gz)
    path.write_bytes(path.read_bytes()[: 30 if gz else -7])
    return [("idx", name)], None, [path, "cannot read" if gz else "[5, 4, 4] need 80 bytes of data, found 73"]


def empty_folder(tmp_path):
    save(tmp_path / "extra" / ".hidden" / "a.png", pixels(4, 4))
    (tmp_path / "extra" / "notes.txt").write_text("x")
    return [("folder", "extra")], None, [tmp_path / "extra", "fetch.unlabeled[0].path", "no PNG/JPEG"]


def same_id_as_labeled(tmp_path):
    for label in ("a", "b"):
        save(tmp_path / "imgs" / label / "0.png", pixels(4, 4))
    save(tmp_path / "more" / "imgs" / "a" / "0.png", pixels(4, 4))
    labeled = load_imagefolder((tmp_path / "imgs").resolve(), image_size=None, max_bad_files=0)
    found = ["'imgs/a/0.png'", f"fetch.source ({tmp_path / 'imgs'})", f"fetch.unlabeled[0] (folder {tmp_path / 'more'}"]
    return [("folder", "more/imgs")], labeled, found


def npy(tmp_path, array, name="x.npy"):
    np.save(tmp_path / name, array)
    return ("npy", name)


def not_npy(tmp_path):
    (tmp_path / "x.npy").write_text("hello")
    return ("npy", "x.npy")


def idx(tmp_path, magic):
    write_idx_images(tmp_path / "x-idx3-ubyte", pixels(2, 4, 4), magic=magic)
    return ("idx", "x-idx3-ubyte")


BAD = {  # case: tmp_path -> (fetch.unlabeled entries, labeled source, what the one error line says)
    "unreadable image": unreadable,
    "wrong IDX magic": lambda t: ([idx(t, 0x801)], None, [t / "x-idx3-ubyte", "0x00000801"]),
    "truncated IDX": truncated_idx,
    "truncated IDX gz": lambda t: truncated_idx(t, gz=True),
    "npy float dtype": lambda t: ([npy(t, np.zeros((2, 4, 4), np.float32))], None, [t / "x.npy", "float32"]),
    "npy bad shape": lambda t: ([npy(t, np.zeros((2, 5, 4, 4), np.uint8))], None, [t / "x.npy", "(2, 5, 4, 4)"]),
    "not npy": lambda t: ([not_npy(t)], None, [t / "x.npy", "not a readable .npy"]),
    "size mismatch": lambda t: (
        [npy(t, np.zeros((2, 10, 10), np.uint8))], load_sklearn_digits(), [t / "x.npy", "10x10", "8x8"]
    ),
    "size mismatch between unlabeled": lambda t: (
        [npy(t, np.zeros((2, 4, 4), np.uint8), "a.npy"), npy(t, np.zeros((2, 5, 4), np.uint8), "b.npy")], None,
        [t / "b.npy", "5x4", "4x4", "fetch.unlabeled[0]"],
    ),
    "empty folder": empty_folder,
    "listed twice": lambda t: (
        [npy(t, np.zeros((2, 4, 4), np.uint8))] * 2, None,
        ["'x.npy#0'", "fetch.unlabeled[0] (npy", "fetch.unlabeled[1] (npy", t / "x.npy"],
    ),
    "same id as labeled": same_id_as_labeled,
    "missing file": lambda t: ([("npy", "no.npy")], None, ["fetch.unlabeled[0].path: file not found", t / "no.npy"]),
    "climbs out": lambda t: ([("folder", "../elsewhere")], None, ["fetch.unlabeled[0].path", "'..'"]),
    "nothing at all": lambda t: ([], None, ["fetch.source is 'none'", "fetch.unlabeled is empty"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_naming_the_file(tmp_path, case):
    tmp_path = tmp_path.resolve()
    entries, labeled, expected = BAD[case](tmp_path)
    with pytest.raises(SslflowError) as info:
        fetch_with(tmp_path, *entries, labeled=labeled)
    message = str(info.value)
    assert "\n" not in message
    for text in expected:
        assert str(text) in message, message


# --- the raw form ---

MANIFEST = {"inputs": [], "license": "user-supplied", "skipped": []}


def test_raw_form_keeps_ids_paths_and_unlabeled_provenance(tmp_path):
    save(tmp_path / "extra" / "a.png", pixels(8, 8))
    np.save(tmp_path / "x.npy", pixels(2, 8, 8))
    digits = load_sklearn_digits()
    data = fetch_with(tmp_path, ("folder", "extra"), ("npy", "x.npy"), labeled=digits)
    manifest = {**MANIFEST, "source": "sklearn-digits", "unlabeled": data.unlabeled}

    written = write_raw(tmp_path / "raw", data.images, data.labels, data.classes, manifest, ids=data.ids,
                        paths=data.paths)
    raw = read_raw(tmp_path / "raw")

    n = len(digits.labels)
    assert raw.ids == data.ids and raw.paths == [None] * n + [str((tmp_path / "extra/a.png").resolve()), None, None]
    np.testing.assert_array_equal(raw.labels, data.labels)
    assert written["count"] == n + 3 and written["labeled_count"] == n and written["unlabeled_count"] == 3
    assert sum(written["class_counts"].values()) == n
    assert [(u["source"], u["count"]) for u in written["unlabeled"]] == [("folder", 1), ("npy", 2)]
    assert all(set(u) == {"source", "path", "sha256", "count", "skipped"} for u in written["unlabeled"])
    assert json.loads((tmp_path / "raw" / "ids.json").read_text()) == data.ids


def test_raw_form_without_a_labeled_source(tmp_path):
    images, labels = pixels(3, 1, 4, 4), np.full(3, -1, np.int64)
    written = write_raw(tmp_path, images, labels, [], {**MANIFEST, "source": "none"}, ids=["a", "b", "c"])
    assert written["labeled_count"] == 0 and written["class_counts"] == {}
    raw = read_raw(tmp_path)
    assert raw.classes == [] and raw.ids == ["a", "b", "c"] and raw.paths == [None] * 3


def test_raw_form_refuses_repeated_ids_and_one_labeled_class(tmp_path):
    images, labels = pixels(4, 1, 4, 4), np.array([0, 1, -1, -1])
    manifest = {**MANIFEST, "source": "sklearn-digits"}
    with pytest.raises(SslflowError, match="item id 'x' is given more than once"):
        write_raw(tmp_path, images, labels, ["a", "b"], manifest, ids=["x", "y", "z", "x"])
    with pytest.raises(SslflowError, match="only class 'a'"):  # unlabeled images are no second class
        write_raw(tmp_path, images, np.array([0, 0, -1, -1]), ["a", "b"], manifest)
    assert list(tmp_path.iterdir()) == []


# --- preprocess: the labeled splits as before, unlabeled images in the pool only ---


def toy_raw(unlabeled: int = 0):
    """60 distinct labeled images (3 classes) and `unlabeled` fresh ones after them; ids "toy#<row>"."""
    n = 60 + unlabeled
    images = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, axis=2)  # (n, 1, 4, 1): image i is i
    labels = np.concatenate([np.arange(60) % 3, np.full(unlabeled, -1)]).astype(np.int64)
    return images, labels, [f"toy#{i}" for i in range(n)]


SPLIT = {"test_fraction": 0.2, "val_fraction": 0.25, "seed": 0}


def test_labeled_items_split_as_without_unlabeled_ones():
    images, labels, _ = toy_raw(unlabeled=7)
    alone = split_indices(labels[:60], ["a", "b", "c"], **SPLIT)
    with_extra = split_items(images, labels, ["a", "b", "c"], **SPLIT)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(with_extra, split), getattr(alone, split))
    np.testing.assert_array_equal(with_extra.unlabeled, np.arange(60, 67))


def test_copies_of_val_and_test_images_leave_the_pool(tmp_path):
    images, labels, ids = toy_raw(unlabeled=2)
    s = split_items(images, labels, ["a", "b", "c"], **SPLIT)
    copies = [s.test[0], s.val[0], s.train[0]]  # unlabeled copies of a test, a val and a train image
    images = np.concatenate([images, images[copies]])
    labels = np.concatenate([labels, np.full(3, -1)])
    ids = ids + ["copy-test", "copy-val", "copy-train"]
    paths = [None] * 60 + ["/a.png", None, "/b.png", None, "/c.png"]

    s = split_items(images, labels, ["a", "b", "c"], **SPLIT)
    info = write_prepared(tmp_path, images, labels, ["a", "b", "c"], s, ids=ids, paths=paths)

    np.testing.assert_array_equal(s.duplicates, [62, 63])
    np.testing.assert_array_equal(s.unlabeled, [60, 61, 64])
    counts = info["counts"]
    assert counts["unlabeled"] == 3 and counts["unlabeled_duplicates"] == 2
    assert counts["pool"] == counts["train"] + counts["val"] + 3
    arrays = {name: np.load(tmp_path / f"{name}_images.npy") for name in ("train", "val", "test", "pool")}
    kept = images[[60, 61, 64]]
    np.testing.assert_array_equal(arrays["pool"], np.concatenate([arrays["train"], arrays["val"], kept]))
    listed = json.loads((tmp_path / "ids.json").read_text())
    assert list(listed) == ["train", "val", "test", "pool"]
    assert listed["pool"] == listed["train"] + listed["val"] + ["toy#60", "toy#61", "copy-train"]
    row = {item: i for i, item in enumerate(ids)}
    for name, array in arrays.items():  # each id names the image at its place
        np.testing.assert_array_equal(images[[row[item] for item in listed[name]]], array)
    assert json.loads((tmp_path / "paths.json").read_text())["pool"][-3:] == ["/a.png", None, "/c.png"]
    assert {"ids.json", "paths.json"} <= set(info["sha256"])


def test_no_labeled_source_gives_empty_splits_and_a_pool_of_everything(tmp_path):
    images = pixels(5, 3, 4, 4)
    labels = np.full(5, -1, np.int64)
    ids = [f"x.npy#{i}" for i in range(5)]
    s = split_items(images, labels, [], **SPLIT)
    info = write_prepared(tmp_path, images, labels, [], s, ids=ids, paths=[None] * 5)
    for split in ("train", "val", "test"):
        x, y = np.load(tmp_path / f"{split}_images.npy"), np.load(tmp_path / f"{split}_labels.npy")
        assert x.shape == (0, 3, 4, 4) and x.dtype == np.uint8 and y.shape == (0,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.load(tmp_path / "pool_images.npy"), images)
    assert json.loads((tmp_path / "ids.json").read_text())["pool"] == ids
    assert info["counts"] == {"train": 0, "val": 0, "test": 0, "pool": 5, "unlabeled": 5, "unlabeled_duplicates": 0}


# --- the stages, as the pipeline runs them ---


def test_stages_with_only_an_unlabeled_folder(tmp_path, empty_store):
    """fetch.source none + a folder of PNGs: fetch, preprocess and pretrain run; the pool is every image."""
    project = make_project(tmp_path / "project", {
        "fetch": {"source": "none", "class_names": ["cat", "dog"],
                  "unlabeled": [{"source": "folder", "path": "photos"}]},
        "pretrain": {"batch_size": 4, "max_steps": 2},
    })
    shutil.copy(empty_store, project / "mlflow.db")
    for i in range(12):
        save(project / "photos" / ("indoor" if i % 2 else "outdoor") / f"{i:02d}.png", pixels(8, 8))

    fetched = run_stage(project, "fetch")
    prepared = run_stage(project, "preprocess")
    pretrained = run_stage(project, "pretrain")

    raw = project / "data" / "raw"
    manifest = json.loads((raw / "manifest.json").read_text())
    assert manifest["source"] == "none" and manifest["count"] == 12 and manifest["labeled_count"] == 0
    assert manifest["unlabeled_count"] == 12 and manifest["unlabeled"][0]["count"] == 12
    assert json.loads((raw / "classes.json").read_text()) == ["cat", "dog"]
    ids = json.loads((raw / "ids.json").read_text())
    assert ids[:2] == ["photos/indoor/01.png", "photos/indoor/03.png"] and len(set(ids)) == 12
    assert json.loads((raw / "paths.json").read_text())[0] == str((project / "photos/indoor/01.png").resolve())
    assert "12 images 1x8x8 (0 labeled, 12 unlabeled)" in fetched.stdout

    out = project / "data" / "prepared"
    assert np.load(out / "train_images.npy").shape == (0, 1, 8, 8)
    np.testing.assert_array_equal(np.load(out / "pool_images.npy"), np.load(raw / "images.npy"))
    assert json.loads((out / "ids.json").read_text())["pool"] == ids
    counts = json.loads((out / "split.json").read_text())["counts"]
    assert counts["unlabeled"] == 12 and counts["pool"] == 12 and "unlabeled 12 (0 dropped" in prepared.stdout

    assert "no labeled val images: kNN monitor skipped" in pretrained.stdout
    summary = json.loads((project / "reports" / "pretrain.json").read_text())
    assert "monitor/val_knn_acc" not in summary and (project / "models" / "encoder" / "pretext.png").is_file()

    client = mlflow.MlflowClient(env_for(project)["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.sslflow.stage = 'fetch'")
    assert run.data.tags["sslflow.unlabeled.0.sha256"] == manifest["unlabeled"][0]["sha256"]
    assert run.data.metrics["unlabeled_count"] == 12 and run.data.metrics["labeled_count"] == 0


def test_fetch_stage_names_a_bad_unlabeled_file(tmp_path):
    project = make_project(tmp_path / "project", {"fetch": {"unlabeled": [{"source": "npy", "path": "x.npy"}]}})
    np.save(project / "x.npy", np.zeros((2, 8, 8), np.float64))
    proc = run_stage(project, "fetch", check=False)
    assert proc.returncode == 2
    assert re.fullmatch(rf"error: {re.escape(str((project / 'x.npy').resolve()))}: .*float64\n", proc.stderr)
