"""evaluate: score every fine-tuned model (ssl, scratch, and with a pool method their *-supervised starting
points) and the classical baseline on the test split; write reports, DVC metrics and plots; log the ssl
model with its tokenizer (it predicts from raw strings) and register it. The test split is data/labeled's: the
source's test texts and those people labeled into it."""

from sslflow import publish
from sslflow.cli import run
from sslflow.config import Base, Registry, load
from sslflow.paths import Layout
from sslflow.report import chance_macro_f1
from sslflow.runtime import resolve
from sslflow.splits import data_hash
from sslflow.text import baselines
from sslflow.text.config import Text
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.tasks import TASKS
from sslflow.text.tokenizer import load_tokenizer
from sslflow.text.wordclasses import load_fitted
from sslflow.tracking import log_text_classifier, stage_run


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    text = load(layout.params, "text", Text)
    reg = load(layout.params, "registry", Registry)
    cfg, task = text.evaluate, TASKS[text.task]
    runtime = resolve(base)

    test = read_jsonl(layout.labeled / "test.jsonl")
    classes = read_json(layout.labeled / "classes.json")
    labeled_info = read_json(layout.labeled / "labeled.json")
    tokenizer = load_tokenizer(layout.finetuned / "tokenizer.json")
    encoding = read_json(layout.finetuned / "encoding.json")
    probas = {}
    for name in read_json(layout.finetuned / "models.json")["models"]:  # ssl, scratch (and *-supervised)
        probas[name] = task.predict(load_fitted(layout.finetuned, name), tokenizer, test, encoding, runtime)
    probas["classical"] = task.predict_classical(baselines.load(layout.finetuned / "classical.npz"), test)

    labeled = read_json(layout.finetuned / "budget.json")["count"]
    test_hash = data_hash(layout.prepared)
    score = "macro_f1" if task.name == "text-classification" else "entity_f1"
    with stage_run(
        "evaluate",
        run_name=f"{task.name}/evaluate",
        experiment=base.experiment,
        params=cfg.model_dump(),
        upstream="finetune",
        tags={"sslflow.data_hash": test_hash, "sslflow.labels_hash": labeled_info["data_hash"]},
        data=(layout.prepared, test_hash, "test"),
    ) as tracker:
        metrics = task.write_reports(test, probas, classes, encoding, layout.reports, cfg.pr_points)
        registered = publish.evaluation(
            tracker=tracker, metrics=metrics, probas=probas, score=score, reports=layout.reports,
            chance=chance_macro_f1(len(classes)) if score == "macro_f1" else 0.0,  # NER: no entity found scores 0
            model_name=reg.model_name(task.name), test_hash=test_hash,
            labeled=labeled,
            log_model=lambda: log_text_classifier(layout.finetuned, "ssl", task.name, task.raw_inputs(test[:2])),
        )
    people = labeled_info["from_file"]["test"]
    if people:  # a test set people labeled in a few rounds is small: its scores are rough
        print(f"evaluate: the test split holds {len(test)} texts, {people} of them labeled in text.fetch.labels")
    print(
        f"evaluate ({labeled} labels): {score} "
        + ", ".join(f"{n}={metrics[n][score]:.3f}" for n in probas)
        + "; lift of " + ", ".join(f"{k} {v:+.3f}" for k, v in metrics["lift"].items())
        + f"; {registered}"
    )


if __name__ == "__main__":
    run(main)
