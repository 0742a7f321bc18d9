"""The registered text model: an MLflow pyfunc that takes raw strings and does its own tokenization.

Logged as "models from code" (this file) with the sslflow package as its code; the weights (safetensors),
the WordPiece tokenizer, the encoding settings (for NER also the tag decoding fine-tuning chose) and the class
or tag names are its artifacts.
Input: a column `text` of strings. Output, text-classification: `label` and `proba_<class>` per class;
token-classification: `entities`, a list of {"text", "type", "start", "end"} (character offsets) per string.
"""

import json
from pathlib import Path

import mlflow
import pandas as pd
import torch

from sslflow.runtime import Runtime
from sslflow.text.classify import predict_documents
from sslflow.text.ner import find_entities
from sslflow.text.tokenizer import load_tokenizer
from sslflow.text.wordclasses import load_fitted

CPU = Runtime(
    torch.device("cpu"), torch.float32, pin_memory=False, channels_last=False, compile=False, num_workers=0
)


class TextModel(mlflow.pyfunc.PythonModel):
    # The model is logged with an explicit signature, which MLflow enforces on every input; its type-hint
    # validation (and the warning asking for type hints, printed at every log and load) does not apply.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        weights = Path(context.artifacts["weights"])
        self.model = load_fitted(weights.parent, weights.stem)
        self.tokenizer = load_tokenizer(Path(context.artifacts["tokenizer"]))
        self.encoding = json.loads(Path(context.artifacts["encoding"]).read_text())
        self.classes = json.loads(Path(context.artifacts["classes"]).read_text())

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]  # MLflow has enforced the `text` column
        if self.encoding["task"] == "token-classification":
            found = find_entities(
                self.model,
                self.tokenizer,
                texts,
                self.classes,
                max_length=self.encoding["max_length"],
                decoding=self.encoding["decoding"],
                runtime=CPU,
            )
            return pd.DataFrame({"entities": found})
        columns = [f"proba_{c}" for c in self.classes]
        if not texts:
            return pd.DataFrame(
                {"label": pd.Series(dtype=str), **{c: pd.Series(dtype=float) for c in columns}}
            )
        proba = predict_documents(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.encoding["max_length"],
            stride=self.encoding["stride"],
            runtime=CPU,
        )
        result = pd.DataFrame(proba, columns=columns)
        result.insert(0, "label", [self.classes[i] for i in proba.argmax(1)])
        return result


mlflow.models.set_model(TextModel())
