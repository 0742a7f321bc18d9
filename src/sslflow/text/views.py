"""Random views of a batch of token ids, on the batch's device, each sequence with its own random draw.

Text has no crop or colour jitter; the views here corrupt tokens instead, as UDA (Xie et al., NeurIPS 2020,
https://arxiv.org/abs/1904.12848) and EDA (Wei & Zou, EMNLP 2019, https://arxiv.org/abs/1901.11196) do:
[MASK] in place of a token (BERT's own corruption, so a pretrained encoder has seen it) and deletion. Ids are
(B, L) [CLS] ... [SEP] [PAD]...; special tokens are never changed and the shape is kept, so the attention
mask of a view is `ids != pad`.
"""

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from sslflow.text.tokenizer import CLS, MASK, PAD, SEP


@dataclass(frozen=True)
class Specials:
    pad: int
    mask: int
    kept: tuple[int, ...]  # [PAD], [CLS], [SEP]: never masked or deleted


def specials(tokenizer: Tokenizer) -> Specials:
    pad, cls, sep, mask = (tokenizer.token_to_id(t) for t in (PAD, CLS, SEP, MASK))
    return Specials(pad=pad, mask=mask, kept=(pad, cls, sep))


def _chosen(ids: torch.Tensor, p: float, special_ids: tuple[int, ...]) -> torch.Tensor:
    """(B, L) bool: each non-special token, independently with probability p."""
    ordinary = ~torch.isin(ids, torch.tensor(special_ids, device=ids.device))
    return ordinary & (torch.rand(ids.shape, device=ids.device) < p)


def mask_tokens(ids: torch.Tensor, p: float, mask_id: int, special_ids: tuple[int, ...]) -> torch.Tensor:
    """A copy of ids (B, L) with about a fraction p of the non-special tokens replaced by `mask_id`."""
    return ids.masked_fill(_chosen(ids, p, special_ids), mask_id)


def delete_tokens(ids: torch.Tensor, p: float, special_ids: tuple[int, ...], pad_id: int) -> torch.Tensor:
    """A copy of ids (B, L) with about a fraction p of the non-special tokens deleted: the rest, [SEP]
    included, shift left in order and the freed positions at the end become `pad_id`."""
    kept = ~_chosen(ids, p, special_ids)
    length = ids.shape[1]
    position = torch.arange(length, device=ids.device).expand_as(ids)
    # sort keys: a kept token's position, a deleted one's L + position (all distinct), so the kept come first,
    # in order
    order = torch.argsort(torch.where(kept, position, position + length), dim=1)
    out = ids.gather(1, order)
    return out.masked_fill(position >= kept.sum(1, keepdim=True), pad_id)
