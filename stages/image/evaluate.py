"""evaluate: score ssl, scratch and classical on the test split; write reports, DVC metrics and plots."""

import json

import numpy as np

from sslflow import classical, config
from sslflow.artifacts import load_classifier
from sslflow.cli import run
from sslflow.finetune import predict_proba
from sslflow.paths import Layout
from sslflow.report import write_all
from sslflow.runtime import resolve
from sslflow.splits import data_hash
from sslflow.tracking import log_image_classifier, stage_run


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "evaluate", config.Evaluate)
    runtime = resolve(base)

    test_x = np.load(layout.prepared / "test_images.npy")
    test_y = np.load(layout.prepared / "test_labels.npy")
    classes = json.loads((layout.prepared / "classes.json").read_text())
    probas = {name: predict_proba(load_classifier(layout.finetuned, name), test_x, runtime) for name in ("ssl", "scratch")}
    probas["classical"] = classical.predict_proba(classical.load(layout.finetuned / "classical.npz"), test_x)

    tags = {"sslflow.data_hash": data_hash(layout.prepared)}
    with stage_run("evaluate", experiment=base.experiment, params=cfg.model_dump(), upstream="finetune", tags=tags) as tracker:
        metrics = write_all(test_y, probas, classes, layout.reports, cfg.pr_points)
        tracker.log({f"{group}/{k}": v for group, m in metrics.items() for k, v in m.items()}, 0)
        for sub in ("classification", "plots", "figures"):
            tracker.log_artifact(layout.reports / sub, sub)
        tracker.log_artifact(layout.reports / "classification.md")
        log_image_classifier(layout.finetuned, "ssl", layout.prepared / "classes.json", test_x[:2])
    lift = metrics["lift"]
    print(
        "evaluate: macro-F1 " + ", ".join(f"{n}={metrics[n]['macro_f1']:.3f}" for n in probas)
        + f"; lift vs scratch {lift['ssl_minus_scratch']:+.3f}, vs classical {lift['ssl_minus_classical']:+.3f}"
    )


if __name__ == "__main__":
    run(main)
