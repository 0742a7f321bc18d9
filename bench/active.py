"""Benchmark of the labeling loop on MNIST-5k (not a test): rounds of select -> label -> fine-tune, with the
training split's hidden labels as the oracle that answers.

    python bench/active.py [--budgets 10 20 50 100] [--measure 20 50] [--method supervised] [--seeds 0 1 2]
                           [--strategies ...] [--out bench/active]

Reads the default pipeline's outputs (data/prepared, models/encoder: run `dvc repro` first) and params.yaml's
`finetune` and `select` sections. Per strategy and seed, the labeled set grows through the budgets; at each the
pretrained encoder is fine-tuned with `finetune.method` on exactly those labels (the pipeline's ssl model), and
scored on val (to choose defaults) and test. Selection needs no fine-tuned model (margin and badge use a probe
on the embedding, as the select stage does), so `--measure` can fine-tune at some budgets only; `--method`
replaces finetune.method (a cheaper method makes the whole grid affordable on a CPU). `oracle` is the pipeline's
per-class draw (budget / classes per class), which needs every label: a reference, not a strategy. margin and
badge start from typical until two classes are labeled, as the select stage does.
Writes <out>.json, <out>.md and <out>.png.
"""

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score

from sslflow import config
from sslflow.artifacts import load_encoder
from sslflow.heads import Classifier
from sslflow.image.embed import apply
from sslflow.image.finetune import clone_init, fit_method, predict_proba, train_classifier
from sslflow.runtime import resolve, seed_everything
from sslflow.selection import probe_probs, propose
from sslflow.splits import draw_budget

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("random", "typical", "margin", "badge", "oracle")
NEEDS_LABELS = ("margin", "badge")


def fine_tune(encoder, enc_cfg, images, labels, pool, num_classes, cfg, base, runtime, seed):
    """The pipeline's ssl model on these labels: finetune.method from the pretrained encoder (stage logic)."""
    seed_everything(seed)
    init = Classifier(encoder, enc_cfg.feature_dim, num_classes, freeze_encoder=cfg.mode == "linear")
    generator = torch.Generator().manual_seed(seed)
    quiet = lambda metrics, step: None  # noqa: E731
    train = functools.partial(
        train_classifier, augment_cfg=cfg.augment, optim=cfg.optim, encoder_lr_scale=cfg.encoder_lr_scale,
        epochs=cfg.epochs, head_epochs=cfg.head_epochs, batch_size=cfg.batch_size, runtime=runtime, log=quiet,
        generator=generator,
    )
    _, model, _ = fit_method(
        cfg.method, clone_init(runtime.prepare(init)), (images, labels), pool, cfg=cfg, train=train, teacher=None,
        batch_size=cfg.batch_size, runtime=runtime, log=quiet, generator=generator, prefix="ssl",
    )
    return model


def grow(strategy, labeled, budget, embeddings, train_y, num_classes, sel, seed):
    """`labeled` (train indices) grown to `budget` items by `strategy`; the oracle answers with train_y."""
    if strategy == "oracle":
        return draw_budget(train_y, labels_per_class=budget // num_classes, label_fraction=None, seed=seed)
    candidates = ~np.isin(np.arange(len(train_y)), labeled)
    known = train_y[labeled]
    probs = None
    if strategy in NEEDS_LABELS and len(np.unique(known)) >= 2:
        probs = probe_probs(embeddings, labeled, known, c=sel.probe_c, seed=seed, num_classes=num_classes)
    used = strategy if strategy not in NEEDS_LABELS or probs is not None else "typical"
    new = propose(used, embeddings=embeddings, candidates=candidates, labeled=labeled, probs=probs,
                  budget=budget - len(labeled), seed=seed).indices
    return np.concatenate([labeled, new]).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--measure", type=int, nargs="+", help="budgets to fine-tune at (default: every budget)")
    ap.add_argument("--method", choices=["supervised", "self-training", "fixmatch", "distill"])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--out", default="bench/active")
    args = ap.parse_args()
    params = REPO / "params.yaml"
    base = config.load(params, "base", config.Base)
    cfg = config.load(params, "finetune", config.Finetune)
    if args.method:
        cfg = cfg.model_copy(update={"method": args.method})
    measure = set(args.measure or args.budgets)
    sel = config.load(params, "select", config.Select)
    runtime = resolve(base)
    prepared = REPO / "data" / "prepared"
    train_x, train_y = np.load(prepared / "train_images.npy"), np.load(prepared / "train_labels.npy")
    val_x, val_y = np.load(prepared / "val_images.npy"), np.load(prepared / "val_labels.npy")
    test_x, test_y = np.load(prepared / "test_images.npy"), np.load(prepared / "test_labels.npy")
    pool = np.load(prepared / "pool_images.npy")
    num_classes = len(json.loads((prepared / "classes.json").read_text()))
    encoder, enc_cfg = load_encoder(REPO / "models" / "encoder")
    embeddings = apply(encoder, train_x, runtime)  # (n_train, D): selection sees the train split only

    rows = []
    for strategy in args.strategies:
        for seed in args.seeds:
            labeled = np.zeros(0, dtype=np.int64)
            for budget in args.budgets:
                start = time.perf_counter()
                labeled = grow(strategy, labeled, budget, embeddings, train_y, num_classes, sel, seed)
                if budget not in measure:
                    continue
                model = fine_tune(load_encoder(REPO / "models" / "encoder")[0], enc_cfg, train_x[labeled],
                                  train_y[labeled], pool, num_classes, cfg, base, runtime, seed)
                scores = {
                    split: float(f1_score(y, predict_proba(model, x, runtime).argmax(1), average="macro"))
                    for split, x, y in (("val", val_x, val_y), ("test", test_x, test_y))
                }
                rows.append({"strategy": strategy, "seed": seed, "budget": int(len(labeled)),
                             "classes_covered": int(len(np.unique(train_y[labeled]))), **scores,
                             "seconds": round(time.perf_counter() - start, 1)})
                print(json.dumps(rows[-1]), flush=True)
        write(Path(args.out), rows, args, cfg)  # after each strategy: a cut-short run keeps what it measured


def write(out: Path, rows: list[dict], args, cfg) -> None:
    summary = {}
    done = [s for s in args.strategies if any(r["strategy"] == s for r in rows)]
    for strategy in done:
        for budget in sorted(set(args.measure or args.budgets)):
            cell = [r for r in rows if r["strategy"] == strategy and r["budget"] == budget]
            if cell:
                summary[f"{strategy}/{budget}"] = {
                    k: [float(np.mean([r[k] for r in cell])), float(np.std([r[k] for r in cell]))]
                    for k in ("val", "test", "classes_covered")
                }
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"method": cfg.method, "seeds": args.seeds, "rounds": args.budgets, "measured": args.measure or args.budgets,
            "threads": torch.get_num_threads()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=2) + "\n")
    budgets = sorted(set(args.measure or args.budgets))
    lines = [
        f"MNIST-5k, labels chosen per round then fine-tuned with finetune.method={cfg.method}; macro-F1 mean ± std "
        f"over seeds {args.seeds} (`python bench/active.py`). oracle = k per class, which needs every label.", "",
        "| strategy | " + " | ".join(f"{b} labels: val" + " | test" for b in budgets) + " |",
        "|---|" + "---|---|" * len(budgets),
    ]
    for strategy in done:
        cells = []
        for b in budgets:
            s = summary.get(f"{strategy}/{b}")
            cells += [f"{s['val'][0]:.3f} ± {s['val'][1]:.3f}", f"{s['test'][0]:.3f} ± {s['test'][1]:.3f}"] if s \
                else ["", ""]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(out.with_suffix(".png"), summary, done, budgets, cfg.method)


def plot(path: Path, summary: dict, strategies: list[str], budgets: list[int], method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy in strategies:
        pts = [(b, *summary[f"{strategy}/{b}"]["test"]) for b in budgets if f"{strategy}/{b}" in summary]
        b, m, s = map(np.array, zip(*pts, strict=True))
        style = "--" if strategy == "oracle" else "-"
        ax.errorbar(b, m, yerr=s, marker="o", capsize=3, label=strategy, linestyle=style)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("labels")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"MNIST-5k: labels chosen by each strategy, then {method}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
