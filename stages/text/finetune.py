"""finetune: fit the MLM-pretrained encoder ("ssl"), the same architecture from random init ("scratch")
and a classical baseline on the same labeled budget, from the train split of data/labeled (the label stage):
`text.finetune.labels_per_class` / `label_fraction` draw it from every training label (the benchmark's oracle
draw); with both null it is what people labeled in `text.fetch.labels`. With `text.finetune.method: fixmatch`, ssl
and scratch go on to learn from the unlabeled pool (the chunks of every train document and of the
text.fetch.unlabeled corpus, less the texts people labeled into val or test; labels unread) and their supervised
starting points are kept too ("ssl-supervised", "scratch-supervised"), so evaluate can split what pretraining and
the pool each bought. For NER with `text.finetune.word_classes` set (the default), ssl is instead the per-word
tagger on the classical features plus word classes the pretrained encoder learned (sslflow.text.wordclasses). The
test split is not read. Under torchrun (or base.nproc_per_node > 1) the networks train with DDP; rank 0 writes."""

import hashlib
import math
import shutil

import torch

from sslflow import distributed, stage
from sslflow.atomic import write_json
from sslflow.cli import run, warn
from sslflow.config import Base, load
from sslflow.optim import schedule_warning
from sslflow.paths import Layout
from sslflow.text import baselines
from sslflow.text.config import Text
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.finetune import fit_method, fit_steps
from sslflow.text.models import build_bert, load_encoder, save_classifier
from sslflow.text.tasks import TASKS
from sslflow.text.tokenizer import load_tokenizer
from sslflow.text.trainset import fixmatch_pool, labeled_budget
from sslflow.text.views import specials
from sslflow.tracking import finetune_run_name


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    text = load(layout.params, "text", Text)
    cfg, task = text.finetune, TASKS[text.task]
    runtime = stage.start(base)

    tokenizer = load_tokenizer(layout.prepared / "tokenizer.json")
    encoding = read_json(layout.prepared / "encoding.json")
    if task.name == "token-classification":  # saved with the models: val, evaluate and serving decode alike
        encoding["decoding"] = cfg.decoding
    classes = read_json(layout.labeled / "classes.json")
    train_set = read_jsonl(layout.labeled / "train.jsonl")
    val_set = read_jsonl(layout.labeled / "val.jsonl")
    pool = fixmatch_pool(cfg, tokenizer, encoding, layout.prepared, layout.labeled)  # token ids, labels unread
    budget = labeled_budget(cfg, task, train_set, classes, layout.labeled)
    labeled = [train_set[i] for i in budget]
    arrays = task.training_arrays(tokenizer, labeled, classes, encoding)  # (ids, labels, weights)
    per_epoch = math.ceil(len(arrays[0]) / cfg.batch_size)
    warn(schedule_warning(cfg.optim, fit_steps(cfg, len(arrays[0])), per_epoch, "text.finetune.optim"))

    tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
    encoder, bert = load_encoder(layout.encoder, tokenizer_sha)
    torch.manual_seed(base.seed)
    inits = {"ssl": task.head(encoder, len(classes)), "scratch": task.head(build_bert(bert), len(classes))}
    tagger = task.name == "token-classification" and cfg.word_classes is not None
    if tagger:  # ssl is the word-class tagger, fit below (the head is built anyway: scratch starts as it always did)
        del inits["ssl"]
    batch = distributed.per_rank(cfg.batch_size, "text.finetune.batch_size")
    with stage.finetune_run(
        run_name=finetune_run_name(task.name, cfg.method, cfg.labels_per_class, cfg.label_fraction, cfg.label_seed),
        base=base, params=cfg.model_dump(), prepared=layout.prepared, batch=batch, unit="sequences",
        what=f"{cfg.method}, " + ("" if pool is None else f"pool of {len(pool)} chunks, "), outputs=layout.finetuned,
    ) as tracker:
        summary, names = {"labeled": len(budget)} | ({} if pool is None else {"pool_chunks": len(pool)}), []

        def score(key: str, model) -> dict[str, float]:  # on val
            found = task.score(val_set, task.predict(model, tokenizer, val_set, encoding, runtime), classes, encoding)
            return {f"{key}/{k}": v for k, v in found.items()}

        for name, init in inits.items():
            supervised, model, stats = fit_method(
                runtime.prepare(init), arrays, pool, cfg=cfg, specials=specials(tokenizer), loss=task.loss,
                batch_size=batch, runtime=runtime, log=tracker.log,
                generator=torch.Generator().manual_seed(base.seed), prefix=name,
            )
            fitted = {name: model} if model is supervised else {name: model, f"{name}-supervised": supervised}
            names += fitted
            summary.update({f"{name}/{k}": v for k, v in stats.items()})
            if not distributed.is_main():  # rank 0 writes and scores
                continue
            for key, m in fitted.items():
                save_classifier(m, bert, task.name, layout.finetuned, key)
                summary.update(score(key, m))
        if not distributed.is_main():
            return
        if tagger:
            model = task.fit_tagger(encoder, tokenizer, train_set, labeled, classes, encoding, cfg, base.seed)
            baselines.save(model, layout.finetuned / "ssl.npz")
            summary.update(score("ssl", model))
            names.insert(0, "ssl")
        classical = task.fit_classical(train_set, labeled, classes, cfg.classical_c, base.seed)
        baselines.save(classical, layout.finetuned / "classical.npz")
        scores = task.score(val_set, task.predict_classical(classical, val_set), classes, encoding)
        summary.update({f"classical/{k}": v for k, v in scores.items()})
        # the models describe themselves: tokenizer, classes and encoding beside them
        shutil.copyfile(layout.prepared / "tokenizer.json", layout.finetuned / "tokenizer.json")
        shutil.copyfile(layout.labeled / "classes.json", layout.finetuned / "classes.json")
        write_json(layout.finetuned / "encoding.json", encoding)
        stage.record_finetuned(
            layout.finetuned, layout.reports, budget=budget, method=cfg.method, models=names, summary=summary,
            tracker=tracker,
        )
    print(f"finetune: {len(budget)} labels; " + ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if "val_" in k))


if __name__ == "__main__":
    run(main)
