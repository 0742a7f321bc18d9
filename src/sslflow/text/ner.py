"""Token classification (NER): a word's tag is learned and predicted at its first sub-word; the other
sub-words, [CLS], [SEP] and padding carry no label."""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from sslflow.runtime import Runtime
from sslflow.text import wordclasses
from sslflow.text.decode import decode
from sslflow.text.encode import encode_words
from sslflow.text.finetune import probabilities
from sslflow.text.tags import spans

IGNORE = -100


def token_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """logits (B, L, T), labels (B, L) with IGNORE off first sub-words; sentence weights (B,)."""
    loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")  # (B, L)
    counted = (labels != IGNORE).float() * weights[:, None]
    return (loss * counted).sum() / counted.sum().clamp(min=1.0)


def tag_examples(tokenizer: Tokenizer, sentences: Sequence[dict], tag_ids: dict[str, int], max_length: int):
    """(ids (N, L), labels (N, L), weights (N,)) from {"tokens", "tags"} sentences."""
    ids, word_index = encode_words(tokenizer, [s["tokens"] for s in sentences], max_length)
    labels = np.full(word_index.shape, IGNORE, dtype=np.int64)
    for i, s in enumerate(sentences):
        at = word_index[i] >= 0
        labels[i, at] = [tag_ids[s["tags"][w]] for w in word_index[i, at]]
    return ids, labels, np.ones(len(sentences))


def predict_words(
    model: torch.nn.Module | dict, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]], *, max_length: int,
    runtime: Runtime,
) -> list[np.ndarray]:
    """Per sentence, (words, T) tag probabilities; words cut off by `max_length` get tag 0 ("O"). `model`: a
    fine-tuned network, or the word-class tagger (a dict of arrays)."""
    if isinstance(model, dict):
        return wordclasses.predict(model, tokenizer, sentences)
    ids, word_index = encode_words(tokenizer, sentences, max_length)
    proba = probabilities(model, ids, runtime)  # (N, L, T)
    out = []
    for i, words in enumerate(sentences):
        p = np.zeros((len(words), proba.shape[-1]))
        p[:, 0] = 1.0
        at = word_index[i] >= 0
        p[word_index[i, at]] = proba[i, at]
        out.append(p)
    return out


def find_entities(
    model: torch.nn.Module | dict,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    tags: list[str],
    *,
    max_length: int,
    decoding: str,
    runtime: Runtime,
) -> list[list[dict]]:
    """Entity spans in raw strings: words are split as the tokenizer splits them (whitespace and
    punctuation), tagged with `decoding` (sslflow.text.decode), and each entity is {"text", "type", "start", "end"}
    in characters, end exclusive."""
    words = [tokenizer.pre_tokenizer.pre_tokenize_str(t) for t in texts]  # [(word, (start, end))]
    probas = predict_words(
        model, tokenizer, [[w for w, _ in ws] for ws in words], max_length=max_length, runtime=runtime
    )
    found = []
    for text, ws, p in zip(texts, words, probas, strict=True):
        iob2 = decode(p, tags, decoding)
        found.append([
            {"text": text[ws[a][1][0] : ws[b - 1][1][1]], "type": kind, "start": ws[a][1][0], "end": ws[b - 1][1][1]}
            for kind, a, b in spans(iob2)
        ])
    return found
