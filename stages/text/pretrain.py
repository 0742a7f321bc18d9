"""pretrain: masked language modelling on the unlabeled pool's chunks (labels are never read); val
perplexity with fixed masks every epoch; checkpoints as the image track's pretrain has them."""

import hashlib

import numpy as np

from sslflow.atomic import write_json
from sslflow.checkpoint import Checkpoints, fingerprint
from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.optim import build_optimizer, build_schedule
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
    seed_everything(base.seed)

    tokenizer = for_transformers(load_tokenizer(layout.prepared / "tokenizer.json"))
    pool = np.load(layout.prepared / "mlm_train.npy")  # (M, L) int32 ids, no labels
    val = np.load(layout.prepared / "mlm_val.npy")
    config = bert_config(
        cfg.model, len(tokenizer), read_json(layout.prepared / "encoding.json")["max_length"]
    )
    model = runtime.prepare(build_mlm(config))
    data = MaskedChunks(pool, masker(tokenizer, cfg.mlm_probability))
    loader = resumable_loader(
        data, batch_size=min(cfg.batch_size, len(data)), seed=base.seed, runtime=runtime
    )
    optimizer = build_optimizer([{"params": list(model.parameters())}], cfg.optim)
    # The schedule ends where training does: after `epochs`, or at `max_steps` if that comes first.
    total = min(cfg.epochs * len(loader), cfg.max_steps or cfg.epochs * len(loader))
    scheduler = build_schedule(optimizer, cfg.optim, total, len(loader))

    def monitor(epoch: int) -> dict[str, float]:
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

    tags = {"sslflow.data_hash": data_hash(layout.prepared)}
    # A checkpoint is resumed only if made with the same settings and data; the `train` knobs may change.
    made_with = fingerprint(base.seed, base.device, base.precision, cfg.model_dump(exclude={"train"}), tags)
    checkpoints = Checkpoints(
        layout.checkpoints / "pretrain", every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints, fingerprint=made_with
    )  # fmt: skip
    with checkpoints, stage_run(
        "pretrain", experiment=base.experiment, params=cfg.model_dump(), upstream="preprocess", tags=tags,
        resume_run_id=checkpoints.latest.run_id if checkpoints.latest else None,
        resume_step=checkpoints.latest.step if checkpoints.latest else None,
    ) as tracker:  # fmt: skip
        checkpoints.run_id = tracker.run_id
        summary = fit(
            model=model, step=mlm_step(model), loader=loader, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs,
            runtime=runtime, log=tracker.log, on_epoch_end=monitor, max_steps=cfg.max_steps, prefix="pretrain",
            checkpoints=checkpoints, max_nonfinite=cfg.train.max_nonfinite_steps,
        )  # fmt: skip
        tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
        save_encoder(model.bert, config, tokenizer_sha, layout.encoder)
        write_json(layout.reports / "pretrain.json", summary)
        tracker.log_artifact(layout.encoder, "encoder")
    print(f"pretrain: encoder -> {layout.encoder}, val perplexity {summary['monitor/val_perplexity']:.1f}")


if __name__ == "__main__":
    run(main)
