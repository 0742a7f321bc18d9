"""evaluate: score ssl, scratch and classical on the test split; write reports, DVC metrics and plots."""

import json

import numpy as np

from sslflow import classical, config, pictures
from sslflow.artifacts import load_classifier, load_encoder
from sslflow.cli import run
from sslflow.embed import apply
from sslflow.finetune import predict_proba
from sslflow.paths import Layout
from sslflow.promotion import evidence_tags
from sslflow.report import baseline_scores, chance_macro_f1, degenerate, report_degenerate, write_all
from sslflow.runtime import resolve
from sslflow.splits import data_hash
from sslflow.tracking import git_commit, log_image_classifier, stage_run
from sslflow.tracking.registry import CHALLENGER, ModelRegistry


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "evaluate", config.Evaluate)
    reg = config.load(layout.params, "registry", config.Registry)
    runtime = resolve(base)

    test_x = np.load(layout.prepared / "test_images.npy")
    test_y = np.load(layout.prepared / "test_labels.npy")
    classes = json.loads((layout.prepared / "classes.json").read_text())
    fitted = json.loads((layout.finetuned / "models.json").read_text())["models"]  # ssl, scratch (and *-supervised)
    labeled = json.loads((layout.finetuned / "budget.json").read_text())["count"]
    probas = {name: predict_proba(load_classifier(layout.finetuned, name), test_x, runtime) for name in fitted}
    probas["classical"] = classical.predict_proba(classical.load(layout.finetuned / "classical.npz"), test_x)

    test_hash = data_hash(layout.prepared)
    tags = {"sslflow.data_hash": test_hash}
    with stage_run("evaluate", experiment=base.experiment, params=cfg.model_dump(), upstream="finetune", tags=tags) as tracker:
        metrics = write_all(test_y, probas, classes, layout.reports, cfg.pr_points)
        encoder, _ = load_encoder(layout.encoder)  # what pretraining alone learned, before any label
        shown = pictures.stratified_sample(test_y, cfg.embedding_sample, base.seed)
        points = pictures.tsne(apply(encoder, test_x[shown], runtime), base.seed)
        title = f"test embeddings of the pretrained encoder (t-SNE, {len(shown)} of {len(test_y)} images)"
        pictures.embedding_map(points, test_y[shown], classes, layout.reports / "figures" / "embedding_tsne.png", title)
        tracker.log({f"{group}/{k}": v for group, m in metrics.items() for k, v in m.items()}, 0)
        useless = degenerate(metrics, probas, chance_macro_f1(len(classes)))
        report_degenerate(useless, layout.reports, tracker)
        for sub in ("classification", "plots", "figures"):
            tracker.log_artifact(layout.reports / sub, sub)
        tracker.log_artifact(layout.reports / "classification.md")
        model_uri = log_image_classifier(layout.finetuned, "ssl", layout.prepared / "classes.json", test_x[:2])
        evidence = evidence_tags(
            macro_f1=metrics["ssl"]["macro_f1"], min_class_recall=metrics["ssl"]["min_class_recall"],
            data_hash=test_hash, run_id=tracker.run_id, git_commit=git_commit(),
            baselines=baseline_scores({n: metrics[n]["macro_f1"] for n in probas}),
            chance_f1=chance_macro_f1(len(classes)), labeled=labeled, degenerate=useless.get("ssl"),
        )  # fmt: skip
        version = ModelRegistry(reg.model_name("image")).register_challenger(model_uri, evidence)
    lift = metrics["lift"]
    print(
        "evaluate: macro-F1 " + ", ".join(f"{n}={metrics[n]['macro_f1']:.3f}" for n in probas)
        + "; lift of " + ", ".join(f"{k} {v:+.3f}" for k, v in lift.items())
        + f"; ssl registered as {reg.model_name('image')} version {version} ({CHALLENGER})"
    )


if __name__ == "__main__":
    run(main)
