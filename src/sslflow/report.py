"""Test-set reports: per-class precision/recall/F1, confusion matrices and precision-recall curves.

Everything here takes labels and probabilities (N, K) and writes files; nothing knows which model made them.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_curve

from sslflow.atomic import write_json, write_text, write_with
from sslflow.metrics import write as write_metrics


def per_class(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict:
    """sklearn's classification_report as a dict, plus the macro-F1 and the weakest class's recall."""
    y_pred = proba.argmax(1)
    labels = list(range(len(classes)))
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    report["summary"] = {
        "macro_f1": report["macro avg"]["f1-score"],
        "accuracy": float((y_pred == y_true).mean()),
        "min_class_recall": min(report[c]["recall"] for c in classes),
    }
    return report


def markdown(reports: dict[str, dict], classes: list[str]) -> str:
    lines = []
    for model, rep in reports.items():
        lines += [f"## {model}", "", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for c in [*classes, "macro avg", "weighted avg"]:
            r = rep[c]
            lines.append(
                f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |"
            )
        lines += ["", f"accuracy {rep['summary']['accuracy']:.3f}, macro-F1 {rep['summary']['macro_f1']:.3f}", ""]
    return "\n".join(lines)


def write_confusion(y_true: np.ndarray, proba: np.ndarray, classes: list[str], csv_path: Path, png_path: Path) -> None:
    """One CSV row per test example (DVC's confusion template) and a PNG heat map."""
    names = np.array(classes)
    frame = pd.DataFrame({"actual": names[y_true], "predicted": names[proba.argmax(1)]})
    write_text(csv_path, frame.to_csv(index=False))
    cm = confusion_matrix(y_true, proba.argmax(1), labels=list(range(len(classes))))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, n, ha="center", va="center", fontsize=7, color="white" if n > cm.max() / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="actual", title=png_path.stem)
    _save(fig, png_path)


def _interpolated(y: np.ndarray, score: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The PR curve, and its interpolated precision (the best precision at recall >= r) on `grid`."""
    precision, recall, _ = precision_recall_curve(y, score)  # recall decreasing
    best = np.maximum.accumulate(precision)  # over decreasing recall: best precision at recall >= r
    at = np.searchsorted(recall[::-1], grid, side="left").clip(0, len(recall) - 1)
    return precision, recall, best[::-1][at]


def write_pr_curves(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], points: int, csv_path: Path, png_path: Path
) -> None:
    """A PNG of one-vs-rest PR curves per class; a CSV of the micro-averaged curve at `points` recall levels,
    which DVC draws as one line per model."""
    grid = np.linspace(0, 1, points)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for k, name in enumerate(classes):
        precision, recall, _ = _interpolated(y_true == k, proba[:, k], grid)
        ax.plot(recall, precision, lw=1, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=png_path.stem)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    onehot = np.eye(len(classes), dtype=bool)[y_true]
    _, _, micro = _interpolated(onehot.ravel(), proba.ravel(), grid)
    write_text(csv_path, pd.DataFrame({"recall": grid, "precision": micro}).to_csv(index=False))
    _save(fig, png_path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def chance_macro_f1(num_classes: int) -> float:
    """The best expected macro-F1 of a predictor that ignores its input, whatever the class frequencies: 1/K.

    Guessing class c with probability q_c against frequencies p_c gives F1_c = 2 p_c q_c / (p_c + q_c), at most
    (p_c + q_c) / 2, so the macro mean is at most 1/K, reached by guessing with the frequencies (q = p). Always
    predicting the majority class scores 2 p / (1 + p) / K, less, however skewed the test set.
    """
    return 1.0 / num_classes


def degenerate(metrics: dict[str, dict], probas: dict, chance: float, score: str = "macro_f1") -> dict[str, str]:
    """{model: why} for every fine-tuned model (not the classical baseline) that is no use: it predicts one class
    for every test item, or its `score` is at or below `chance` (NER: 0, no entity found right)."""
    found = {}
    for name, proba in probas.items():
        if name == "classical":
            continue
        one_row_per_item = isinstance(proba, np.ndarray) and proba.ndim == 2 and proba.shape[1] > 1  # not NER's
        if one_row_per_item and len(np.unique(proba.argmax(1))) == 1:
            found[name] = f"it predicts one class for all {len(proba)} test items"
        elif metrics[name][score] <= chance == 0:
            found[name] = f"its test {score} is 0: it finds no entity right"
        elif metrics[name][score] <= chance:
            found[name] = f"its test {score} {metrics[name][score]:.3f} is at or below chance level {chance:.3f}"
    return found


def report_degenerate(found: dict[str, str], reports_dir: Path, tracker) -> None:
    """Say it loudly before promotion reads it: a `warning:` line per model, reports/degenerate.json (an empty
    object when every model is fine) and a `sslflow.degenerate.<model>` tag on the evaluate run."""
    write_json(reports_dir / "degenerate.json", found)
    for name, why in found.items():
        print(
            f"warning: the {name} model is degenerate: {why}; see {reports_dir / 'classification.md'}", file=sys.stderr
        )
    tracker.set_tags({f"sslflow.degenerate.{name}": why for name, why in found.items()})


def baseline_scores(score: dict[str, float]) -> dict[str, float]:
    """The models trained on the labels alone, without pretraining or the pool: random init fine-tuned
    supervised (`scratch-supervised`, or `scratch` when the method is supervised) and `classical`. What the
    champion gate (sslflow.promotion) requires the ssl model to beat; scratch with a pool method is reported as
    lift/pretraining, not gated."""
    scratch = "scratch-supervised" if "scratch-supervised" in score else "scratch"
    return {name: score[name] for name in (scratch, "classical") if name in score}


def lifts(score: dict[str, float]) -> dict[str, float]:
    """What each ingredient bought, on the same labels.

    pretraining: the pretrained start minus the random start, both fitted with the same finetune.method;
    pool: the method that uses the unlabeled pool minus supervised fine-tuning, from the pretrained start
    (pool_from_scratch: from the random start); present when a `<model>-supervised` was scored.
    """
    out = {"pretraining": score["ssl"] - score["scratch"], "ssl_minus_classical": score["ssl"] - score["classical"]}
    if "ssl-supervised" in score:
        out["pool"] = score["ssl"] - score["ssl-supervised"]
    if "scratch-supervised" in score:
        out["pool_from_scratch"] = score["scratch"] - score["scratch-supervised"]
    return out


def write_all(
    y_true: np.ndarray, probas: dict[str, np.ndarray], classes: list[str], reports_dir: Path, pr_points: int
) -> dict:
    """All evaluate outputs under `reports_dir`; returns the metrics written to reports/metrics/."""
    reports = {name: per_class(y_true, p, classes) for name, p in probas.items()}
    for name, rep in reports.items():
        write_json(reports_dir / "classification" / f"{name}.json", rep)
        write_confusion(y_true, probas[name], classes, reports_dir / "plots" / "confusion" / f"{name}.csv",
                        reports_dir / "figures" / f"confusion_{name}.png")
        write_pr_curves(y_true, probas[name], classes, pr_points, reports_dir / "plots" / "pr" / f"{name}.csv",
                        reports_dir / "figures" / f"pr_{name}.png")
    write_text(reports_dir / "classification.md", markdown(reports, classes))
    metrics = {name: rep["summary"] for name, rep in reports.items()}
    if {"ssl", "scratch", "classical"} <= metrics.keys():
        metrics["lift"] = lifts({name: m["macro_f1"] for name, m in metrics.items()})
    write_metrics(reports_dir, metrics)
    return metrics
