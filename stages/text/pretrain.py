"""pretrain: masked language modelling on the unlabeled pool's chunks (labels are never read); val
perplexity with fixed masks every epoch."""

import hashlib

import numpy as np
from torch.utils.data import DataLoader

from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.optim import build_optimizer, build_schedule
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.splits import data_hash
from sslflow.text.config import Text
from sslflow.text.corpus import read_json
from sslflow.text.mlm import Chunks, build_mlm, collator, mlm_step, perplexity
from sslflow.text.models import bert_config, save_encoder
from sslflow.text.tokenizer import for_transformers, load_tokenizer
from sslflow.tracking import stage_run
from sslflow.train import fit


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    cfg = load(layout.params, "text", Text).pretrain
    runtime = resolve(base)
    generator = seed_everything(base.seed)

    tokenizer = for_transformers(load_tokenizer(layout.prepared / "tokenizer.json"))
    pool = np.load(layout.prepared / "mlm_train.npy")  # (M, L) int32 ids, no labels
    val = np.load(layout.prepared / "mlm_val.npy")
    max_length = read_json(layout.prepared / "encoding.json")["max_length"]
    config = bert_config(cfg.model, len(tokenizer), max_length)
    model = runtime.prepare(build_mlm(config))
    loader = DataLoader(
        Chunks(pool), batch_size=cfg.batch_size, shuffle=True, drop_last=len(pool) > cfg.batch_size, generator=generator,
        collate_fn=collator(tokenizer, cfg.mlm_probability),
    )  # fmt: skip
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    scheduler = build_schedule(optimizer, cfg.optim, cfg.epochs * len(loader), len(loader))

    def monitor(epoch: int) -> dict[str, float]:
        ppl = perplexity(model, val, tokenizer, probability=cfg.mlm_probability, seed=base.seed, batch_size=64, runtime=runtime)
        return {"monitor/val_perplexity": ppl}

    tags = {"sslflow.data_hash": data_hash(layout.prepared)}
    with stage_run("pretrain", experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess", tags=tags) as tracker:
        summary = fit(
            model=model, step=mlm_step(model), loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
            runtime=runtime, log=tracker.log, on_epoch_end=monitor, max_steps=cfg.max_steps, prefix="pretrain",
        )  # fmt: skip
        tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
        save_encoder(model.bert, config, tokenizer_sha, layout.encoder)
        write_json(layout.reports / "pretrain.json", summary)
        tracker.log_artifact(layout.encoder, "encoder")
    print(f"pretrain: encoder -> {layout.encoder}, val perplexity {summary['monitor/val_perplexity']:.1f}")


if __name__ == "__main__":
    run(main)
