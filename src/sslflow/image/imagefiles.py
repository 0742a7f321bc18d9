"""Images read from files and arrays, for the labeled sources (sslflow.image.sources) and the unlabeled ones
(sslflow.image.unlabeled): IDX files, PNG/JPEG files, image arrays in any of three layouts, their item ids and
hashes. Every problem is one SslflowError naming the file.
"""

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from sslflow.errors import SslflowError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (N, H, W)
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (N,)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
GRAY_MODES = {"1", "L", "LA"}


def row_ids(name: str, n: int) -> list[str]:
    return [f"{name}#{row}" for row in range(n)]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file (maybe gzipped): big-endian uint32 magic, one uint32 per dim, then the bytes."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise SslflowError(f"cannot read {path}: {err}") from None
    if len(data) < 4:
        raise SslflowError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise SslflowError(f"{path}: wrong IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SslflowError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        found = len(data) - header
        raise SslflowError(f"{path}: header dims {dims} need {expected} bytes of data, found {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_sha256(root: Path, files: list[Path]) -> str:
    """One hash over the relative names and bytes of all files, so the manifest stays short."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _open_image(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("L" if img.mode in GRAY_MODES else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def read_image_files(
    files: list[Path], *, image_size: tuple[int, int] | None, max_bad_files: int
) -> tuple[list[Image.Image], list[int], list[Path]]:
    """Open PNG/JPEG `files`, resized to `image_size` (height, width) when set, else all of one size. Returns
    the images (mode L or RGB), the positions in `files` of those read, and the unreadable files (skipped; more
    than `max_bad_files` of them is an error)."""
    images, read, bad = [], [], []
    first: tuple[Path, tuple[int, int]] | None = None  # the file that fixes the size when image_size is unset
    for i, f in enumerate(files):
        img = _open_image(f)
        if img is None:
            bad.append(f)
            continue
        if image_size is not None:
            img = img.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
        elif first is None:
            first = (f, img.size)
        elif img.size != first[1]:
            raise SslflowError(
                f"image size differs: {f} is {img.size[1]}x{img.size[0]} but {first[0]} is "
                f"{first[1][1]}x{first[1][0]} (HxW); set fetch.image_size to resize"
            )
        images.append(img)
        read.append(i)
    if len(bad) > max_bad_files:
        raise SslflowError(
            f"{len(bad)} unreadable image files (first: {bad[0]}) exceed fetch.max_bad_files={max_bad_files}"
        )
    return images, read, bad


def common_mode(images: list[Image.Image]) -> str:
    """Mixed grayscale and colour: RGB, so all images share C."""
    return "RGB" if any(img.mode == "RGB" for img in images) else "L"


def stack_images(images: list[Image.Image], mode: str) -> np.ndarray:
    """uint8 (N, C, H, W) of `images` converted to `mode` (L: C = 1, RGB: C = 3)."""
    arrays = np.stack([np.asarray(img.convert(mode)) for img in images])  # (N, H, W) or (N, H, W, 3)
    return np.ascontiguousarray(arrays.transpose(0, 3, 1, 2) if mode == "RGB" else arrays[:, None], np.uint8)


def file_ids(folder: Path, files: list[Path]) -> list[str]:
    """Per file: "<folder name>/<path relative to the folder>"."""
    return [f"{folder.name}/{f.relative_to(folder).as_posix()}" for f in files]


def to_nchw(data: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, as (N, C, H, W); `where` names the array."""
    if data.ndim == 3:  # (N, H, W), MNIST-like
        return data[:, None]
    if data.ndim == 4 and data.shape[-1] in (1, 3):  # (N, H, W, C), CIFAR-like
        return data.transpose(0, 3, 1, 2)
    if data.ndim == 4 and data.shape[1] in (1, 3):  # (N, C, H, W), SVHN-like
        return data
    raise SslflowError(
        f"{where}: unsupported image array shape {data.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W) "
        "with C 1 or 3"
    )
