"""NER test reports: entity-level precision, recall and F1 per entity type (seqeval, strict IOB2: an
entity counts only if its type and both boundaries match), plus word-level confusion and PR curves.

Predicted tags are read as IOB1 -> IOB2 first (an I-X that opens an entity becomes B-X), so an argmax
decoder is not penalised for the B/I choice alone. Each model's DVC metrics carry its F1 per entity type
(`f1_PER`, ...) beside the micro and macro scores.
"""

from pathlib import Path

import numpy as np
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from sslflow.atomic import write_json, write_text
from sslflow.metrics import write as write_metrics
from sslflow.report import lifts, write_confusion, write_pr_curves
from sslflow.text.decode import decode
from sslflow.text.tags import to_iob2

SCHEME = "IOB2, seqeval strict mode"


def entity_report(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    """seqeval's report as a dict (per type, micro, macro, weighted avg) plus a summary."""
    pred = [to_iob2(p) for p in pred_tags]
    report = classification_report(
        true_tags, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
    )
    report = {k: {m: float(v) for m, v in r.items()} for k, r in report.items()}
    report["summary"] = {
        "entity_f1": report["micro avg"]["f1-score"],
        "precision": report["micro avg"]["precision"],
        "recall": report["micro avg"]["recall"],
        "macro_f1": report["macro avg"]["f1-score"],
        "min_class_recall": min((r["recall"] for k, r in report.items() if " avg" not in k), default=0.0),
    }
    return report


def markdown(reports: dict[str, dict]) -> str:
    lines = [f"Entity-level scores ({SCHEME}).", ""]
    for model, rep in reports.items():
        types = entity_types(rep)
        lines += [
            f"## {model}",
            "",
            "| entity | precision | recall | f1 | support |",
            "|---|---|---|---|---|",
        ]
        for t in [*types, "micro avg", "macro avg"]:
            r = rep[t]
            lines.append(
                f"| {t} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | {int(r['support'])} |"
            )
        lines += [
            "",
            f"entity F1 (micro) {rep['summary']['entity_f1']:.3f}, macro-F1 {rep['summary']['macro_f1']:.3f}",
            "",
        ]
    return "\n".join(lines)


def entity_types(report: dict) -> list[str]:
    return [k for k in report if k not in ("summary", "micro avg", "macro avg", "weighted avg")]


def write_all(true_tags: list[list[str]], word_probas: dict[str, list[np.ndarray]], tags: list[str], reports_dir: Path,
              pr_points: int, *, decoding: str) -> dict:
    """All evaluate outputs under `reports_dir`, laid out as sslflow.report.write_all lays them out; every model's
    tags are decoded with `decoding` (sslflow.text.decode); confusion and PR curves are over words and tags.
    Returns the metrics written to reports/metrics/."""
    index = {t: i for i, t in enumerate(tags)}
    y_words = np.array([index[t] for sentence in true_tags for t in sentence])
    reports = {}
    for name, probas in word_probas.items():
        reports[name] = entity_report(true_tags, [decode(p, tags, decoding) for p in probas])
        write_json(reports_dir / "classification" / f"{name}.json", reports[name])
        flat = np.concatenate(probas)
        write_confusion(y_words, flat, tags, reports_dir / "plots" / "confusion" / f"{name}.csv",
                        reports_dir / "figures" / f"confusion_{name}.png")
        write_pr_curves(y_words, flat, tags, pr_points, reports_dir / "plots" / "pr" / f"{name}.csv",
                        reports_dir / "figures" / f"pr_{name}.png")
    write_text(reports_dir / "classification.md", markdown(reports))
    metrics = {
        name: rep["summary"] | {f"f1_{t}": rep[t]["f1-score"] for t in entity_types(rep)}
        for name, rep in reports.items()
    }
    if {"ssl", "scratch", "classical"} <= metrics.keys():
        metrics["lift"] = lifts({name: m["entity_f1"] for name, m in metrics.items()})
    write_metrics(reports_dir, metrics)
    return metrics
