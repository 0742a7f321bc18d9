"""The label-efficiency sweep: a cell is one variant at one label budget, over several label draws. A variant is
a pretraining method's encoder fine-tuned (supervised, or with a method that uses the unlabeled pool too), or
probed linearly, or a baseline (scratch, also with the pool methods, and classical). The table and the curve
gather the cells: test macro-F1 against labels per class.
"""

import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from sslflow.atomic import write_json, write_text
from sslflow.config import Finetune
from sslflow.errors import SslflowError
from sslflow.heads import Classifier
from sslflow.image.finetune import clone_init, fit_method, predict_proba, train_classifier
from sslflow.report import per_class
from sslflow.runtime import Runtime
from sslflow.splits import draw_budget
from sslflow.train import Log

ALL = "all"  # the budget of every training label
BASELINES = ("scratch", "classical")
SUFFIX = {"probe": "-probe"}  # variant names; no "+": MLflow keys refuse it
POOL_METHODS = ("self-training", "fixmatch", "distill")  # finetune.method values that use the unlabeled pool


def with_pool(start: str, pool_method: str) -> str:
    """The variant fine-tuned with a finetune.method that uses the pool, from `start` (a method's encoder, or
    scratch), e.g. simclr-fixmatch, scratch-distill."""
    return f"{start}-{pool_method}"


def probe(method: str) -> str:
    """The variant of logistic regression on a method's frozen embeddings."""
    return method + SUFFIX["probe"]


def linear_probe(
    train: np.ndarray, labels: np.ndarray, test: np.ndarray, num_classes: int, c: float, seed: int
) -> np.ndarray:
    """The linear evaluation of SSL papers: multinomial logistic regression on L2-normalized frozen embeddings
    (N, D). Returns test probabilities (M, num_classes); classes absent from `labels` get 0."""

    def unit(f: np.ndarray) -> np.ndarray:
        return f / np.linalg.norm(f, axis=1, keepdims=True).clip(min=1e-12)

    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(unit(train), labels)
    proba = np.zeros((len(test), num_classes))
    proba[:, clf.classes_] = clf.predict_proba(unit(test))
    return proba


def budget_kwargs(budget: int | str) -> dict:
    """finetune's budget arguments (splits.draw_budget) for a sweep budget: labels per class, or all."""
    if budget == ALL:
        return {"labels_per_class": None, "label_fraction": 1.0}
    return {"labels_per_class": int(budget), "label_fraction": None}


def parse_budget(text: str) -> int | str:
    if text == ALL:
        return ALL
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise SslflowError(f"a sweep budget is a positive number of labels per class or '{ALL}', got {text!r}")


def capped_epochs(n: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Epochs for a fit over `n` examples that take at most `max_steps` optimizer steps (and at least one epoch).

    finetune.train_classifier's loader makes n // batch_size batches when n > batch_size, else one; so small
    budgets keep their epochs and only big ones (e.g. every label) get fewer.
    """
    if max_steps is None:
        return epochs
    per_epoch = n // batch_size if n > batch_size else 1
    return max(1, min(epochs, max_steps // per_epoch))


def capped_train(ft: Finetune, max_steps: int | None, runtime: Runtime, log: Log, generator: torch.Generator):
    """finetune.train_classifier with the `finetune` params, each fit cut to at most `max_steps` steps; the
    `train` that finetune.fit_method takes."""
    fit = functools.partial(
        train_classifier, augment_cfg=ft.augment, optim=ft.optim, encoder_lr_scale=ft.encoder_lr_scale,
        batch_size=ft.batch_size, runtime=runtime, log=log, generator=generator,
    )

    def train(model, images, labels, weights, *, epochs: int = ft.epochs, prefix: str):
        cap = functools.partial(capped_epochs, len(images), ft.batch_size, max_steps=max_steps)
        head_epochs = min(ft.head_epochs, cap(ft.head_epochs))
        return fit(model, images, labels, weights, epochs=cap(epochs), head_epochs=head_epochs, prefix=prefix)

    return train


def cell_path(root: Path, budget: int | str, variant: str) -> Path:
    """Where a cell's result lives; bench/label_efficiency.py names the same paths."""
    return Path(root) / str(budget) / f"{variant}.json"


def summarize(variant: str, kind: str, budget: int | str, num_classes: int, draws: list[dict]) -> dict:
    """A cell's result: the draws (label_seed, labeled, macro_f1, accuracy, wall_s) and their mean and std."""
    f1 = np.array([d["macro_f1"] for d in draws])
    return {
        "variant": variant,
        "kind": kind,  # ssl | semisupervised | probe | baseline
        "budget": budget,
        "labels_per_class": float(np.mean([d["labeled"] for d in draws]) / num_classes),
        "macro_f1_mean": float(f1.mean()),
        "macro_f1_std": float(f1.std()),
        "wall_s": float(sum(d["wall_s"] for d in draws)),
        "draws": draws,
    }


Fit = Callable[[np.ndarray, int, Log, str], np.ndarray]  # (labeled indices, draw, log, prefix) -> test probabilities


def finetuned(
    make_encoder: Callable[[], torch.nn.Module], feature_dim: int, method: str, *, ft: Finetune, max_steps: int | None,
    images: np.ndarray, labels: np.ndarray, pool: np.ndarray, test: np.ndarray, num_classes: int, runtime: Runtime,
) -> Fit:
    """A Fit: a classifier on make_encoder() fitted to the draw's labeled images with finetune.method `method`
    (supervised fits capped at `max_steps`), returning its test probabilities."""

    def fit(idx: np.ndarray, draw: int, log: Log, prefix: str) -> np.ndarray:
        init = Classifier(make_encoder(), feature_dim, num_classes, freeze_encoder=ft.mode == "linear")
        generator = torch.Generator().manual_seed(ft.label_seed + draw)
        _, model, _ = fit_method(
            method, clone_init(runtime.prepare(init)), (images[idx], labels[idx]), pool, cfg=ft,
            train=capped_train(ft, max_steps, runtime, log, generator), teacher=None, batch_size=ft.batch_size,
            runtime=runtime, log=log, generator=generator, prefix=prefix,
        )
        return predict_proba(model, test, runtime)

    return fit


def run_cell(
    fitters: dict[str, tuple[str, Fit]], *, budget: int | str, train_y: np.ndarray, test_y: np.ndarray,
    classes: list[str], draws: int, label_seed: int, seed: int, log: Log, out: Path,
) -> list[dict]:
    """Every variant {name: (kind, fit)} of one cell over `draws` label draws, scored on test: draw d takes label
    seed `label_seed` + d and torch seed `seed` + d (a new initialization and data order too). Writes
    out/<variant>.json (summarize) and returns those cells."""
    results = {name: [] for name in fitters}
    for d in range(draws):
        idx = draw_budget(train_y, **budget_kwargs(budget), seed=label_seed + d, classes=classes)
        for name, (_, fit) in fitters.items():
            torch.manual_seed(seed + d)
            start = time.perf_counter()
            summary = per_class(test_y, fit(idx, d, log, f"{name}/draw{d}"), classes)["summary"]
            results[name].append(
                {
                    "label_seed": label_seed + d,
                    "labeled": len(idx),
                    "macro_f1": summary["macro_f1"],
                    "accuracy": summary["accuracy"],
                    "wall_s": time.perf_counter() - start,
                }
            )
            log({f"{name}/macro_f1": summary["macro_f1"], f"{name}/accuracy": summary["accuracy"]}, d)
    cells = [summarize(name, fitters[name][0], budget, len(classes), r) for name, r in results.items()]
    for cell in cells:
        write_json(out / f"{cell['variant']}.json", cell)
        variant = cell["variant"]
        log({f"{variant}/macro_f1_mean": cell["macro_f1_mean"], f"{variant}/macro_f1_std": cell["macro_f1_std"]}, draws)
    return cells


def gather(root: Path, budgets: Sequence[int | str], variants: Sequence[str]) -> list[dict]:
    """The cells of these variants and budgets; a missing one is an error (the sweep did not run it)."""
    cells = []
    for budget in budgets:
        for variant in variants:
            path = cell_path(root, budget, variant)
            if not path.is_file():
                raise SslflowError(f"sweep cell {path} not found: run `python bench/label_efficiency.py`")
            cells.append(json.loads(path.read_text()))
    return cells


def table(cells: list[dict]) -> dict:
    """{"budgets": [...], "variants": {variant: {"kind", budget: cell without draws' detail}}, "best": per budget}.

    "best" compares the best pretrained variant (with or without the pool) with each baseline.
    """
    budgets = list(dict.fromkeys(str(c["budget"]) for c in cells))
    variants: dict[str, dict] = {}
    for c in cells:
        row = variants.setdefault(c["variant"], {"kind": c["kind"]})
        row[str(c["budget"])] = {k: c[k] for k in ("labels_per_class", "macro_f1_mean", "macro_f1_std", "wall_s")} | {
            "macro_f1_draws": [d["macro_f1"] for d in c["draws"]]
        }
    best = {}
    for b in budgets:
        pretrained = {v: r[b]["macro_f1_mean"] for v, r in variants.items() if r["kind"] != "baseline" and b in r}
        if not pretrained:
            continue
        top = max(pretrained, key=pretrained.get)
        best[b] = {"best_pretrained": top, "macro_f1": pretrained[top]}
        for base in BASELINES:
            if base in variants and b in variants[base]:
                best[b][f"minus_{base}"] = pretrained[top] - variants[base][b]["macro_f1_mean"]
    return {"budgets": budgets, "variants": variants, "best": best}


def curves(tab: dict) -> dict[str, dict]:
    """Per variant, the points of the curve in budget order (for pictures.label_efficiency_curve)."""
    out = {}
    for variant, row in tab["variants"].items():
        budgets = [b for b in tab["budgets"] if b in row]
        out[variant] = {
            "budget": budgets,
            "labels_per_class": [row[b]["labels_per_class"] for b in budgets],
            "mean": [row[b]["macro_f1_mean"] for b in budgets],
            "std": [row[b]["macro_f1_std"] for b in budgets],
        }
    return out


def plot_csvs(tab: dict) -> dict[str, str]:
    """Wide CSVs for DVC's linear template, rows by labels per class: ssl.csv, probe.csv and baselines.csv with a
    column of mean macro-F1 per variant (probe columns named by their method), and <pool method>.csv with a
    column per start (e.g. fixmatch.csv: simclr, scratch)."""
    frames: dict[str, dict] = {}
    for variant, row in tab["variants"].items():
        name, column = _csv_column(variant, row["kind"])
        labels_per_class = [row[b]["labels_per_class"] for b in tab["budgets"] if b in row]
        frame = frames.setdefault(name, {"labels_per_class": labels_per_class})
        frame[column] = [row[b]["macro_f1_mean"] for b in tab["budgets"] if b in row]
    return {name: pd.DataFrame(frame).to_csv(index=False) for name, frame in frames.items()}


def _csv_column(variant: str, kind: str) -> tuple[str, str]:
    if kind == "probe":
        return "probe.csv", variant.removesuffix(SUFFIX["probe"])
    for pool_method in POOL_METHODS:
        if variant.endswith(f"-{pool_method}"):
            return f"{pool_method}.csv", variant.removesuffix(f"-{pool_method}")
    return {"ssl": "ssl.csv", "baseline": "baselines.csv"}[kind], variant


def markdown(tab: dict) -> str:
    head = "| variant | " + " | ".join(f"{b} / class" for b in tab["budgets"]) + " | wall s |"
    lines = [head, "|---" * (len(tab["budgets"]) + 2) + "|"]
    for variant, row in tab["variants"].items():
        cells = [
            f"{row[b]['macro_f1_mean']:.3f} ± {row[b]['macro_f1_std']:.3f}" if b in row else "" for b in tab["budgets"]
        ]
        wall = sum(row[b]["wall_s"] for b in tab["budgets"] if b in row)
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {wall:.0f} |")
    lines += [
        "",
        "test macro-F1, mean ± std over label draws; wall s: fine-tuning and scoring, all draws and budgets",
        "",
    ]
    for b, best in tab["best"].items():
        gaps = ", ".join(f"{best[f'minus_{base}']:+.3f} vs {base}" for base in BASELINES if f"minus_{base}" in best)
        lines.append(f"- {b} / class: best pretrained {best['best_pretrained']} {best['macro_f1']:.3f} ({gaps})")
    return "\n".join(lines) + "\n"


def write(tab: dict, json_path: Path, markdown_path: Path, csv_dir: Path) -> None:
    write_json(json_path, tab)
    write_text(markdown_path, markdown(tab))
    for name, text in plot_csvs(tab).items():
        write_text(Path(csv_dir) / name, text)
