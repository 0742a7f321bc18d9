"""sweep: one cell of the label-efficiency sweep (bench/label_efficiency.py): variants at one label budget, over
`sweep.draws` label draws, scored on the test split.

    python stages/image/sweep.py ssl --method M --encoder DIR --budget B --out DIR         # M, M-probe
    python stages/image/sweep.py semisupervised --pool-method P [--method M --encoder DIR] \
        --budget B --out DIR                                                               # M-P (scratch-P)
    python stages/image/sweep.py baselines --budget B --out DIR                            # scratch, classical

M fine-tunes the encoder as the finetune stage does with finetune.method supervised (same `finetune` params and
library); M-P with finetune.method P (self-training, fixmatch, distill), which also uses the unlabeled pool;
without --method, P starts from the random init (scratch-P); M-probe is logistic regression on its frozen
embeddings. Draw d uses label seed finetune.label_seed + d; a supervised fit takes at most sweep.max_steps
steps. Writes DIR/<variant>.json.
"""

import argparse
import functools
import json
from pathlib import Path
from typing import get_args

import numpy as np

from sslflow import config
from sslflow.artifacts import load_encoder
from sslflow.cli import run
from sslflow.encoders import build_encoder
from sslflow.image import classical
from sslflow.image import label_efficiency as le
from sslflow.image.embed import apply
from sslflow.image.methods import cnn_encoder_config
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.splits import data_hash
from sslflow.tracking import stage_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["ssl", "semisupervised", "baselines"])
    pool_methods = get_args(config.FinetuneMethod)[1:]
    ap.add_argument("--pool-method", choices=pool_methods, help="semisupervised: the finetune.method")
    ap.add_argument("--method", help="the pretraining method whose encoder is used")
    ap.add_argument("--encoder", type=Path, help="its encoder directory")
    ap.add_argument("--budget", required=True, help=f"labels per class, or {le.ALL}")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.kind == "ssl" and (args.method is None or args.encoder is None):
        ap.error("ssl needs --method and --encoder")
    if args.kind == "semisupervised" and (args.pool_method is None or (args.method is None) != (args.encoder is None)):
        ap.error("semisupervised needs --pool-method, and --method with --encoder or neither (scratch)")
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    ft = config.load(layout.params, "finetune", config.Finetune)
    sw = config.load(layout.params, "sweep", config.Sweep)
    budget = le.parse_budget(args.budget)
    runtime = resolve(base)
    seed_everything(base.seed)

    train_x = np.load(layout.prepared / "train_images.npy")
    train_y = np.load(layout.prepared / "train_labels.npy")
    pool = np.load(layout.prepared / "pool_images.npy", mmap_mode="r")
    test_x = np.load(layout.prepared / "test_images.npy")
    test_y = np.load(layout.prepared / "test_labels.npy")
    classes = json.loads((layout.prepared / "classes.json").read_text())

    finetuned = functools.partial(
        le.finetuned, ft=ft, max_steps=sw.max_steps, images=train_x, labels=train_y, pool=pool, test=test_x,
        num_classes=len(classes), runtime=runtime,
    )

    # scratch: the CNN methods' architecture (pretrain.encoder) from random init
    scratch_cfg = cnn_encoder_config(config.load(layout.params, "pretrain", config.Pretrain), train_x.shape[1])
    if args.kind == "baselines":
        fitters = {
            "scratch": (
                "baseline", finetuned(lambda: build_encoder(scratch_cfg), scratch_cfg.feature_dim, "supervised")
            ),
            "classical": ("baseline", lambda idx, draw, log, prefix: classical.predict_proba(
                classical.fit_logreg(train_x[idx], train_y[idx], len(classes), ft.classical_c, base.seed), test_x
            )),
        }
    elif args.kind == "semisupervised" and args.method is None:
        fit = finetuned(lambda: build_encoder(scratch_cfg), scratch_cfg.feature_dim, args.pool_method)
        fitters = {le.with_pool("scratch", args.pool_method): ("baseline", fit)}
    else:
        encoder, enc_cfg = load_encoder(args.encoder)
        if args.kind == "semisupervised":
            fit = finetuned(lambda: encoder, enc_cfg.feature_dim, args.pool_method)
            fitters = {le.with_pool(args.method, args.pool_method): ("semisupervised", fit)}
        else:
            features = (apply(encoder, train_x, runtime), apply(encoder, test_x, runtime))  # frozen: embedded once
            fitters = {
                args.method: ("ssl", finetuned(lambda: encoder, enc_cfg.feature_dim, "supervised")),
                le.probe(args.method): ("probe", lambda idx, draw, log, prefix: le.linear_probe(
                    features[0][idx], train_y[idx], features[1], len(classes), sw.probe_c, base.seed
                )),
            }

    cell = {"kind": args.kind, "budget": budget, "pool_method": args.pool_method}
    params = {"sweep": sw.model_dump(), "finetune": ft.model_dump(), "cell": cell}
    upstream = f"sweep/pretrain-{args.method}" if args.method else None
    tags = {"sslflow.data_hash": data_hash(layout.prepared)}
    name = "sweep/" + "-".join(str(p) for p in (args.kind, args.method, args.pool_method, budget) if p)
    with stage_run(
        name, run_name=f"image/{name}", experiment=base.experiment, params=params, upstream=upstream, tags=tags,
        data=(layout.prepared, tags["sslflow.data_hash"], "train+test"),
    ) as tracker:
        cells = le.run_cell(
            fitters, budget=budget, train_y=train_y, test_y=test_y, classes=classes, draws=sw.draws,
            label_seed=ft.label_seed, seed=base.seed, log=tracker.log, out=args.out,
        )
    for cell in cells:
        score = f"macro-F1 {cell['macro_f1_mean']:.3f} ± {cell['macro_f1_std']:.3f} ({sw.draws} draws)"
        print(f"sweep {cell['variant']} @ {budget}/class: {score}")


if __name__ == "__main__":
    run(main)
