"""pretrain: masked language modelling on the unlabeled pool's chunks (labels are never read), from nothing or
continued from the checkpoint text.pretrain.init_from names; val perplexity with fixed masks every epoch;
checkpoints as the image track's pretrain has them.

    python ../stages/text/pretrain.py   # in text/, as text/dvc.yaml runs it
    torchrun --standalone --nproc_per_node 2 ../stages/text/pretrain.py   # DDP (or base.nproc_per_node: 2)
"""

import hashlib
from pathlib import Path

import numpy as np
import torch

from sslflow import stage
from sslflow.atomic import write_json
from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.errors import SslflowError
from sslflow.paths import Layout
from sslflow.text.config import Text
from sslflow.text.corpus import read_json
from sslflow.text.mlm import MaskedChunks, build_mlm, masker, mlm_step, perplexity
from sslflow.text.models import bert_config, save_encoder
from sslflow.text.pretrained import encoder_config, files_sha256, load_pretrained
from sslflow.text.tokenizer import for_transformers, load_tokenizer


def main() -> None:
    layout = Layout()
    base = load(layout.params, "base", Base)
    cfg = load(layout.params, "text", Text).pretrain
    runtime = stage.start(base)

    prepared_tokenizer = load_tokenizer(layout.prepared / "tokenizer.json")
    tokenizer = for_transformers(prepared_tokenizer)
    pool = np.load(layout.prepared / "mlm_train.npy")  # (M, L) int32 ids, no labels
    val = np.load(layout.prepared / "mlm_val.npy")
    encoding = read_json(layout.prepared / "encoding.json")
    if cfg.init_from is None:
        config = bert_config(cfg.model, len(tokenizer), encoding["max_length"])
        mlm, origin = build_mlm(config), {}
    else:
        mlm, own_tokenizer = load_pretrained(Path(cfg.init_from), encoding["max_length"])
        if own_tokenizer.to_str() != prepared_tokenizer.to_str():
            raise SslflowError(
                f"{layout.prepared / 'tokenizer.json'} is not the tokenizer of {cfg.init_from}; rerun preprocess"
            )
        config = encoder_config(mlm)
        origin = {"init_from": cfg.init_from, "init_from_sha256": files_sha256(Path(cfg.init_from))}
    model = runtime.prepare(mlm)

    def monitor(model: torch.nn.Module) -> dict[str, float]:
        ppl = perplexity(
            model, val, tokenizer, probability=cfg.mlm_probability, seed=base.seed, batch_size=64, runtime=runtime
        )
        return {"monitor/val_perplexity": ppl}

    def save(summary: dict, tracker) -> None:
        tokenizer_sha = hashlib.sha256((layout.prepared / "tokenizer.json").read_bytes()).hexdigest()
        save_encoder(model.bert, config, tokenizer_sha, layout.encoder)
        write_json(layout.reports / "pretrain.json", summary | origin)
        tracker.log_artifact(layout.encoder, "encoder")

    data = MaskedChunks(pool, masker(tokenizer, cfg.mlm_probability))
    summary = stage.pretrain(
        run_name=f"{encoding['task']}/pretrain {cfg.method}", key="text.pretrain", cfg=cfg, base=base,
        runtime=runtime, model=model, make_step=mlm_step, data=data, unit="chunks", monitor=monitor,
        prepared=layout.prepared, checkpoint_dir=layout.checkpoints / "pretrain", save=save,
        outputs=(layout.encoder, layout.reports / "pretrain.json"),
        tags={f"sslflow.{k}": v for k, v in origin.items()} or None,
    )
    if summary is not None:
        print(f"pretrain: encoder -> {layout.encoder}, val perplexity {summary['monitor/val_perplexity']:.1f}")


if __name__ == "__main__":
    run(main)
