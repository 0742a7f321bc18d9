"""pretrain: learn an encoder from the unlabeled pool (labels are never read) with SimCLR."""

import numpy as np
import torch

from sslflow import config
from sslflow.artifacts import save_encoder
from sslflow.atomic import write_json
from sslflow.checkpoint import Checkpoints, fingerprint
from sslflow.cli import run
from sslflow.datasets import Images
from sslflow.embed import apply
from sslflow.encoders import EncoderConfig, build_encoder
from sslflow.monitor import knn_accuracy
from sslflow.optim import build_optimizer, build_schedule
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.sampling import resumable_loader
from sslflow.simclr import SimCLR, simclr_step
from sslflow.splits import data_hash
from sslflow.tracking import stage_run
from sslflow.train import fit
from sslflow.views import TwoViews, augment


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "pretrain", config.Pretrain)
    runtime = resolve(base)
    seed_everything(base.seed)

    pool = np.load(layout.prepared / "pool_images.npy", mmap_mode="r")  # (N, C, H, W) uint8, no labels
    val_x = np.load(layout.prepared / "val_images.npy")
    val_y = np.load(layout.prepared / "val_labels.npy")
    enc_cfg = EncoderConfig(arch=cfg.encoder.arch, in_channels=pool.shape[1], width=cfg.encoder.width, feature_dim=cfg.encoder.feature_dim)
    model = runtime.prepare(SimCLR(build_encoder(enc_cfg), enc_cfg.feature_dim, cfg.proj_dim))

    views = TwoViews(augment(cfg.augment, tuple(pool.shape[-2:])))
    loader = resumable_loader(Images(pool, views), batch_size=cfg.batch_size, seed=base.seed, runtime=runtime)
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    scheduler = build_schedule(optimizer, cfg.optim, cfg.epochs * len(loader), len(loader))
    step = simclr_step(torch.compile(model) if runtime.compile else model, cfg.temperature)

    def monitor(epoch: int) -> dict[str, float]:
        return {"monitor/val_knn_acc": knn_accuracy(apply(model.backbone, val_x, runtime), val_y, cfg.knn_k, base.seed)}

    tags = {"sslflow.data_hash": data_hash(layout.prepared)}
    # A checkpoint is resumed only if made with the same settings and data; the `train` knobs may change.
    made_with = fingerprint(base.seed, base.device, base.precision, cfg.model_dump(exclude={"train"}), tags)
    checkpoints = Checkpoints(
        layout.checkpoints / "pretrain", every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints, fingerprint=made_with
    )  # fmt: skip
    with checkpoints, stage_run(
        "pretrain", experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess", tags=tags,
        resume_run_id=checkpoints.latest.run_id if checkpoints.latest else None,
        resume_step=checkpoints.latest.step if checkpoints.latest else None,
    ) as tracker:  # fmt: skip
        checkpoints.run_id = tracker.run_id
        summary = fit(
            model=model, step=step, loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
            runtime=runtime, log=tracker.log, on_epoch_end=monitor, max_steps=cfg.max_steps, prefix="pretrain",
            checkpoints=checkpoints, max_nonfinite=cfg.train.max_nonfinite_steps,
        )  # fmt: skip
        save_encoder(model.backbone, enc_cfg, layout.encoder)
        write_json(layout.reports / "pretrain.json", summary)
        tracker.log_artifact(layout.encoder, "encoder")
    print(f"pretrain: encoder -> {layout.encoder}, val kNN accuracy {summary['monitor/val_knn_acc']:.3f}")


if __name__ == "__main__":
    run(main)
