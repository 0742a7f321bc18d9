"""The classical baseline: multinomial logistic regression on raw pixels, stored without pickle."""

from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression

from sslflow.atomic import write_with
from sslflow.errors import SslflowError


def _pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def fit_logreg(images: np.ndarray, labels: np.ndarray, num_classes: int, c: float, seed: int) -> dict[str, np.ndarray]:
    """Returns {"coef": (K, P), "intercept": (K,)}; classes missing from `labels` get -inf logits."""
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(_pixels(images), labels)
    coef = np.zeros((num_classes, _pixels(images[:1]).shape[1]), dtype=np.float64)
    intercept = np.full(num_classes, -np.inf)
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: logit difference
        coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        intercept[clf.classes_[0]] = 0.0
    else:
        coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
    return {"coef": coef, "intercept": intercept}


def predict_proba(model: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    return softmax(_pixels(images) @ model["coef"].T + model["intercept"], axis=1)


def save(model: dict[str, np.ndarray], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, np.savez would append .npz to it
            np.savez(f, **model)

    write_with(path, write)


def load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SslflowError(f"classical model not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
