"""Constrained Viterbi decoding against a brute-force search over every tag sequence."""

import itertools

import numpy as np
import pytest

from sslflow.text.decode import decode, follows, may_start, viterbi

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def valid(path: list[int]) -> bool:
    ok = follows(TAGS)
    return bool(not path or may_start(TAGS)[path[0]]) and all(ok[a, b] for a, b in itertools.pairwise(path))


def best_by_search(proba: np.ndarray) -> float:
    """The highest log-probability of any valid sequence, by trying them all."""
    log = np.log(proba)
    paths = itertools.product(range(len(TAGS)), repeat=len(proba))
    return max(log[np.arange(len(p)), p].sum() for p in paths if valid(list(p)))


def test_the_transition_rules_of_iob2():
    ok = follows(TAGS)
    assert ok[TAGS.index("B-LOC"), TAGS.index("I-LOC")] and ok[TAGS.index("I-LOC"), TAGS.index("I-LOC")]
    assert not ok[TAGS.index("O"), TAGS.index("I-LOC")] and not ok[TAGS.index("B-PER"), TAGS.index("I-LOC")]
    assert ok[TAGS.index("I-PER"), TAGS.index("B-PER")] and ok[TAGS.index("I-LOC"), TAGS.index("O")]
    assert list(may_start(TAGS)) == [True, True, False, True, False]


@pytest.mark.parametrize("seed", range(20))
def test_viterbi_finds_the_most_probable_valid_sequence(seed):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(len(TAGS)) * 0.5, size=int(rng.integers(1, 5)))
    path = viterbi(proba, TAGS)
    assert valid(path)
    assert np.log(proba)[np.arange(len(path)), path].sum() == pytest.approx(best_by_search(proba))


def test_a_valid_argmax_is_kept_and_an_invalid_one_repaired():
    proba = np.full((3, len(TAGS)), 0.01)
    proba[[0, 1, 2], [TAGS.index("B-PER"), TAGS.index("I-PER"), TAGS.index("O")]] = 0.96
    assert viterbi(proba, TAGS) == [3, 4, 0]
    proba[0] = 0.01
    proba[0, TAGS.index("O")] = 0.5  # argmax: O I-PER O, invalid
    proba[0, TAGS.index("B-PER")] = 0.3
    assert viterbi(proba, TAGS) == [3, 4, 0]  # B-PER I-PER (0.3 * 0.96) beats O and a valid second tag (0.5 * 0.01)
    assert viterbi(np.zeros((0, len(TAGS))), TAGS) == []


def test_decode_names_the_decoder_and_returns_iob2_tags():
    proba = np.full((3, len(TAGS)), 0.01)
    proba[0, TAGS.index("O")], proba[0, TAGS.index("B-PER")] = 0.6, 0.3
    proba[1:, TAGS.index("I-PER")] = 0.96  # argmax: O I-PER I-PER, one entity opened by I-PER
    assert decode(proba, TAGS, "argmax") == ["O", "B-PER", "I-PER"]
    assert decode(proba, TAGS, "viterbi") == ["B-PER", "I-PER", "I-PER"]
