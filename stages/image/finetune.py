"""finetune: fit the pretrained encoder ("ssl"), the same architecture from random init ("scratch") and
logistic regression on pixels ("classical") on the same labeled budget. With a `finetune.method` that uses
the unlabeled pool, ssl and scratch are fitted with it and their supervised starting points are kept too
("ssl-supervised", "scratch-supervised"), so evaluate can split what pretraining and the pool each bought.
The labeled splits come from data/labeled (the label stage): `finetune.labels_per_class` / `label_fraction` draw
the budget from every training label (the benchmark's oracle draw), and with both null the budget is what people
labeled in `fetch.labels`. The test split is not read, nor are the pool's labels (it has none)."""

import functools
import json
import math

import numpy as np
import torch

from sslflow import config, distributed, stage
from sslflow.artifacts import load_classifier_file, load_encoder, save_classifier
from sslflow.cli import run, warn
from sslflow.encoders import build_encoder
from sslflow.errors import SslflowError
from sslflow.heads import Classifier
from sslflow.image import classical
from sslflow.image.finetune import clone_init, fit_method, predict_proba, train_classifier
from sslflow.image.labeled import people_budget
from sslflow.optim import schedule_warning
from sslflow.paths import Layout
from sslflow.splits import draw_budget
from sslflow.tracking import finetune_run_name


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "finetune", config.Finetune)
    runtime = stage.start(base)

    train_x = np.load(layout.labeled / "train_images.npy")
    train_y = np.load(layout.labeled / "train_labels.npy")
    pool = np.load(layout.prepared / "pool_images.npy", mmap_mode="r")
    pool_rows = np.load(layout.labeled / "pool_rows.npy")  # people may have labeled pool items into test
    if len(pool_rows) < len(pool):
        pool = pool[pool_rows]
    val_x = np.load(layout.labeled / "val_images.npy")
    val_y = np.load(layout.labeled / "val_labels.npy")
    classes = json.loads((layout.labeled / "classes.json").read_text())
    num_classes = len(classes)
    if cfg.method != "supervised" and len(pool) == 0:
        raise SslflowError(
            f"params key 'finetune.method' is {cfg.method}, but the unlabeled pool "
            f"{layout.prepared / 'pool_images.npy'} is empty"
        )
    teacher = None
    if cfg.method == "distill" and cfg.distill.teacher:
        teacher = load_classifier_file(cfg.distill.teacher, "finetune.distill.teacher")
    if cfg.labels_per_class is None and cfg.label_fraction is None:
        from_file = json.loads((layout.labeled / "items.json").read_text())["train"]["from_file"]
        budget = people_budget(np.asarray(from_file, dtype=bool), train_y, classes)
    else:
        budget = draw_budget(
            train_y, labels_per_class=cfg.labels_per_class, label_fraction=cfg.label_fraction, seed=cfg.label_seed
        )
    labeled = (train_x[budget], train_y[budget])
    per_epoch = math.ceil(len(budget) / cfg.batch_size)
    warn(schedule_warning(cfg.optim, cfg.epochs * per_epoch, per_epoch, "finetune.optim"))

    encoder, enc_cfg = load_encoder(layout.encoder)
    torch.manual_seed(base.seed)
    frozen = cfg.mode == "linear"
    inits = {
        "ssl": Classifier(encoder, enc_cfg.feature_dim, num_classes, freeze_encoder=frozen),
        "scratch": Classifier(build_encoder(enc_cfg), enc_cfg.feature_dim, num_classes, freeze_encoder=frozen),
    }
    batch = distributed.per_rank(cfg.batch_size, "finetune.batch_size")
    with stage.finetune_run(
        run_name=finetune_run_name("image", cfg.method, cfg.labels_per_class, cfg.label_fraction, cfg.label_seed),
        base=base, params=cfg.model_dump(), prepared=layout.prepared, batch=batch, what=f"{cfg.method}, ",
        unit="images", outputs=layout.finetuned,
    ) as tracker:
        generator = torch.Generator().manual_seed(base.seed)
        train = functools.partial(
            train_classifier, augment_cfg=cfg.augment, optim=cfg.optim, encoder_lr_scale=cfg.encoder_lr_scale,
            epochs=cfg.epochs, head_epochs=cfg.head_epochs, batch_size=batch, runtime=runtime, log=tracker.log,
            generator=generator,
        )
        summary, names = {"labeled": len(budget)}, []
        for name, init in inits.items():
            supervised, model, stats = fit_method(
                cfg.method, clone_init(runtime.prepare(init)), labeled, pool, cfg=cfg, train=train, teacher=teacher,
                batch_size=batch, runtime=runtime, log=tracker.log, generator=generator, prefix=name,
            )
            fitted = {name: model} if model is supervised else {name: model, f"{name}-supervised": supervised}
            names += fitted
            for key, m in fitted.items():
                if distributed.is_main():  # rank 0 writes the outputs
                    save_classifier(m, enc_cfg, num_classes, layout.finetuned, key)
                if len(val_y):  # people's labels may not have reached val yet
                    summary[f"{key}/val_acc"] = float((predict_proba(m, val_x, runtime).argmax(1) == val_y).mean())
            summary.update({f"{name}/{k}": v for k, v in stats.items()})
        if not distributed.is_main():
            return
        logreg = classical.fit_logreg(*labeled, num_classes, cfg.classical_c, base.seed)
        classical.save(logreg, layout.finetuned / "classical.npz")
        stage.record_finetuned(
            layout.finetuned, layout.reports, budget=budget, method=cfg.method, models=names, summary=summary,
            tracker=tracker,
        )
    scores = ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if "val_acc" in k) or "no labeled val items"
    print(f"finetune: {len(budget)} labels; {scores}")


if __name__ == "__main__":
    run(main)
