"""Texts to fixed-length id arrays: packed MLM chunks, overlapping document chunks, word-aligned sentences.

Every sequence is [CLS] ... [SEP] padded with [PAD] (id 0) to `max_length`; `stride` tokens are shared by
consecutive chunks of one long text, so no token is only ever seen at a chunk edge.
"""

from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer

from sslflow.text.tokenizer import CLS, PAD, SEP


def _windows(ids: list[int], width: int, stride: int) -> list[list[int]]:
    step = width - stride
    starts = range(0, max(len(ids) - stride, 1), step)
    return [ids[s : s + width] for s in starts]


def _frame(tokenizer: Tokenizer, pieces: list[list[int]], max_length: int) -> np.ndarray:
    """(len(pieces), max_length) int32: [CLS] piece [SEP] [PAD]..."""
    cls, sep, pad = (tokenizer.token_to_id(t) for t in (CLS, SEP, PAD))
    out = np.full((len(pieces), max_length), pad, dtype=np.int32)
    for i, piece in enumerate(pieces):
        row = [cls, *piece, sep]
        out[i, : len(row)] = row
    return out


def pack_chunks(tokenizer: Tokenizer, texts: Sequence[str], max_length: int, stride: int) -> np.ndarray:
    """MLM input: all texts joined by [SEP] into one stream, cut into overlapping full-length chunks
    (as BERT packs its pretraining text), so no compute goes to padding. (M, max_length) int32."""
    sep = tokenizer.token_to_id(SEP)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream += [*encoding.ids, sep]
    return _frame(tokenizer, _windows(stream[:-1], max_length - 2, stride), max_length)


def chunk_documents(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each document cut into its own overlapping chunks: ids (M, max_length) int32 and, per chunk, the
    index of its document (M,) int64. An empty document still gives one chunk."""
    pieces, owner = [], []
    for d, encoding in enumerate(tokenizer.encode_batch(list(texts), add_special_tokens=False)):
        for piece in _windows(encoding.ids, max_length - 2, stride):
            pieces.append(piece)
            owner.append(d)
    return _frame(tokenizer, pieces, max_length), np.array(owner, dtype=np.int64)


def encode_words(
    tokenizer: Tokenizer, sentences: Sequence[Sequence[str]], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pre-split words to ids (N, max_length) int32 and word_index (N, max_length) int64: the word a
    position is the first sub-word of, else -1. Words past `max_length` are cut (word_index lacks them)."""
    pieces, firsts = [], []
    for encoding in tokenizer.encode_batch(
        [list(s) for s in sentences], is_pretokenized=True, add_special_tokens=False
    ):
        ids, words = encoding.ids[: max_length - 2], encoding.word_ids[: max_length - 2]
        pieces.append(ids)
        firsts.append(
            [w if w is not None and (j == 0 or words[j - 1] != w) else -1 for j, w in enumerate(words)]
        )
    word_index = np.full((len(pieces), max_length), -1, dtype=np.int64)
    for i, first in enumerate(firsts):
        word_index[i, 1 : 1 + len(first)] = first  # position 0 is [CLS]
    return _frame(tokenizer, pieces, max_length), word_index
