"""pretrain: masked language modelling on the unlabeled pool's chunks (labels are never read); val
perplexity with fixed masks every epoch; checkpoints as the image track's pretrain has them.

    python stages/text/pretrain.py
    torchrun --standalone --nproc_per_node 2 stages/text/pretrain.py   # DDP (or base.nproc_per_node: 2)
"""

import hashlib

import numpy as np

from sslflow import distributed
from sslflow.atomic import write_json
from sslflow.checkpoint import Checkpoints, fingerprint
from sslflow.cli import run, warn
from sslflow.config import Base, load
from sslflow.optim import build_optimizer, build_schedule, schedule_warning
from sslflow.paths import Layout
from sslflow.runtime import resolve, seed_everything
from sslflow.sampling import resumable_loader
from sslflow.splits import data_hash
from sslflow.text.config import Text
from sslflow.text.corpus import read_json
from sslflow.text.mlm import MaskedChunks, build_mlm, masker, mlm_step, perplexity
from sslflow.text.models import bert_config, save_encoder
from sslflow.text.tokenizer import for_transformers, load_tokenizer
from sslflow.tracking import stage_run
from sslflow.train import fit


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    cfg = load(layout.params, "text", Text).pretrain
    runtime = resolve(base)
    distributed.init(runtime.device, base.nproc_per_node)  # under torchrun: one process per device
    seed_everything(base.seed)

    tokenizer = for_transformers(load_tokenizer(layout.prepared / "tokenizer.json"))
    pool = np.load(layout.prepared / "mlm_train.npy")  # (M, L) int32 ids, no labels
    val = np.load(layout.prepared / "mlm_val.npy")
    config = bert_config(
        cfg.model, len(tokenizer), read_json(layout.prepared / "encoding.json")["max_length"]
    )
    model = runtime.prepare(build_mlm(config))
    data = MaskedChunks(pool, masker(tokenizer, cfg.mlm_probability))
    batch = distributed.per_rank(min(cfg.batch_size, len(data)), "text.pretrain.batch_size")
    loader = resumable_loader(data, batch_size=batch, seed=base.seed, runtime=runtime)
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    # The schedule ends where training does: after `epochs`, or at `max_steps` if that comes first.
    total = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    scheduler = build_schedule(optimizer, cfg.optim, total, len(loader))
    warn(schedule_warning(cfg.optim, total, len(loader), "text.pretrain.optim"))

    def monitor(epoch: int) -> dict[str, float]:
        if not distributed.is_main():  # only rank 0 reports
            return {}
        ppl = perplexity(
            model,
            val,
            tokenizer,
            probability=cfg.mlm_probability,
            seed=base.seed,
            batch_size=64,
            runtime=runtime,
        )
        return {"monitor/val_perplexity": ppl}

    world = distributed.world_size()
    tags = {
        "sslflow.data_hash": data_hash(layout.prepared),
        "sslflow.world_size": str(world),  # in the fingerprint too: a position mid-epoch depends on it
        "sslflow.batch_per_rank": str(batch),
    }
    # A checkpoint is resumed only if made with the same settings and data; the `train` knobs may change.
    made_with = fingerprint(base.seed, base.device, base.precision, cfg.model_dump(exclude={"train"}), tags)
    checkpoints = Checkpoints(
        layout.checkpoints / "pretrain", every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints, fingerprint=made_with
    )  # fmt: skip
    if distributed.is_main():
        print(f"pretrain: {world} rank(s) x {batch} chunks = global batch {batch * world}")
    with distributed.on_main(checkpoints) as saving, distributed.on_main(stage_run(
        "pretrain", experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess", tags=tags,
        resume_run_id=checkpoints.latest.run_id if checkpoints.latest else None,
        resume_step=checkpoints.latest.step if checkpoints.latest else None,
    ), distributed.Silent()) as tracker:  # fmt: skip
        checkpoints.run_id = tracker.run_id
        summary = fit(
            model=model, step=mlm_step(model), loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
            runtime=runtime, log=tracker.log, on_epoch_end=monitor, max_steps=cfg.max_steps, prefix="pretrain",
            checkpoints=saving, max_nonfinite=cfg.train.max_nonfinite_steps,
        )  # fmt: skip
        if not distributed.is_main():  # rank 0 writes the outputs
            return
        tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
        save_encoder(model.bert, config, tokenizer_sha, layout.encoder)
        write_json(layout.reports / "pretrain.json", summary)
        tracker.log_artifact(layout.encoder, "encoder")
    print(f"pretrain: encoder -> {layout.encoder}, val perplexity {summary['monitor/val_perplexity']:.1f}")


if __name__ == "__main__":
    run(main)
