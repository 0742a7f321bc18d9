"""The decoding NER uses, from the settings to the spans: the registered model finds entities in raw strings with
the decoding saved beside its weights, and the per-type F1 of evaluate reaches the DVC metrics."""

import numpy as np
import pandas as pd
import pytest

import sslflow.text.ner as ner
from sslflow.text.entities import write_all
from sslflow.tracking.text_pyfunc import TextModel

TAGS = ["O", "B-PER", "I-PER"]
TEXT = "Mary Smith went home"


@pytest.fixture
def ambiguous(monkeypatch):
    """Word tag probabilities whose argmax reads `O I-PER O O`: argmax finds "Smith", Viterbi "Mary Smith"."""
    proba = np.array([[0.6, 0.3, 0.1], [0.02, 0.02, 0.96], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]])
    monkeypatch.setattr(ner, "predict_words", lambda model, tokenizer, sentences, **kw: [proba for _ in sentences])


class Splitter:
    """The tokenizer's one use in find_entities: split a string into words with character offsets."""

    class pre_tokenizer:  # noqa: N801 (the attribute name of tokenizers.Tokenizer)
        @staticmethod
        def pre_tokenize_str(text):
            at, out = 0, []
            for word in text.split():
                at = text.index(word, at)
                out.append((word, (at, at + len(word))))
                at += len(word)
            return out


@pytest.mark.parametrize(("decoding", "found"), [("argmax", "Smith"), ("viterbi", "Mary Smith")])
def test_the_registered_model_finds_spans_with_its_saved_decoding(ambiguous, decoding, found):
    served = TextModel()
    served.model, served.tokenizer, served.classes = None, Splitter(), TAGS
    served.encoding = {"task": "token-classification", "max_length": 16, "decoding": decoding}
    out = served.predict(None, pd.DataFrame({"text": [TEXT]}))
    start = TEXT.index(found)
    assert out["entities"][0] == [{"text": found, "type": "PER", "start": start, "end": start + len(found)}]


def test_ner_metrics_carry_f1_per_entity_type(tmp_path):
    tags = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    truth = [["B-PER", "I-PER", "B-LOC"], ["B-LOC", "I-LOC", "O"]]
    onehot = np.eye(len(tags))
    right = [onehot[[tags.index(t) for t in s]] for s in truth]
    wrong_loc = [onehot[[3, 4, 0]], onehot[[0, 0, 0]]]  # PER found, no LOC
    metrics = write_all(truth, {"ssl": right, "scratch": wrong_loc}, tags, tmp_path, 5, decoding="viterbi")
    assert metrics["ssl"]["f1_LOC"] == metrics["ssl"]["f1_PER"] == 1.0
    assert metrics["scratch"]["f1_PER"] == 1.0 and metrics["scratch"]["f1_LOC"] == 0.0
    assert set(metrics["ssl"]) - {"entity_f1", "precision", "recall", "macro_f1", "min_class_recall"} == {
        "f1_LOC",
        "f1_PER",
    }
    assert "| LOC |" in (tmp_path / "classification.md").read_text()
