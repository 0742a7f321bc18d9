"""Word-level tag probabilities to a valid IOB2 sequence: constrained Viterbi decoding.

Taking the argmax tag of each word can give I-X after O or after another type, which strict seqeval either
counts as an error or reads as a new entity. `viterbi` returns instead the valid sequence (I-X only after B-X or
I-X, never first) with the highest product of the model's per-word probabilities: a hard constraint on the
transitions, no learned transition scores (a CRF layer would learn them). `decode` is the one entry point:
the setting `text.finetune.decoding` names the decoder, and evaluate and the registered model call it alike.
"""

import numpy as np

from sslflow.text.tags import to_iob2


def follows(tags: list[str]) -> np.ndarray:
    """(K, K) booleans: `follows(tags)[i, j]` is True when tag j may come right after tag i in IOB2."""
    out = np.ones((len(tags), len(tags)), dtype=bool)
    for j, tag in enumerate(tags):
        if tag.startswith("I-"):
            out[:, j] = [prev != "O" and prev[2:] == tag[2:] for prev in tags]
    return out


def may_start(tags: list[str]) -> np.ndarray:
    """(K,) booleans: the tags a sentence may open with (all but I-X)."""
    return np.array([not tag.startswith("I-") for tag in tags])


def viterbi(proba: np.ndarray, tags: list[str]) -> list[int]:
    """The tag indices of the valid IOB2 sequence with the highest product of `proba` (words, K) along it."""
    if len(proba) == 0:
        return []
    log = np.log(np.clip(proba, 1e-12, None))
    transition = np.where(follows(tags), 0.0, -np.inf)
    score = log[0] + np.where(may_start(tags), 0.0, -np.inf)
    back = []
    for word in log[1:]:
        candidates = score[:, None] + transition  # (previous tag, next tag)
        best = candidates.argmax(0)
        back.append(best)
        score = candidates[best, np.arange(len(tags))] + word
    path = [int(score.argmax())]
    for best in reversed(back):
        path.append(int(best[path[-1]]))
    return path[::-1]


def decode(proba: np.ndarray, tags: list[str], decoding: str) -> list[str]:
    """(words, K) tag probabilities -> IOB2 tags. "argmax": the most probable tag of each word, an I-X that opens
    an entity read as B-X; "viterbi": the most probable valid sequence."""
    path = viterbi(proba, tags) if decoding == "viterbi" else proba.argmax(1)
    return to_iob2([tags[k] for k in path])
