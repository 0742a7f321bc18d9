"""Split data/raw into fixed train/val/test sets; train a WordPiece tokenizer on the unlabeled pool (the
train split's text, without labels, then the text.fetch.unlabeled corpus), or take the tokenizer of the
checkpoint text.pretrain.init_from names, and cut the pool and val text into MLM chunks, in data/prepared. Every
text gets its item id (sslflow.text.corpus); the unlabeled corpus goes to unlabeled.jsonl for finetune and select."""

import json
from pathlib import Path

import numpy as np

from sslflow.cli import run
from sslflow.config import Base, load
from sslflow.paths import Layout
from sslflow.rawdata import npy_bytes, require_two_classes
from sslflow.splits import SPLITS, split_indices
from sslflow.text.config import Text
from sslflow.text.corpus import jsonl_bytes, plain_text, read_raw_text, read_unlabeled, with_ids, write_prepared_files
from sslflow.text.encode import pack_chunks
from sslflow.text.pretrained import files_sha256, load_pretrained
from sslflow.text.tags import check_seen
from sslflow.text.tokenizer import train_wordpiece
from sslflow.tracking import record_data_stage


def main() -> None:
    layout = Layout()
    text = load(layout.params, "text", Text)
    base = load(layout.params, "base", Base)  # validated before anything is written
    cfg = text.preprocess
    examples, classes, manifest = read_raw_text(layout.raw, text.task)
    examples = with_ids(examples, "texts")
    unlabeled = with_ids([{"text": t} for t in read_unlabeled(layout.raw, manifest)], "unlabeled")
    documents = text.task == "text-classification"
    # Sentences have no single label to stratify on: one pseudo-class makes the split plain random.
    labels = np.array([e["label"] for e in examples] if documents else [0] * len(examples), dtype=np.int64)
    if documents:
        require_two_classes(labels, classes, str(layout.raw / "texts.jsonl"), "rerun fetch with two classes or more")
    splits = split_indices(
        labels, classes if documents else ["sentence"], test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
        seed=cfg.split_seed,
    )
    parts = {s: [examples[i] for i in getattr(splits, s)] for s in SPLITS}
    if not documents:
        check_seen([e["tags"] for e in parts["train"]], [e["tags"] for e in parts["test"]])

    pool = [plain_text(e) for e in parts["train"] + unlabeled]
    init_from = text.pretrain.init_from
    if init_from is None:
        tokenizer = train_wordpiece(
            pool, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
            lowercase=documents if cfg.lowercase is None else cfg.lowercase,  # capitals mark names
        )
        origin, tags = "from the pool", {}
    else:  # the checkpoint's own tokenizer: its weights only make sense with its ids
        _, tokenizer = load_pretrained(Path(init_from), cfg.max_length)
        origin, tags = f"of {init_from}", {"sslflow.init_from_sha256": files_sha256(Path(init_from))}
    mlm = {
        s: pack_chunks(tokenizer, texts, cfg.max_length, cfg.stride)
        for s, texts in (("train", pool), ("val", [plain_text(e) for e in parts["val"]]))
    }
    files = {f"{s}.jsonl": jsonl_bytes(parts[s]) for s in SPLITS} | {
        f"mlm_{s}.npy": npy_bytes(a) for s, a in mlm.items()
    }
    files["unlabeled.jsonl"] = jsonl_bytes(unlabeled)
    files["tokenizer.json"] = tokenizer.to_str().encode()
    files["classes.json"] = json.dumps(classes).encode()
    files["encoding.json"] = json.dumps(
        {"task": text.task, "max_length": cfg.max_length, "stride": cfg.stride}
    ).encode()
    counts = {s: len(parts[s]) for s in SPLITS} | {
        "pool": len(pool),
        "unlabeled": len(unlabeled),
        "mlm_train_chunks": len(mlm["train"]),
        "mlm_val_chunks": len(mlm["val"]),
    }
    info = write_prepared_files(
        layout.prepared, files, {"counts": counts, "vocab_size": tokenizer.get_vocab_size()}
    )
    record_data_stage(
        "preprocess", run_name=f"{text.task}/preprocess", experiment=base.experiment, params=cfg.model_dump(),
        upstream="fetch", tags={"sslflow.data_hash": info["data_hash"]} | tags,
        data=(layout.prepared, info["data_hash"], "output"),
        metrics=counts | {"vocab_size": tokenizer.get_vocab_size()},
        files=[layout.prepared / "split.json", layout.prepared / "tokenizer.json"],
    )
    print(
        f"preprocess: train {counts['train']} / val {counts['val']} / test {counts['test']}, tokenizer "
        f"{tokenizer.get_vocab_size()} word pieces {origin}, {len(mlm['train'])} MLM chunks -> {layout.prepared}, "
        f"data_hash {info['data_hash'][:12]}"
    )


if __name__ == "__main__":
    run(main)
