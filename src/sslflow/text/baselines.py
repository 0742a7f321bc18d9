"""Classical baselines on the same labels, stored without pickle (arrays and strings in one .npz).

Documents: TF-IDF (vocabulary and IDF from the unlabeled pool) + multinomial logistic regression.
Sentences: per-word logistic regression on the word, its shape, prefix and suffix, and its neighbours;
each word is tagged on its own (no sequence model), then the tags are read as IOB2. `extra` adds feature strings
per word (the ssl tagger's word classes, sslflow.text.wordclasses).
"""

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from sslflow.atomic import write_with
from sslflow.errors import SslflowError


def _linear(x, y: np.ndarray, num_classes: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef (K, F), intercept (K,)); classes absent from `y` get -inf logits."""
    coef = np.zeros((num_classes, x.shape[1]))
    intercept = np.full(num_classes, -np.inf)
    present = np.unique(y)
    if len(present) == 1:
        intercept[present[0]] = 0.0
        return coef, intercept
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
    if len(clf.classes_) == 2:  # sklearn keeps one row for two classes: the logit difference
        coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
        intercept[clf.classes_[0]] = 0.0
    else:
        coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
    return coef, intercept


def _tfidf(vocabulary: np.ndarray, idf: np.ndarray) -> TfidfVectorizer:
    vectorizer = TfidfVectorizer(sublinear_tf=True, vocabulary={w: i for i, w in enumerate(vocabulary)})
    vectorizer.idf_ = idf
    return vectorizer


def fit_tfidf_logreg(
    pool: Sequence[str], texts: Sequence[str], labels: np.ndarray, num_classes: int, c: float, seed: int
) -> dict:
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2).fit(pool)
    vocabulary = vectorizer.get_feature_names_out().astype(str)  # object arrays would need pickle
    coef, intercept = _linear(vectorizer.transform(texts), labels, num_classes, c, seed)
    return {
        "kind": np.array("tfidf"),
        "features": vocabulary,
        "idf": vectorizer.idf_,
        "coef": coef,
        "intercept": intercept,
    }


def _shape(word: str) -> str:
    """ "McDonald's" -> "XxXx'x": character classes with runs collapsed."""
    classes = re.sub(r"[A-Z]", "X", re.sub(r"[a-z]", "x", re.sub(r"[0-9]", "d", word)))
    return re.sub(r"(.)\1+", r"\1", classes)


def word_features(tokens: Sequence[str], i: int) -> list[str]:
    w = tokens[i]
    prev = tokens[i - 1].lower() if i > 0 else "<s>"
    nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else "</s>"
    return [f"w={w.lower()}", f"shape={_shape(w)}", f"pre={w[:3].lower()}", f"suf={w[-3:].lower()}", f"prev={prev}",
            f"next={nxt}", f"title={w.istitle()}", f"upper={w.isupper()}", f"first={i == 0}"]


Extra = Sequence[Sequence[Sequence[str]]] | None  # per sentence, per word: more feature strings (word classes)


def _features(sentences: Sequence[Sequence[str]], extra: Extra) -> Iterator[list[str]]:
    """Each word's feature strings, sentence after sentence."""
    for s, tokens in enumerate(sentences):
        for i in range(len(tokens)):
            yield word_features(tokens, i) + (list(extra[s][i]) if extra is not None else [])


def _word_matrix(sentences: Sequence[Sequence[str]], index: dict[str, int], extra: Extra) -> sparse.csr_matrix:
    rows, cols = [], []
    for n, features in enumerate(_features(sentences, extra)):
        for f in features:
            if f in index:
                rows.append(n)
                cols.append(index[f])
    words = sum(len(tokens) for tokens in sentences)
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(words, len(index)))


def fit_word_logreg(
    sentences: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]],
    num_tags: int,
    c: float,
    seed: int,
    extra: Extra = None,
) -> dict:
    features = sorted({f for word in _features(sentences, extra) for f in word})
    x = _word_matrix(sentences, {f: i for i, f in enumerate(features)}, extra)
    coef, intercept = _linear(
        x, np.concatenate([np.asarray(t, dtype=np.int64) for t in tags]), num_tags, c, seed
    )
    return {
        "kind": np.array("words"),
        "features": np.array(features, dtype=str),
        "coef": coef,
        "intercept": intercept,
    }


def predict_documents(model: dict, texts: Sequence[str]) -> np.ndarray:
    x = _tfidf(model["features"], model["idf"]).transform(texts)
    return softmax(x @ model["coef"].T + model["intercept"], axis=1)


def predict_words(model: dict, sentences: Sequence[Sequence[str]], extra: Extra = None) -> list[np.ndarray]:
    """Per sentence, (words, T) tag probabilities."""
    x = _word_matrix(sentences, {f: i for i, f in enumerate(model["features"])}, extra)
    proba = softmax(x @ model["coef"].T + model["intercept"], axis=1)
    return np.split(proba, np.cumsum([len(s) for s in sentences])[:-1])


def save(model: dict, path: Path) -> None:
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **model)

    write_with(path, writer)


def load(path: Path) -> dict:
    if not path.is_file():
        raise SslflowError(f"classical model not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
