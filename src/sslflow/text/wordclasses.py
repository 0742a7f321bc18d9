"""Word classes from the pretrained encoder: the ssl NER model at small label budgets.

Each word gets a class learned without labels: k-means over the encoder's input representation of its first
sub-word (BERT's layer 0: word-piece plus position embedding, layer-normalised), fit on every word of the train
split, labels unread. The tagger is the classical per-word logistic regression (sslflow.text.baselines) with the
classes of the word and of its two neighbours as extra features: word clusters as features for a linear tagger,
as Brown clusters were used for NER (Turian, Ratinov and Bengio, ACL 2010). So its lift over the classical
baseline is exactly what the pretraining bought; bench/ner.md has the measurements that chose it over
fine-tuning the encoder at these budgets.

The model is one dict of arrays (stored without pickle, like the baselines): the embedding tables, the
centroids and the linear tagger. Predicting needs numpy and the tokenizer only.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from tokenizers import Tokenizer
from transformers import BertModel

from sslflow.text import baselines
from sslflow.text.encode import encode_words
from sslflow.text.models import load_classifier


def tables(bert: BertModel) -> dict[str, np.ndarray]:
    """The arrays that make BERT's layer 0 (embeddings.word/position/token_type, LayerNorm)."""
    emb = bert.embeddings
    return {
        "word_embeddings": emb.word_embeddings.weight.detach().float().numpy(),
        "position_embeddings": emb.position_embeddings.weight.detach().float().numpy(),
        "type_embedding": emb.token_type_embeddings.weight[0].detach().float().numpy(),
        "norm_weight": emb.LayerNorm.weight.detach().float().numpy(),
        "norm_bias": emb.LayerNorm.bias.detach().float().numpy(),
        "norm_eps": np.array(emb.LayerNorm.eps),
    }


def input_states(model: dict, ids: np.ndarray) -> np.ndarray:
    """ids (N, L) -> (N, L, H): what `bert.embeddings(ids)` computes (token type 0, positions 0..L-1)."""
    x = model["word_embeddings"][ids] + model["position_embeddings"][: ids.shape[1]] + model["type_embedding"]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + model["norm_eps"]) * model["norm_weight"] + model["norm_bias"]


def word_states(model: dict, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per sentence, (words, H) layer-0 states of each word's first sub-word; NaN rows for words past
    max_length (they get no class)."""
    ids, word_index = encode_words(tokenizer, sentences, int(model["max_length"]))
    out = []
    for a in range(0, len(ids), 256):  # bounded memory: (256, L, H) floats at a time
        states = input_states(model, ids[a : a + 256])
        for i in range(len(states)):
            row = np.full((len(sentences[a + i]), states.shape[-1]), np.nan)
            at = word_index[a + i] >= 0
            row[word_index[a + i, at]] = states[i, at]
            out.append(row)
    return out


def assign(model: dict, states: np.ndarray) -> np.ndarray:
    """(n, H) states -> (n,) nearest centroid; -1 for NaN rows."""
    known = ~np.isnan(states).any(1)
    out = np.full(len(states), -1)
    if known.any():
        x, c = states[known], model["centroids"]
        out[known] = ((x * x).sum(1, keepdims=True) - 2 * x @ c.T + (c * c).sum(1)).argmin(1)
    return out


def class_features(model: dict, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    """Per sentence, per word: the classes of the word and its neighbours as feature strings."""
    out = []
    for states in word_states(model, tokenizer, sentences):
        k = [str(c) if c >= 0 else "none" for c in assign(model, states)]
        padded = ["<s>", *k, "</s>"]
        out.append([[f"class={k[i]}", f"prev_class={padded[i]}", f"next_class={padded[i + 2]}"] for i in range(len(k))])
    return out


def fit_tagger(
    bert: BertModel,
    tokenizer: Tokenizer,
    pool: Sequence[Sequence[str]],
    labeled: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]],
    *,
    num_tags: int,
    classes: int,
    max_length: int,
    c: float,
    seed: int,
) -> dict:
    """Word classes (k-means with `classes` centroids over the words of `pool`, unlabeled) and the per-word
    logistic regression on the `labeled` sentences' word features plus classes."""
    model = {**tables(bert), "max_length": np.array(max_length)}
    points = np.concatenate(word_states(model, tokenizer, pool))
    points = points[~np.isnan(points).any(1)]
    k = min(classes, len(np.unique(points, axis=0)))  # a tiny pool has fewer distinct words than classes
    kmeans = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096).fit(points)
    model["centroids"] = kmeans.cluster_centers_
    tagger = baselines.fit_word_logreg(
        labeled, tags, num_tags, c, seed, extra=class_features(model, tokenizer, labeled)
    )
    return {**model, **tagger, "kind": np.array("word-classes")}


def predict(model: dict, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Per sentence, (words, T) tag probabilities."""
    return baselines.predict_words(model, sentences, extra=class_features(model, tokenizer, sentences))


def load_fitted(directory: Path, name: str) -> torch.nn.Module | dict:
    """A model finetune saved: this tagger (`name.npz`) or a fine-tuned network (sslflow.text.models)."""
    tagger = directory / f"{name}.npz"
    return baselines.load(tagger) if tagger.is_file() else load_classifier(directory, name)
