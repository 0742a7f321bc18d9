"""What a text fine-tune learns from: the labeled budget of the train split, and for FixMatch the unlabeled pool.

The budget is the benchmark's oracle draw (`text.finetune.labels_per_class` or `label_fraction` of every train
label), or, with both null, exactly the training texts people labeled in `text.fetch.labels`. The pool is token
ids of every pool text (the train split and the unlabeled corpus), less the val and test texts; no label is read.
"""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sslflow.splits import draw_budget
from sslflow.text.config import TextFinetune
from sslflow.text.corpus import read_json
from sslflow.text.finetune import unlabeled_pool
from sslflow.text.labeled import held_out, people_budget, pool_items


def labeled_budget(cfg: TextFinetune, task, train_set: list[dict], classes: list[str], labeled: Path) -> np.ndarray:
    """Indices into `train_set` (the train split of data/labeled, `labeled`) to fine-tune on; `task` is a
    sslflow.text.tasks task, which says what one label is."""
    labels, budget_classes = task.budget_labels(train_set), task.budget_classes(classes)
    if cfg.labels_per_class is None and cfg.label_fraction is None:
        return people_budget(read_json(labeled / "items.json")["train"]["from_file"], labels, budget_classes)
    return draw_budget(labels, labels_per_class=cfg.labels_per_class, label_fraction=cfg.label_fraction,
                       seed=cfg.label_seed, classes=budget_classes)


def fixmatch_pool(
    cfg: TextFinetune, tokenizer: Tokenizer, encoding: dict, prepared: Path, labeled: Path
) -> np.ndarray | None:
    """(M, L) token ids of the unlabeled pool's chunks for `method: fixmatch`, else None."""
    if cfg.method != "fixmatch":
        return None
    _, texts = pool_items(prepared, without=held_out(labeled))
    return unlabeled_pool(tokenizer, texts, encoding, f"(train.jsonl and unlabeled.jsonl in {prepared})")
