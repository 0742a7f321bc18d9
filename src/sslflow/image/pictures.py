"""The pictures users look at, as PNGs: what a pretext task sees or rebuilds, a 2-D map of embeddings coloured by
class, and the label-efficiency curve. Everything here takes arrays and writes a file."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.manifold import TSNE

from sslflow.atomic import write_with
from sslflow.faults import disk_full_is_clear


def save(fig, path: Path) -> None:
    """Write the figure as a PNG atomically; a full disk is one DiskFull line and leaves no partial file."""
    try:
        fig.tight_layout()
        with disk_full_is_clear(path, f"the picture was not written (any earlier {Path(path).name} is intact)"):
            write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def image_rows(rows: dict[str, np.ndarray], path: Path, title: str) -> None:
    """One row per entry, e.g. originals above their reconstructions; each (n, C, H, W) in [-1, 1]."""
    n = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 0.95 * len(rows) + 0.4), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        pixels = (np.asarray(images, dtype=np.float32).clip(-1, 1) + 1) / 2  # back to [0, 1]
        for c in range(n):
            ax = axes[r, c]
            im = pixels[c].transpose(1, 2, 0)  # (H, W, C)
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    save(fig, path)


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `size` items, each class in proportion (at least one of each), drawn with `seed`."""
    if len(labels) <= size:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    take = np.maximum(1, np.floor(counts * size / len(labels)).astype(int))
    picked = [rng.choice(np.flatnonzero(labels == c), k, replace=False) for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def tsne(features: np.ndarray, seed: int) -> np.ndarray:
    """t-SNE (van der Maaten & Hinton, 2008) of (N, D) features to (N, 2), PCA-initialized so it is stable.

    500 iterations rather than sklearn's 1000: for a few thousand points the map has settled, at half the time.
    """
    perplexity = min(30.0, (len(features) - 1) / 3)
    tsne = TSNE(2, perplexity=perplexity, init="pca", max_iter=500, random_state=seed)
    return tsne.fit_transform(np.asarray(features, np.float32))


def embedding_map(points: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """A scatter of (N, 2) points coloured by class, e.g. t-SNE of test embeddings."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, name in enumerate(classes):
        at = labels == k
        ax.scatter(points[at, 0], points[at, 1], s=5, color=cmap(k % cmap.N), label=name, alpha=0.8, linewidths=0)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    save(fig, path)


def label_efficiency_curve(curves: dict[str, dict], baselines: set[str], path: Path, title: str) -> None:
    """Macro-F1 against labels per class (log axis), one line per variant; baselines dashed.

    curves: variant -> {"labels_per_class": [...], "budget": [...], "mean": [...], "std": [...]}, the error bars
    one std over draws; a budget "all" is drawn at its mean labels per class.
    """
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, c in curves.items():
        style = "--" if name in baselines else "-"
        ax.errorbar(
            c["labels_per_class"], c["mean"], yerr=c["std"], fmt=f"o{style}", ms=3, capsize=2, lw=1.2, label=name
        )
    ax.set_xscale("log")
    points = {x: b for c in curves.values() for x, b in zip(c["labels_per_class"], c["budget"], strict=True)}
    ticks = dict(sorted(points.items()))
    ax.set_xticks(list(ticks), [f"{x:g}" if str(b) == f"{x:g}" else f"{b}\n({x:.0f})" for x, b in ticks.items()])
    ax.minorticks_off()
    ax.set(xlabel="labels per class", ylabel="test macro-F1", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)
