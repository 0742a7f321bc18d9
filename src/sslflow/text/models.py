"""The text encoder (a BERT built from a config, never downloaded) and the heads fine-tuned on it.

Models are saved as safetensors plus a JSON config (sslflow.artifacts), so they rebuild without params.
"""

from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel

from sslflow.artifacts import load_config, load_state, save_module
from sslflow.errors import SslflowError
from sslflow.text.config import BertSize


def bert_config(size: BertSize, vocab_size: int, max_length: int) -> dict:
    """The BertConfig arguments, as a plain dict so that it can be saved next to the weights."""
    return {
        "vocab_size": vocab_size, "hidden_size": size.hidden_size, "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads, "intermediate_size": size.intermediate_size,
        "hidden_dropout_prob": size.dropout, "attention_probs_dropout_prob": size.dropout,
        "max_position_embeddings": max_length, "type_vocab_size": 1, "pad_token_id": 0,
    }


def build_bert(config: dict) -> BertModel:
    return BertModel(BertConfig(**config), add_pooling_layer=False)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, H) states, (B, L) attention mask -> (B, H) mean over real tokens."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class SequenceClassifier(nn.Module):
    """BERT, mean pooling over tokens, standardisation, a linear layer: one label per sequence. Mean pooling
    because MLM alone (no next-sentence task) never trains the [CLS] state. The pooled MLM states share a
    large common component and differ in small directions; standardising each feature (a BatchNorm without
    affine parameters) lets a head trained on a few labels see those differences at a usable scale."""

    def __init__(self, bert: BertModel, num_labels: int):
        super().__init__()
        self.bert = bert
        self.norm = nn.BatchNorm1d(bert.config.hidden_size, affine=False)
        self.dropout = nn.Dropout(bert.config.hidden_dropout_prob)
        self.head = nn.Linear(bert.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        if self.training and len(pooled) == 1:  # one sequence has no batch statistics: use the running ones
            pooled = nn.functional.batch_norm(pooled, self.norm.running_mean, self.norm.running_var, eps=self.norm.eps)
        else:
            pooled = self.norm(pooled)
        return self.head(self.dropout(pooled))


class TokenClassifier(nn.Module):
    """BERT and a linear layer on every position: (B, L) ids -> (B, L, num_labels) tag logits."""

    def __init__(self, bert: BertModel, num_labels: int):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(bert.config.hidden_dropout_prob)
        self.head = nn.Linear(bert.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(hidden))


HEADS = {"text-classification": SequenceClassifier, "token-classification": TokenClassifier}


def save_encoder(bert: BertModel, config: dict, tokenizer_sha256: str, directory: Path) -> None:
    save_module(bert, {"bert": config, "tokenizer_sha256": tokenizer_sha256}, directory, "encoder")


def load_encoder(directory: Path, tokenizer_sha256: str) -> tuple[BertModel, dict]:
    """The pretrained BERT and its config; it must have been trained with this very tokenizer."""
    saved = load_config(directory, "encoder")
    if saved.get("tokenizer_sha256") != tokenizer_sha256:
        raise SslflowError(f"{directory}: the encoder was pretrained with another tokenizer; rerun pretrain")
    return load_state(build_bert(saved["bert"]), directory, "encoder"), saved["bert"]


def save_classifier(model: nn.Module, config: dict, task: str, directory: Path, name: str) -> None:
    save_module(model, {"bert": config, "task": task, "num_labels": model.head.out_features}, directory, name)


def load_classifier(directory: Path, name: str) -> nn.Module:
    saved = load_config(directory, name)
    model = HEADS[saved["task"]](build_bert(saved["bert"]), saved["num_labels"])
    return load_state(model, directory, name).eval()
