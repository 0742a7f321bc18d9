"""Document classification: a document is cut into overlapping chunks, each chunk is trained on its
document's label (weighted so that every document counts once), and the prediction averages the chunks'
probabilities."""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from sslflow.runtime import Runtime
from sslflow.text.encode import chunk_documents
from sslflow.text.finetune import probabilities


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits, labels, reduction="none") * weights).sum() / weights.sum()


def chunk_examples(
    tokenizer: Tokenizer, texts: Sequence[str], labels: np.ndarray, max_length: int, stride: int
):
    """(ids (M, L), labels (M,), weights (M,)): each chunk carries its document's label and 1/chunks."""
    ids, owner = chunk_documents(tokenizer, texts, max_length, stride)
    per_doc = np.bincount(owner, minlength=len(texts))
    return ids, np.asarray(labels, dtype=np.int64)[owner], 1.0 / per_doc[owner]


def predict_documents(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    max_length: int,
    stride: int,
    runtime: Runtime,
) -> np.ndarray:
    """(N, K) class probabilities: the mean over each document's chunks."""
    ids, owner = chunk_documents(tokenizer, texts, max_length, stride)
    proba = probabilities(model, ids, runtime)  # (M, K)
    total = np.zeros((len(texts), proba.shape[1]))
    np.add.at(total, owner, proba)
    return total / np.bincount(owner, minlength=len(texts))[:, None]
