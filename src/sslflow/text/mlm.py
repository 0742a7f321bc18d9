"""Masked language modelling (Devlin et al., 2019, BERT): 15% of tokens are chosen, 80% of those become
[MASK], 10% a random token, 10% stay; the model predicts the originals. Masking is transformers'
DataCollatorForLanguageModeling; the loop is sslflow.train.fit.
"""

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from sslflow.runtime import Runtime


class Chunks(Dataset):
    """Rows of an (M, L) id array, padding stripped: the collator pads again and builds attention masks."""

    def __init__(self, ids: np.ndarray, pad_id: int = 0):
        self.ids = ids
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        row = np.asarray(self.ids[i])
        return {"input_ids": row[row != self.pad_id].tolist()}


def build_mlm(config: dict) -> BertForMaskedLM:
    return BertForMaskedLM(BertConfig(**config))


def collator(tokenizer: PreTrainedTokenizerFast, probability: float, seed: int | None = None) -> Callable[[list], dict]:
    """80/10/10 replacement of the chosen tokens; a `seed` makes the masks the same on every pass.
    The batch comes back as a plain dict (input_ids, attention_mask, labels), which the loop moves to the device."""
    masker = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=probability, mask_replace_prob=0.8, random_replace_prob=0.1, seed=seed
    )
    return lambda examples: dict(masker(examples))


def masked_loss(model: BertForMaskedLM, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the masked positions only. The vocabulary projection is applied to those
    positions alone: it is most of a small model's compute, and the other 85% of its outputs are unused."""
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    labels = batch["labels"]  # (B, L), -100 where not masked
    chosen = labels != -100
    if not chosen.any():
        return hidden.sum() * 0.0
    logits = model.cls(hidden[chosen])  # (M, V) for the M masked positions
    return F.cross_entropy(logits.float(), labels[chosen], reduction=reduction)


def mlm_step(model: BertForMaskedLM):
    return lambda batch: masked_loss(model, batch)


@torch.no_grad()
def perplexity(model: BertForMaskedLM, ids: np.ndarray, tokenizer: PreTrainedTokenizerFast, *, probability: float,
               seed: int, batch_size: int, runtime: Runtime) -> float:  # fmt: skip
    """exp(mean masked-token loss) on `ids` with masks drawn from `seed`: comparable across epochs."""
    was_training = model.training
    model.eval()
    loader = DataLoader(Chunks(ids), batch_size=batch_size, collate_fn=collator(tokenizer, probability, seed))
    total, count = 0.0, 0
    for batch in loader:
        batch = {k: v.to(runtime.device) for k, v in batch.items()}
        with runtime.autocast():
            total += masked_loss(model, batch, reduction="sum").item()
        count += int((batch["labels"] != -100).sum())
    model.train(was_training)
    return math.exp(total / max(count, 1))
