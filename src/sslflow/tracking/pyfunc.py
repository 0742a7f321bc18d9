"""The registered model: an MLflow pyfunc that takes raw uint8 images and does its own preprocessing.

Logged as "models from code" (this file), so no pickled Python object is stored; weights are safetensors.
Input: uint8 tensor (N, C, H, W) in the training shape. Output: one row per image with `label` (the
class name) and `proba_<class>` for every class.
"""

import json

import mlflow
import numpy as np
import pandas as pd
import torch

from sslflow.artifacts import load_classifier
from sslflow.embed import apply
from sslflow.runtime import Runtime


class ImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from pathlib import Path

        weights = Path(context.artifacts["weights"])
        self.model = load_classifier(weights.parent, weights.stem)
        self.classes = json.loads(Path(context.artifacts["classes"]).read_text())
        self.runtime = Runtime(torch.device("cpu"), torch.float32, False, False, False, 0)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = np.asarray(model_input)
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        proba = torch.softmax(torch.from_numpy(apply(self.model, images, self.runtime)), dim=1).numpy()
        frame = pd.DataFrame(proba, columns=[f"proba_{c}" for c in self.classes])
        frame.insert(0, "label", [self.classes[i] for i in proba.argmax(1)])
        return frame


mlflow.models.set_model(ImageClassifier())
