"""pretrain: learn an encoder from the unlabeled pool (labels are never read) with `pretrain.method`.

    python stages/image/pretrain.py [--method M --out DIR]

By default it writes the pipeline's paths; the label-efficiency sweep passes a method and a directory that
gets everything instead (encoder/, pretrain.json, checkpoints/). Beside the encoder, pretext.png shows what the
method trains on (SimCLR's views) or rebuilds (reconstructions), on validation images.
"""

import argparse
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from sslflow import config, distributed, methods, pictures
from sslflow.artifacts import save_encoder
from sslflow.atomic import write_json
from sslflow.checkpoint import Checkpoints, fingerprint
from sslflow.cli import run, warn
from sslflow.datasets import Images
from sslflow.embed import apply
from sslflow.monitor import knn_accuracy
from sslflow.npyrows import NpyRows
from sslflow.optim import build_optimizer, build_schedule, schedule_warning
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.sampling import resumable_loader
from sslflow.splits import data_hash
from sslflow.tracking import stage_run
from sslflow.train import fit


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
        else (f"sweep/pretrain-{cfg.method}", args.out / "encoder", args.out / "pretrain.json", args.out / "checkpoints")
    )  # fmt: skip
    runtime = resolve(base)
    distributed.init(runtime.device, base.nproc_per_node)  # under torchrun: one process per device
    seed_everything(base.seed)

    pool = NpyRows(layout.prepared / "pool_images.npy")  # (N, C, H, W) uint8, no labels, read row by row
    val_x = np.load(layout.prepared / "val_images.npy")
    val_y = np.load(layout.prepared / "val_labels.npy")
    method = methods.build(cfg, in_channels=pool.shape[1], size=tuple(pool.shape[-2:]))
    model = runtime.prepare(method.model)

    batch = distributed.per_rank(cfg.batch_size, "pretrain.batch_size")
    views_on_device = methods.on_device(cfg.augment_on, runtime.device)
    transform = methods.unchanged if views_on_device else method.views
    loader = resumable_loader(Images(pool, transform), batch_size=batch, seed=base.seed, runtime=runtime)
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    # The schedule ends where training does: after `epochs`, or at `max_steps` if that comes first.
    total = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    scheduler = build_schedule(optimizer, cfg.optim, total, len(loader))
    warn(schedule_warning(cfg.optim, total, len(loader), "pretrain.optim"))
    step = method.step(torch.compile(model) if runtime.compile else model)
    if views_on_device:
        step = methods.augmenting(step, method.batch_views)

    def monitor(epoch: int) -> dict[str, float]:
        if not distributed.is_main():  # only rank 0 reports
            return {}
        return {"monitor/val_knn_acc": knn_accuracy(apply(method.encoder(), val_x, runtime), val_y, cfg.knn_k, base.seed)}

    world = distributed.world_size()
    tags = {
        "sslflow.data_hash": data_hash(layout.prepared),
        "sslflow.world_size": str(world),  # in the fingerprint too: a position mid-epoch depends on it
        "sslflow.batch_per_rank": str(batch),
        "sslflow.augment_on": "device" if views_on_device else "loader",
    }
    # A checkpoint is resumed only if made with the same settings and data; the `train` knobs may change.
    made_with = fingerprint(base.seed, base.device, base.precision, cfg.model_dump(exclude={"train"}), tags)
    checkpoints = Checkpoints(
        checkpoint_dir, every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints, fingerprint=made_with
    )  # fmt: skip
    if distributed.is_main():
        print(f"pretrain: {world} rank(s) x {batch} images = global batch {cfg.batch_size}")
    with distributed.on_main(checkpoints) as saving, distributed.on_main(stage_run(
        name, experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess", tags=tags,
        resume_run_id=checkpoints.latest.run_id if checkpoints.latest else None,
        resume_step=checkpoints.latest.step if checkpoints.latest else None,
    ), distributed.Silent()) as tracker:  # fmt: skip
        checkpoints.run_id = tracker.run_id
        summary = fit(
            model=model, step=step, loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
            runtime=runtime, log=tracker.log, on_epoch_end=monitor, max_steps=cfg.max_steps, prefix="pretrain",
            checkpoints=saving, max_nonfinite=cfg.train.max_nonfinite_steps,
        )  # fmt: skip
        if not distributed.is_main():  # rank 0 writes the outputs
            return
        save_encoder(method.encoder(), method.encoder_config, encoder_dir)
        write_json(summary_path, summary)
        rows = method.show(torch.from_numpy(val_x[np.linspace(0, len(val_x) - 1, 8).astype(int)]))  # across classes
        pictures.image_rows({k: v.numpy() for k, v in rows.items()}, encoder_dir / "pretext.png", f"{cfg.method}, validation images")
        tracker.log_artifact(encoder_dir, "encoder")
    print(f"pretrain ({cfg.method}): encoder -> {encoder_dir}, val kNN accuracy {summary['monitor/val_knn_acc']:.3f}")


if __name__ == "__main__":
    run(main)
