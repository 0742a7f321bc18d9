"""Images without labels (`fetch.unlabeled`): a folder of PNG/JPEG files, an IDX images file or a .npy array,
made to match the labeled images (channels, size) and appended after them with label -1 (sslflow.rawdata).

With no labeled source (`fetch.source: none`) the first unlabeled source fixes the channels and size instead.
Every problem is one SslflowError naming the file.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sslflow.errors import SslflowError
from sslflow.image.imagefiles import (
    IDX_IMAGES_MAGIC,
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
from sslflow.image.sources import USER_LICENSE, Fetched
from sslflow.rawdata import UNLABELED
from sslflow.safepaths import inside, param_dir


@dataclass(frozen=True)
class UnlabeledSource:
    """One `fetch.unlabeled` entry, its path resolved."""

    source: str  # folder | idx | npy
    path: Path  # a directory for folder, a file for idx and npy
    key: str  # how errors name the entry: "fetch.unlabeled[i]"

    def __str__(self) -> str:
        return f"{self.key} ({self.source} {self.path})"


@dataclass(frozen=True)
class Part:
    """The images one source gave, already in the channels of the labeled images."""

    images: np.ndarray  # (n, C, H, W) uint8
    ids: list[str]
    paths: list[str | None]
    first: Path  # the file a size mismatch names
    info: dict  # its manifest entry: source, path, sha256, count, skipped


def _param_file(value: str, key: str, project: Path) -> Path:
    """A file a params key names, resolved by safepaths.param_dir's rule: relative to `project`, without '..'."""
    path = Path(value).expanduser()
    if not path.is_absolute() and ".." in path.parts:
        raise SslflowError(
            f"{key}: {value!r} climbs out of the project with '..'; give an absolute path for data kept elsewhere"
        )
    resolved = (project / path).resolve()
    if not resolved.is_file():
        raise SslflowError(f"{key}: file not found: {resolved}")
    return resolved


def resolve_unlabeled(entries: Sequence, project: Path) -> list[UnlabeledSource]:
    """The `fetch.unlabeled` entries (each with .source and .path) with their paths resolved and checked, so a
    wrong path fails before anything is read or downloaded."""
    resolved = []
    for i, entry in enumerate(entries):
        key = f"fetch.unlabeled[{i}]"
        find = param_dir if entry.source == "folder" else _param_file
        resolved.append(UnlabeledSource(entry.source, find(entry.path, f"{key}.path", project), key))
    return resolved


def _image_files(folder: Path) -> list[Path]:
    """PNG/JPEG files anywhere under `folder`, hidden files and directories left out, in a fixed order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # os.walk descends in this order
        found += [
            Path(dirpath) / f
            for f in sorted(filenames)
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    return found


def read_folder(src: UnlabeledSource, *, mode: str | None, image_size, max_bad_files: int) -> Part:
    """Every PNG/JPEG under the folder, no class folders needed; `mode` (L or RGB) is the labeled images'
    (None: gray stays gray, mixed becomes RGB); `image_size` (height, width) resizes as for imagefolder."""
    folder = src.path
    listed = _image_files(folder)
    if not listed:
        raise SslflowError(f"{src.key}.path: {folder} has no PNG/JPEG images (hidden directories are skipped)")
    files = [inside(folder, f.relative_to(folder), f"{src.key}.path") for f in listed]  # no symlink out of it
    images, read, bad = read_image_files(files, image_size=image_size, max_bad_files=max_bad_files)
    if not images:
        raise SslflowError(f"{src.key}.path: {folder} has no readable PNG/JPEG images (first unreadable: {bad[0]})")
    info = {"source": "folder", "path": str(folder), "sha256": folder_sha256(folder, files), "count": len(read),
            "skipped": [f.relative_to(folder).as_posix() for f in bad]}
    return Part(
        images=stack_images(images, mode or common_mode(images)),
        ids=file_ids(folder, [listed[i] for i in read]),
        paths=[str(files[i]) for i in read],
        first=files[read[0]],
        info=info,
    )


def read_idx_images(src: UnlabeledSource) -> Part:
    """An IDX images file (magic 0x803, maybe gzipped) without its labels; ids "<file name without .gz>#<row>"."""
    x = read_idx(src.path, IDX_IMAGES_MAGIC)  # (n, H, W)
    return _array_part(src, x[:, None], src.path.name.removesuffix(".gz"))


def read_npy_images(src: UnlabeledSource) -> Part:
    """A uint8 .npy array (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3; ids "<file name>#<row>"."""
    try:
        data = np.load(src.path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SslflowError(f"{src.path}: not a readable .npy file ({err})") from None
    if not isinstance(data, np.ndarray):  # an .npz archive
        raise SslflowError(f"{src.path}: not a .npy array (an .npz archive?); save one array with np.save")
    if data.dtype != np.uint8:
        raise SslflowError(f"{src.path}: expected uint8 images (0..255), got dtype {data.dtype}")
    return _array_part(src, to_nchw(data, str(src.path)), src.path.name)


def _array_part(src: UnlabeledSource, images: np.ndarray, name: str) -> Part:
    if len(images) == 0:
        raise SslflowError(f"{src.path}: holds no images")
    info = {"source": src.source, "path": str(src.path), "sha256": file_sha256(src.path), "count": len(images),
            "skipped": []}
    return Part(np.ascontiguousarray(images), row_ids(name, len(images)), [None] * len(images), src.path, info)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (n, C, H, W) as (n, `channels`, H, W): gray repeated into RGB, or RGB to gray with PIL's
    ITU-R 601-2 luma in its integer form, so an array converts as a PNG of it would."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=1)
    rgb = images.astype(np.uint32)
    luma = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16  # (n, H, W)
    return luma.astype(np.uint8)[:, None]


def read_unlabeled(src: UnlabeledSource, *, channels: int | None, image_size, max_bad_files: int) -> Part:
    """One source's images in `channels` (None: as read; a mixed folder becomes RGB)."""
    if src.source == "folder":
        mode = None if channels is None else ("L" if channels == 1 else "RGB")
        return read_folder(src, mode=mode, image_size=image_size, max_bad_files=max_bad_files)
    part = read_idx_images(src) if src.source == "idx" else read_npy_images(src)
    return part if channels is None else replace(part, images=to_channels(part.images, channels))


def _check_size(part: Part, shape: tuple[int, ...], against: str) -> None:
    (h, w), (want_h, want_w) = part.images.shape[2:], shape[1:]
    if (h, w) != (want_h, want_w):
        raise SslflowError(
            f"{part.first}: image size {h}x{w} differs from {against} {want_h}x{want_w} (HxW); "
            "set fetch.image_size to resize folder images, or resize the array"
        )


def _check_distinct_ids(named: list[tuple[str, list[str]]]) -> None:
    """One error naming both sources when two give the same item id."""
    owner: dict[str, str] = {}
    for source, ids in named:
        for item in ids:
            if item in owner:
                raise SslflowError(
                    f"item id {item!r} is given by both {owner[item]} and {source}; every image needs its own id "
                    "(rename a folder or file, or list each source once)"
                )
            owner[item] = source


def with_unlabeled(
    labeled: Fetched | None, sources: Sequence[UnlabeledSource], *, image_size, max_bad_files: int
) -> Fetched:
    """`labeled` (None: fetch.source none, no class yet) followed by the images of `sources` with label -1,
    in the labeled images' channels and size (without labeled images, the first source's)."""
    if labeled is None and not sources:
        raise SslflowError(
            "fetch.source is 'none' and fetch.unlabeled is empty: no images to fetch; "
            "list folders, IDX or .npy files under fetch.unlabeled"
        )
    if not sources:
        return labeled
    shape = None if labeled is None else labeled.images.shape[1:]  # (C, H, W)
    against = "the labeled images'" if labeled is not None else f"{sources[0]}'s"
    parts = []
    for src in sources:
        channels = None if shape is None else shape[0]
        part = read_unlabeled(src, channels=channels, image_size=image_size, max_bad_files=max_bad_files)
        shape = shape or part.images.shape[1:]
        _check_size(part, shape, against)
        parts.append(part)

    no_labels = Fetched(np.zeros((0, *shape), np.uint8), np.zeros(0, np.int64), [], [], USER_LICENSE)
    head = no_labels if labeled is None else labeled
    where = f"fetch.source ({head.inputs[0]['path']})" if head.inputs else "fetch.source"
    _check_distinct_ids([(where, head.ids), *((str(s), p.ids) for s, p in zip(sources, parts, strict=True))])
    n = sum(len(p.images) for p in parts)
    return replace(
        head,
        images=np.concatenate([head.images, *(p.images for p in parts)]),
        labels=np.concatenate([head.labels, np.full(n, UNLABELED, np.int64)]),
        test_mask=None if head.test_mask is None else np.concatenate([head.test_mask, np.zeros(n, bool)]),
        ids=head.ids + [i for p in parts for i in p.ids],
        paths=(head.paths or [None] * len(head.labels)) + [q for p in parts for q in p.paths],
        unlabeled=[p.info for p in parts],
    )
