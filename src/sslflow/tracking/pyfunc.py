"""The registered model: an MLflow pyfunc that takes raw uint8 images and does its own preprocessing.

Logged as "models from code" (this file) with the sslflow package as its code, so it loads without the
project's stages or a pickled Python object; weights are safetensors.
Input: uint8 tensor (N, C, H, W) in the training shape; MLflow enforces dtype and shape from the signature.
Over REST, send integers 0-255: MLflow's JSON parser casts numbers to uint8, so a fraction is truncated, not
rejected (an integer out of range, or a wrong shape, is a 400 error).
Output: one row per image with `label` (the class name) and `proba_<class>` for every class.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from sslflow.artifacts import load_classifier
from sslflow.image.embed import apply
from sslflow.runtime import Runtime

CPU = Runtime(torch.device("cpu"), torch.float32, pin_memory=False, channels_last=False, compile=False, num_workers=0)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    # The model is logged with an explicit signature, which MLflow enforces on every input; its type-hint
    # validation (and the warning asking for type hints, printed at every log and load) does not apply.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        weights = Path(context.artifacts["weights"])
        self.model = load_classifier(weights.parent, weights.stem)
        self.classes = json.loads(Path(context.artifacts["classes"]).read_text())
        self.columns = ["label", *(f"proba_{c}" for c in self.classes)]

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = np.asarray(model_input)  # (N, C, H, W) uint8
        if len(images) == 0:
            return pd.DataFrame({c: pd.Series(dtype=str if c == "label" else float) for c in self.columns})
        logits = torch.from_numpy(apply(self.model, images, CPU))
        proba = torch.softmax(logits.double(), dim=1).numpy()  # (N, K) float64, the signature's double
        frame = pd.DataFrame(proba, columns=self.columns[1:])
        frame.insert(0, "label", [self.classes[i] for i in proba.argmax(1)])
        return frame


mlflow.models.set_model(ImageClassifier())
