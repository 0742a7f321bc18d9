"""evaluate: score ssl, scratch and classical on the test split; write reports, DVC metrics and plots."""

import json

import numpy as np

from sslflow import config, publish
from sslflow.artifacts import load_classifier, load_encoder
from sslflow.cli import run
from sslflow.errors import SslflowError
from sslflow.image import classical, pictures
from sslflow.image.embed import apply
from sslflow.image.finetune import predict_proba
from sslflow.paths import Layout
from sslflow.report import chance_macro_f1, write_all
from sslflow.runtime import resolve
from sslflow.splits import data_hash
from sslflow.tracking import log_image_classifier, stage_run


def main() -> None:
    layout = Layout()
    base = config.load(layout.params, "base", config.Base)
    cfg = config.load(layout.params, "evaluate", config.Evaluate)
    reg = config.load(layout.params, "registry", config.Registry)
    runtime = resolve(base)

    test_x = np.load(layout.labeled / "test_images.npy")
    test_y = np.load(layout.labeled / "test_labels.npy")
    classes = json.loads((layout.labeled / "classes.json").read_text())
    labeled_info = json.loads((layout.labeled / "labeled.json").read_text())
    if len(test_y) == 0:
        raise SslflowError(
            f"{layout.labeled / 'test_labels.npy'}: no labeled test items yet; label more items "
            "(a share of people's labels goes to test, by preprocess.test_fraction)"
        )
    fitted = json.loads((layout.finetuned / "models.json").read_text())["models"]  # ssl, scratch (and *-supervised)
    labeled = json.loads((layout.finetuned / "budget.json").read_text())["count"]
    probas = {name: predict_proba(load_classifier(layout.finetuned, name), test_x, runtime) for name in fitted}
    probas["classical"] = classical.predict_proba(classical.load(layout.finetuned / "classical.npz"), test_x)

    test_hash = data_hash(layout.prepared)
    tags = {"sslflow.data_hash": test_hash, "sslflow.labels_hash": labeled_info["data_hash"]}
    with stage_run(
        "evaluate", run_name="image/evaluate", experiment=base.experiment, params=cfg.model_dump(), upstream="finetune",
        tags=tags, data=(layout.prepared, test_hash, "test"),
    ) as tracker:
        metrics = write_all(test_y, probas, classes, layout.reports, cfg.pr_points)
        encoder, _ = load_encoder(layout.encoder)  # what pretraining alone learned, before any label
        shown = pictures.stratified_sample(test_y, cfg.embedding_sample, base.seed)
        points = pictures.tsne(apply(encoder, test_x[shown], runtime), base.seed)
        title = f"test embeddings of the pretrained encoder (t-SNE, {len(shown)} of {len(test_y)} images)"
        pictures.embedding_map(points, test_y[shown], classes, layout.reports / "figures" / "embedding_tsne.png", title)
        registered = publish.evaluation(
            tracker=tracker, metrics=metrics, probas=probas, chance=chance_macro_f1(len(classes)), score="macro_f1",
            reports=layout.reports, model_name=reg.model_name("image"), test_hash=test_hash, labeled=labeled,
            log_model=lambda: log_image_classifier(
                layout.finetuned, "ssl", layout.labeled / "classes.json", test_x[:2]
            ),
        )
    lift = metrics["lift"]
    people = labeled_info["from_file"]["test"]
    if people:  # a test set people labeled in a few rounds is small: its scores are rough
        print(f"evaluate: the test split holds {len(test_y)} items, {people} of them labeled in fetch.labels")
    print(
        f"evaluate ({labeled} labels): macro-F1 " + ", ".join(f"{n}={metrics[n]['macro_f1']:.3f}" for n in probas)
        + "; lift of " + ", ".join(f"{k} {v:+.3f}" for k, v in lift.items())
        + f"; {registered}"
    )


if __name__ == "__main__":
    run(main)
