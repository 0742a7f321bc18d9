"""finetune: fit the MLM-pretrained encoder ("ssl"), the same architecture from random init ("scratch")
and a classical baseline on the same labeled budget, drawn here from the train split. With
`text.finetune.method: fixmatch`, ssl and scratch go on to learn from the unlabeled pool (every train
document's chunks, labels unread) and their supervised starting points are kept too ("ssl-supervised",
"scratch-supervised"), so evaluate can split what pretraining and the pool each bought. The test split is
not read. Under torchrun (or base.nproc_per_node > 1) the networks train with DDP; rank 0 writes."""

import hashlib
import math
import shutil

import torch

from sslflow import distributed
from sslflow.atomic import write_json
from sslflow.cli import run, warn
from sslflow.config import Base, load
from sslflow.errors import SslflowError
from sslflow.optim import schedule_warning
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.splits import data_hash, draw_budget
from sslflow.text import baselines
from sslflow.text.config import Text
from sslflow.text.corpus import read_json, read_jsonl
from sslflow.text.encode import chunk_documents
from sslflow.text.finetune import fit_method
from sslflow.text.models import build_bert, load_encoder, save_classifier
from sslflow.text.tasks import TASKS
from sslflow.text.tokenizer import load_tokenizer
from sslflow.text.views import specials
from sslflow.tracking import stage_run

SELF_DESCRIBING = ("tokenizer.json", "encoding.json", "classes.json")  # copied next to the models


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    text = load(layout.params, "text", Text)
    cfg, task = text.finetune, TASKS[text.task]
    if cfg.method != "supervised" and task.name != "text-classification":
        raise SslflowError(
            f"params key 'text.finetune.method' is {cfg.method}, but text.task is {task.name}: "
            "token classification (NER) fine-tunes supervised only"
        )
    runtime = resolve(base)
    distributed.init(runtime.device, base.nproc_per_node)  # under torchrun: one process per device
    seed_everything(base.seed)

    tokenizer = load_tokenizer(layout.prepared / "tokenizer.json")
    encoding = read_json(layout.prepared / "encoding.json")
    classes = read_json(layout.prepared / "classes.json")
    train_set = read_jsonl(layout.prepared / "train.jsonl")
    val_set = read_jsonl(layout.prepared / "val.jsonl")
    pool = None
    if cfg.method == "fixmatch":  # token ids only: the pool's labels are never read
        texts = [e["text"] for e in train_set]
        pool, _ = chunk_documents(tokenizer, texts, encoding["max_length"], encoding["stride"])
        if len(pool) == 0:
            raise SslflowError(
                f"params key 'text.finetune.method' is fixmatch, but the unlabeled pool "
                f"{layout.prepared / 'train.jsonl'} is empty"
            )
    budget = draw_budget(task.budget_labels(train_set), labels_per_class=cfg.labels_per_class,
                         label_fraction=cfg.label_fraction, seed=cfg.label_seed, classes=task.budget_classes(classes))  # fmt: skip
    labeled = [train_set[i] for i in budget]
    arrays = task.training_arrays(tokenizer, labeled, classes, encoding)  # (ids, labels, weights)
    per_epoch = math.ceil(len(arrays[0]) / cfg.batch_size)
    warn(schedule_warning(cfg.optim, cfg.steps, per_epoch, "text.finetune.optim"))

    tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
    encoder, bert = load_encoder(layout.encoder, tokenizer_sha)
    torch.manual_seed(base.seed)
    inits = {"ssl": task.head(encoder, len(classes)), "scratch": task.head(build_bert(bert), len(classes))}
    world, batch = distributed.world_size(), distributed.per_rank(cfg.batch_size, "text.finetune.batch_size")
    tags = {
        "sslflow.data_hash": data_hash(layout.prepared), "sslflow.world_size": str(world), "sslflow.batch_per_rank": str(batch),
    }  # fmt: skip
    if distributed.is_main():
        head = f"finetune: {cfg.method}, {world} rank(s) x {batch} sequences = global batch {cfg.batch_size}"
        print(head if pool is None else f"{head}, pool of {len(pool)} chunks")
    tracking = stage_run("finetune", experiment=base.experiment, params=cfg.model_dump(), upstream="pretrain", tags=tags)
    with distributed.on_main(tracking, distributed.Silent()) as tracker:
        summary, names = {"labeled": len(budget)} | ({} if pool is None else {"pool_chunks": len(pool)}), []
        for name, init in inits.items():
            supervised, model, stats = fit_method(
                runtime.prepare(init), arrays, pool, cfg=cfg, specials=specials(tokenizer), loss=task.loss,
                batch_size=batch, runtime=runtime, log=tracker.log,
                generator=torch.Generator().manual_seed(base.seed), prefix=name,
            )  # fmt: skip
            fitted = {name: model} if model is supervised else {name: model, f"{name}-supervised": supervised}
            names += fitted
            summary.update({f"{name}/{k}": v for k, v in stats.items()})
            if not distributed.is_main():  # rank 0 writes and scores
                continue
            for key, m in fitted.items():
                save_classifier(m, bert, task.name, layout.finetuned, key)
                scores = task.score(val_set, task.predict(m, tokenizer, val_set, encoding, runtime), classes)
                summary.update({f"{key}/{k}": v for k, v in scores.items()})
        if not distributed.is_main():
            return
        classical = task.fit_classical(train_set, labeled, classes, cfg.classical_c, base.seed)
        baselines.save(classical, layout.finetuned / "classical.npz")
        scores = task.score(val_set, task.predict_classical(classical, val_set), classes)
        summary.update({f"classical/{k}": v for k, v in scores.items()})
        for name in SELF_DESCRIBING:
            shutil.copyfile(layout.prepared / name, layout.finetuned / name)
        write_json(layout.finetuned / "budget.json", {"indices": budget.tolist(), "count": len(budget)})
        write_json(layout.finetuned / "models.json", {"method": cfg.method, "models": names})
        write_json(layout.reports / "finetune.json", summary)
        tracker.log(summary, 0)
        tracker.log_artifact(layout.finetuned, "finetuned")
    print("finetune: " + ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if "val_" in k))


if __name__ == "__main__":
    run(main)
