"""pretrain: learn an encoder from the unlabeled pool (labels are never read) with `pretrain.method`.

    python stages/image/pretrain.py [--method M --out DIR]

By default it writes the pipeline's paths; the label-efficiency sweep passes a method and a directory that
gets everything instead (encoder/, pretrain.json, checkpoints/). Beside the encoder, pretext.png shows what the
method trains on (SimCLR's views) or rebuilds (reconstructions), on validation images (pool images when there is
no labeled val image, fetch.source none; the kNN monitor is skipped then).
"""

import argparse
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from sslflow import config, stage
from sslflow.artifacts import save_encoder
from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.image import methods, pictures
from sslflow.image.datasets import Images
from sslflow.image.embed import apply
from sslflow.image.monitor import knn_accuracy
from sslflow.image.npyrows import NpyRows
from sslflow.paths import Layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=get_args(config.Method), help="instead of pretrain.method")
    ap.add_argument("--out", type=Path, help="write every output under this directory")
    args = ap.parse_args()
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "pretrain", config.Pretrain)
    if args.method:
        cfg = cfg.model_copy(update={"method": args.method})  # before anything is logged: the logged method ran
    name, encoder_dir, summary_path, checkpoint_dir = (
        ("pretrain", layout.encoder, layout.reports / "pretrain.json", layout.checkpoints / "pretrain")
        if args.out is None
        else (f"sweep/pretrain-{cfg.method}", *(args.out / f for f in ("encoder", "pretrain.json", "checkpoints")))
    )
    runtime = stage.start(base)

    pool = NpyRows(layout.prepared / "pool_images.npy")  # (N, C, H, W) uint8, no labels, read row by row
    val_x = np.load(layout.prepared / "val_images.npy")
    val_y = np.load(layout.prepared / "val_labels.npy")
    method = methods.build(cfg, in_channels=pool.shape[1], size=tuple(pool.shape[-2:]))
    views_on_device = methods.on_device(cfg.augment_on, runtime.device)

    def make_step(model: torch.nn.Module):
        step = method.step(model)
        return methods.augmenting(step, method.batch_views) if views_on_device else step

    def monitor(model: torch.nn.Module) -> dict[str, float]:
        if len(val_y) == 0:  # no labeled image yet: nothing to score the embedding with
            return {}
        embeddings = apply(method.encoder(), val_x, runtime)
        return {"monitor/val_knn_acc": knn_accuracy(embeddings, val_y, cfg.knn_k, base.seed)}

    def save(summary: dict, tracker) -> None:
        save_encoder(method.encoder(), method.encoder_config, encoder_dir)
        write_json(summary_path, summary)
        shown, what = (val_x, "validation") if len(val_x) else (pool, "pool")
        picked = np.stack([shown[i] for i in np.linspace(0, len(shown) - 1, 8).astype(int)])  # across classes
        rows = method.show(torch.from_numpy(picked))
        title = f"{cfg.method}, {what} images"
        pictures.image_rows({k: v.numpy() for k, v in rows.items()}, encoder_dir / "pretext.png", title)
        tracker.log_artifact(encoder_dir, "encoder")

    summary = stage.pretrain(
        stage=name, run_name=f"image/pretrain {cfg.method}" if args.out is None else f"image/{name}",
        key="pretrain", cfg=cfg, base=base, runtime=runtime, model=runtime.prepare(method.model), make_step=make_step,
        data=Images(pool, methods.unchanged if views_on_device else method.views), unit="images", monitor=monitor,
        prepared=layout.prepared, checkpoint_dir=checkpoint_dir, save=save, outputs=(encoder_dir, summary_path),
        tags={"sslflow.augment_on": "device" if views_on_device else "loader"},
    )
    if summary is not None:
        knn = summary.get("monitor/val_knn_acc")
        scored = "no labeled val images: kNN monitor skipped" if knn is None else f"val kNN accuracy {knn:.3f}"
        print(f"pretrain ({cfg.method}): encoder -> {encoder_dir}, {scored}")


if __name__ == "__main__":
    run(main)
