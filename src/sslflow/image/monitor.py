"""How good an encoder's embeddings are, measured on the labeled val split only."""

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int, seed: int) -> float:
    """5-fold cross-validated cosine kNN accuracy on (N, D) features: no training labels involved."""
    features = features / np.linalg.norm(features, axis=1, keepdims=True).clip(min=1e-12)
    folds = min(5, int(np.bincount(labels).min()))
    if folds < 2:
        return float("nan")
    knn = KNeighborsClassifier(n_neighbors=min(k, len(labels) - len(labels) // folds - 1), weights="distance")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(knn, features, labels, cv=cv).mean())
