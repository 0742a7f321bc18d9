"""The two text tasks behind one interface, so that the stages do not branch on `text.task`.

A task says what a label is (a document's class, or a sentence's tags), how labeled examples become
training arrays, how a model's test predictions are scored, and which classical baseline it has.
Probabilities are (N, K) for documents and, for sentences, a list of (words, T) arrays. `encoding` is the
fine-tuned models' encoding.json: how text becomes ids and (sentences: its "decoding") probabilities become tags.
"""

import numpy as np
from sklearn.metrics import f1_score
from tokenizers import Tokenizer

from sslflow import report
from sslflow.text import baselines, entities, wordclasses
from sslflow.text.classify import chunk_examples, predict_documents, weighted_ce
from sslflow.text.decode import decode
from sslflow.text.models import SequenceClassifier, TokenClassifier
from sslflow.text.ner import predict_words, tag_examples, token_ce


class Documents:
    name = "text-classification"
    head = SequenceClassifier
    loss = staticmethod(weighted_ce)

    def budget_labels(self, examples: list[dict]) -> np.ndarray:
        return np.array([e["label"] for e in examples], dtype=np.int64)

    def budget_classes(self, classes: list[str]) -> list[str]:
        return classes

    def training_arrays(self, tokenizer: Tokenizer, examples: list[dict], classes: list[str], encoding: dict):
        return chunk_examples(
            tokenizer,
            [e["text"] for e in examples],
            self.budget_labels(examples),
            encoding["max_length"],
            encoding["stride"],
        )

    def predict(self, model, tokenizer: Tokenizer, examples: list[dict], encoding: dict, runtime):
        return predict_documents(model, tokenizer, [e["text"] for e in examples], max_length=encoding["max_length"],
                                 stride=encoding["stride"], runtime=runtime)

    def fit_classical(
        self, pool: list[dict], labeled: list[dict], classes: list[str], c: float, seed: int
    ) -> dict:
        texts = [e["text"] for e in labeled]
        return baselines.fit_tfidf_logreg(
            [e["text"] for e in pool], texts, self.budget_labels(labeled), len(classes), c, seed
        )

    def predict_classical(self, model: dict, examples: list[dict]):
        return baselines.predict_documents(model, [e["text"] for e in examples])

    def score(self, examples: list[dict], proba, classes: list[str], encoding: dict) -> dict[str, float]:
        return {
            "val_macro_f1": float(
                f1_score(
                    self.budget_labels(examples), proba.argmax(1), average="macro", labels=range(len(classes))
                )
            )
        }

    def write_reports(
        self, examples: list[dict], probas: dict, classes: list[str], encoding: dict, reports_dir, pr_points: int
    ) -> dict:
        return report.write_all(self.budget_labels(examples), probas, classes, reports_dir, pr_points)

    def raw_inputs(self, examples: list[dict]) -> list[str]:
        return [e["text"] for e in examples]


class Sentences:
    """A budget of n "labels per class" is n labeled sentences: a sentence has no single class."""

    name = "token-classification"
    head = TokenClassifier
    loss = staticmethod(token_ce)

    def budget_labels(self, examples: list[dict]) -> np.ndarray:
        return np.zeros(len(examples), dtype=np.int64)

    def budget_classes(self, classes: list[str]) -> list[str]:
        return ["sentence"]

    def training_arrays(self, tokenizer: Tokenizer, examples: list[dict], classes: list[str], encoding: dict):
        return tag_examples(
            tokenizer, examples, {t: i for i, t in enumerate(classes)}, encoding["max_length"]
        )

    def predict(self, model, tokenizer: Tokenizer, examples: list[dict], encoding: dict, runtime):
        return predict_words(
            model,
            tokenizer,
            [e["tokens"] for e in examples],
            max_length=encoding["max_length"],
            runtime=runtime,
        )

    def tag_ids(self, examples: list[dict], classes: list[str]) -> list[list[int]]:
        index = {t: i for i, t in enumerate(classes)}
        return [[index[t] for t in e["tags"]] for e in examples]

    def fit_classical(
        self, pool: list[dict], labeled: list[dict], classes: list[str], c: float, seed: int
    ) -> dict:
        tags = self.tag_ids(labeled, classes)
        return baselines.fit_word_logreg([e["tokens"] for e in labeled], tags, len(classes), c, seed)

    def fit_tagger(self, encoder, tokenizer: Tokenizer, pool: list[dict], labeled: list[dict], classes: list[str],
                   encoding: dict, cfg, seed: int) -> dict:
        """The ssl word-class tagger (sslflow.text.wordclasses): classes from `pool`'s words, unlabeled."""
        return wordclasses.fit_tagger(
            encoder, tokenizer, [e["tokens"] for e in pool], [e["tokens"] for e in labeled],
            self.tag_ids(labeled, classes), num_tags=len(classes), classes=cfg.word_classes,
            max_length=encoding["max_length"], c=cfg.classical_c, seed=seed,
        )

    def predict_classical(self, model: dict, examples: list[dict]):
        return baselines.predict_words(model, [e["tokens"] for e in examples])

    def score(self, examples: list[dict], probas, classes: list[str], encoding: dict) -> dict[str, float]:
        pred = [decode(p, classes, encoding["decoding"]) for p in probas]
        return {
            "val_entity_f1": entities.entity_report([e["tags"] for e in examples], pred)["summary"][
                "entity_f1"
            ]
        }

    def write_reports(
        self, examples: list[dict], probas: dict, classes: list[str], encoding: dict, reports_dir, pr_points: int
    ) -> dict:
        return entities.write_all(
            [e["tags"] for e in examples], probas, classes, reports_dir, pr_points, decoding=encoding["decoding"]
        )

    def raw_inputs(self, examples: list[dict]) -> list[str]:
        return [" ".join(e["tokens"]) for e in examples]


TASKS = {t.name: t for t in (Documents(), Sentences())}
