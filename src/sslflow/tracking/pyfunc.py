"""The registered model: an MLflow pyfunc that takes raw uint8 images and does its own preprocessing.

Logged as "models from code" (this file) with the sslflow package as its code, so it loads without the
project's stages or a pickled Python object; weights are safetensors.
Input: uint8 tensor (N, C, H, W) in the training shape; MLflow enforces dtype and shape from the signature.
A single-channel model also takes grayscale images without the channel axis, (N, H, W), where MLflow lets them
through (a model logged without an input schema); any other shape is one short line naming the one expected.
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

from sslflow.artifacts import load_classifier, load_config
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
        self.shape = _input_shape(weights, load_config(weights.parent, weights.stem)["encoder"]["in_channels"])

    def images(self, model_input) -> np.ndarray:
        """uint8 (N, C, H, W) from the input, which may lack the channel axis when C is 1; else one short line."""
        images = np.asarray(model_input)
        c, h, w = self.shape
        if images.ndim == 3 and c == 1:
            images = images[:, None]  # grayscale without its channel axis: unambiguous for a 1-channel model
        size = f"{h or 'H'}, {w or 'W'}"
        expected = f"(N, {c}, {size})" + (f" or (N, {size})" if c == 1 else "")
        fits = (
            images.ndim == 4
            and images.shape[1] == c
            and all(want in (None, got) for want, got in zip((h, w), images.shape[2:], strict=True))
        )
        if not fits:
            raise mlflow.MlflowException.invalid_parameter_value(
                f"expected uint8 images of shape {expected}, got an array of shape {np.shape(model_input)}"
            )
        if images.dtype != np.uint8:  # JSON numbers without a schema: whole numbers 0-255 only
            if not np.issubdtype(images.dtype, np.number) or (images.size and not _is_pixels(images)):
                raise mlflow.MlflowException.invalid_parameter_value(
                    f"expected uint8 pixel values 0-255 of shape {expected}, got {images.dtype} values"
                )
            images = images.astype(np.uint8)
        return images

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        images = self.images(model_input)  # (N, C, H, W) uint8
        if len(images) == 0:
            return pd.DataFrame({c: pd.Series(dtype=str if c == "label" else float) for c in self.columns})
        logits = torch.from_numpy(apply(self.model, images, CPU))
        proba = torch.softmax(logits.double(), dim=1).numpy()  # (N, K) float64, the signature's double
        frame = pd.DataFrame(proba, columns=self.columns[1:])
        frame.insert(0, "label", [self.classes[i] for i in proba.argmax(1)])
        return frame


def _is_pixels(images: np.ndarray) -> bool:
    return bool(np.all(np.mod(images, 1) == 0) and images.min() >= 0 and images.max() <= 255)


def _input_shape(weights: Path, channels: int) -> tuple[int, int | None, int | None]:
    """(C, H, W) from the logged model's metadata `input_shape` or its input signature (the artifacts sit in
    <model>/artifacts/), else (C, None, None)."""
    try:
        logged = mlflow.models.Model.load(weights.parent.parent / "MLmodel")
        shape = (logged.metadata or {}).get("input_shape")
        if shape is None and logged.get_input_schema() is not None:
            shape = logged.get_input_schema().inputs[0].shape[1:]
        shape = [int(d) for d in shape or ()]
    except Exception:  # loaded outside a logged model folder: the channels from the config only
        shape = []
    if len(shape) == 3 and shape[0] == channels:
        return channels, shape[1] if shape[1] > 0 else None, shape[2] if shape[2] > 0 else None
    return channels, None, None


mlflow.models.set_model(ImageClassifier())
