"""Masked language modelling (Devlin et al., 2019, BERT): 15% of tokens are chosen, 80% of those become
[MASK], 10% a random token, 10% stay; the model predicts the originals. Masking is transformers'
DataCollatorForLanguageModeling; the loop is sslflow.train.fit.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, PreTrainedTokenizerFast

from sslflow.runtime import Runtime


class MaskedChunks(Dataset):
    """Rows of an (M, L) id array, each masked on its own: under sampling.Seeded the masks depend on the
    item's seed alone, so an interrupted epoch resumes with the same masks. Items are dicts of (L,) tensors
    (input_ids, attention_mask, labels with -100 where nothing is predicted)."""

    def __init__(self, ids: np.ndarray, masker: DataCollatorForLanguageModeling, pad_id: int = 0):
        self.ids = ids
        self.masker = masker
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = np.asarray(self.ids[i])
        real = int((row != self.pad_id).sum())  # padding is only ever at the end
        masked = self.masker([{"input_ids": row[:real].tolist()}])
        item = {
            "input_ids": torch.full((len(row),), self.pad_id, dtype=torch.long),
            "attention_mask": torch.zeros(len(row), dtype=torch.long),
            "labels": torch.full((len(row),), -100, dtype=torch.long),
        }
        for key, value in item.items():
            value[:real] = masked[key][0]
        return item


def build_mlm(config: dict) -> BertForMaskedLM:
    return BertForMaskedLM(BertConfig(**config))


def masker(tokenizer: PreTrainedTokenizerFast, probability: float) -> DataCollatorForLanguageModeling:
    """`probability` of the tokens are chosen; 80% of those become [MASK], 10% a random token, 10% stay."""
    return DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=probability, mask_replace_prob=0.8, random_replace_prob=0.1
    )


def masked_loss(model: BertForMaskedLM, batch: dict, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on the masked positions only. The vocabulary projection is applied to those
    positions alone: it is most of a small model's compute, and the other 85% of its outputs are unused."""
    hidden = model.bert(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    labels = batch["labels"]  # (B, L), -100 where not masked
    chosen = labels != -100
    logits = model.cls(hidden[chosen])  # (M, V) for the M masked positions
    if not len(logits):
        # Nothing masked: a zero loss that still reaches every parameter, as DDP expects of each step.
        return logits.sum()
    return F.cross_entropy(logits.float(), labels[chosen], reduction=reduction)


def mlm_step(model: BertForMaskedLM):
    return lambda batch: masked_loss(model, batch)


@torch.no_grad()
def perplexity(model: BertForMaskedLM, ids: np.ndarray, tokenizer: PreTrainedTokenizerFast, *, probability: float,
               seed: int, batch_size: int, runtime: Runtime) -> float:
    """exp(mean masked-token loss) on `ids` with masks drawn from `seed`: comparable across epochs."""
    was_training = model.training
    model.eval()
    data = MaskedChunks(ids, masker(tokenizer, probability))
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]):  # fixed masks, and the training RNG stream is left as it was
        torch.manual_seed(seed)
        for batch in DataLoader(data, batch_size=batch_size):
            batch = {k: v.to(runtime.device) for k, v in batch.items()}
            with runtime.autocast():
                total += masked_loss(model, batch, reduction="sum").item()
            count += int((batch["labels"] != -100).sum())
    model.train(was_training)
    return math.exp(total / max(count, 1))
