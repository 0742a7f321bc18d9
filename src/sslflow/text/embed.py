"""Frozen features of texts for selection: the features SequenceClassifier's head reads, from the pretrained
encoder, over each text's first chunk (a text longer than one chunk is named by its opening)."""

from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertModel

from sslflow.runtime import Runtime
from sslflow.text.encode import chunk_documents
from sslflow.text.models import mean_pool


def first_chunks(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, stride: int) -> np.ndarray:
    """(N, max_length) int32: each text's first chunk, framed as chunk_documents frames it."""
    ids, owner = chunk_documents(tokenizer, texts, max_length, stride)  # owner ascending, every text >= 1 chunk
    return ids[np.searchsorted(owner, np.arange(len(texts)))]


@torch.no_grad()
def embed(bert: BertModel, ids: np.ndarray, runtime: Runtime, batch_size: int = 64) -> np.ndarray:
    """(N, L) ids -> (N, H) float32: mean-pooled last hidden states, each feature standardised over the N texts.
    The standardisation is the classifier's BatchNorm (no affine) with these texts' statistics: the pooled MLM
    states share a large common component that would otherwise dominate distances."""
    was_training = bert.training
    bert.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        x = torch.as_tensor(np.asarray(ids[i : i + batch_size]), dtype=torch.long, device=runtime.device)
        mask = x != 0  # [PAD] is id 0
        with runtime.autocast():
            hidden = bert(input_ids=x, attention_mask=mask).last_hidden_state
        out.append(mean_pool(hidden.float(), mask).cpu())
    bert.train(was_training)
    if not out:
        return np.zeros((0, bert.config.hidden_size), np.float32)
    z = torch.cat(out).numpy()
    return ((z - z.mean(0)) / (z.std(0) + 1e-6)).astype(np.float32)
