"""The proposed images as people see them: a captioned PNG grid to look through, and one PNG per image for
Label Studio's data URIs."""

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from sslflow.image.pictures import save


def _hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 to what PIL and imshow take: (H, W) for one channel, else (H, W, C)."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def contact_sheet(path: Path, images: np.ndarray, captions: list[str], columns: int = 10) -> None:
    """A grid of (n, C, H, W) uint8 images, `columns` wide, each with its caption (e.g. id and suggestion) below."""
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 0.2, 1.45 * rows + 0.2), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        ax.imshow(_hwc(images[i]), cmap="gray", vmin=0, vmax=255)
        ax.set_xlabel(captions[i], fontsize=6)
    save(fig, path)


def png_bytes(image: np.ndarray) -> bytes:
    """One (C, H, W) uint8 image as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_hwc(image))).save(buffer, format="PNG")
    return buffer.getvalue()
