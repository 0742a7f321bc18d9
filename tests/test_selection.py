"""Active-learning selection: TypiClust, margin and BADGE on toy data whose right answer is known, BADGE's
implicit gradient embeddings against explicit ones, and the invariants every strategy keeps."""

import numpy as np
import pytest

from sslflow.errors import SslflowError
from sslflow.selection import STRATEGIES, probe_probs, propose


def blobs(sizes, dim=8, seed=0):
    """Well-separated Gaussian clusters: cluster j around 10·e_j. Returns x (N, dim) and cluster ids (N,)."""
    rng = np.random.default_rng(seed)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    x = 10.0 * np.eye(dim)[cluster] + rng.normal(size=(len(cluster), dim))
    return x, cluster


def every_item(n):
    return np.ones(n, bool)


def test_typical_takes_one_central_item_per_cluster():
    x, cluster = blobs([200, 120, 80, 50, 30])
    got = propose("typical", embeddings=x, candidates=every_item(len(x)), labeled=[], probs=None, budget=5, seed=0)
    assert sorted(cluster[got.indices]) == [0, 1, 2, 3, 4]
    assert list(cluster[got.indices]) == [0, 1, 2, 3, 4]  # uncovered clusters, largest first
    z = x / np.linalg.norm(x, axis=1, keepdims=True)  # the space TypiClust clusters in
    for i in got.indices:
        members = z[cluster == cluster[i]]
        distance = np.linalg.norm(members - members.mean(axis=0), axis=1)
        assert np.linalg.norm(z[i] - members.mean(axis=0)) <= np.quantile(distance, 0.25)
    assert np.all(got.scores > 0)


def test_typical_skips_covered_clusters():
    x, cluster = blobs([200, 120, 80, 50, 30])
    labeled = np.array([np.flatnonzero(cluster == 0)[7]])
    candidates = every_item(len(x))
    candidates[labeled] = False
    got = propose("typical", embeddings=x, candidates=candidates, labeled=labeled, probs=None, budget=4, seed=0)
    assert sorted(cluster[got.indices]) == [1, 2, 3, 4]


def test_typical_budget_above_uncovered_clusters_still_fills():
    # 3 real clusters, 3 labeled in one: k = 3 + 4 splits clusters, and exactly 4 come out
    x, cluster = blobs([40, 40, 40])
    labeled = np.flatnonzero(cluster == 0)[:3]
    got = propose(
        "typical",
        embeddings=x,
        candidates=~np.isin(np.arange(120), labeled),
        labeled=labeled,
        probs=None,
        budget=4,
        seed=1,
    )
    assert len(set(got.indices)) == 4 and not np.isin(got.indices, labeled).any()


def logistic_probs(x):
    p1 = 1.0 / (1.0 + np.exp(-2.0 * x))
    return np.stack([1.0 - p1, p1], axis=1)  # (N, 2)


def test_margin_picks_the_decision_boundary():
    x = np.linspace(-3, 3, 61)  # x = 0 at index 30, where p = 0.5
    probs = logistic_probs(x)
    got = propose("margin", embeddings=x[:, None], candidates=every_item(61), labeled=[], probs=probs, budget=5, seed=0)
    nearest = np.argsort(np.abs(probs[:, 1] - 0.5), kind="stable")[:5]
    assert set(got.indices) == set(nearest) == set(range(28, 33))
    assert got.indices[0] == 30 and got.scores[0] == pytest.approx(1.0)
    assert np.all(np.diff(got.scores) <= 0)


def gradient_embeddings(x, probs):
    """BADGE's g = (p - onehot(argmax p)) ⊗ z, built explicitly: (N, K·D)."""
    r = probs.copy()
    r[np.arange(len(r)), r.argmax(axis=1)] -= 1.0
    return (r[:, :, None] * x[:, None, :]).reshape(len(x), -1)


def test_badge_matches_explicit_gradient_embeddings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    probs = rng.dirichlet(np.ones(4), size=50)
    got = propose("badge", embeddings=x, candidates=every_item(50), labeled=[], probs=probs, budget=8, seed=3)
    g = gradient_embeddings(x, probs)
    assert got.indices[0] == np.argmax(np.linalg.norm(g, axis=1))
    assert got.scores[0] == pytest.approx(np.sum(g[got.indices[0]] ** 2))
    for step in range(1, 8):  # each score is the D² to the nearest earlier pick, as k-means++ sampled it
        before = g[got.indices[:step]]
        d2 = ((g[got.indices[step]] - before) ** 2).sum(axis=1).min()
        assert got.scores[step] == pytest.approx(d2)


@pytest.mark.parametrize("seed", range(5))
def test_badge_is_diverse_and_prefers_uncertain_items(seed):
    rng = np.random.default_rng(seed)
    # two uncertain groups far apart in z (indices 0..19 and 20..39), then 40 confident items near the origin of g
    x = np.concatenate(
        [
            5 * np.eye(8)[0] + 0.1 * rng.normal(size=(20, 8)),
            5 * np.eye(8)[1] + 0.1 * rng.normal(size=(20, 8)),
            rng.normal(size=(40, 8)),
        ]
    )
    probs = np.concatenate(
        [np.tile([0.5, 0.5], (40, 1)) + [0.01, -0.01] * rng.uniform(size=(40, 1)), np.tile([0.999, 0.001], (40, 1))]
    )
    got = propose("badge", embeddings=x, candidates=every_item(80), labeled=[], probs=probs, budget=5, seed=seed)
    group = np.searchsorted([20, 40], got.indices, side="right")  # 0, 1 uncertain; 2 confident
    assert {0, 1} <= set(group)
    assert np.sum(group == 2) <= 1


def test_random_and_typical_never_read_labels_or_probs():
    x, cluster = blobs([60, 40, 30])
    rng = np.random.default_rng(0)
    labeled = np.array([3, 70, 101])
    candidates = every_item(len(x))
    candidates[labeled] = False
    candidates[:10] = False  # e.g. test items
    scrambled = rng.permutation(cluster)
    probs_from = [
        None,
        rng.dirichlet(np.ones(3), size=len(x)),
        probe_probs(x, labeled, cluster[labeled], c=1.0, seed=0),
        probe_probs(x, labeled, scrambled[labeled], c=1.0, seed=0, num_classes=3),
    ]
    for strategy in ("random", "typical"):
        runs = [
            propose(strategy, embeddings=x, candidates=candidates, labeled=labeled, probs=p, budget=6, seed=2)
            for p in probs_from
        ]
        for run in runs[1:]:
            np.testing.assert_array_equal(run.indices, runs[0].indices)
            np.testing.assert_array_equal(run.scores, runs[0].scores)
        assert candidates[runs[0].indices].all()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("budget", [7, 500])
def test_every_strategy_proposes_distinct_candidates_deterministically(strategy, budget):
    x, cluster = blobs([50, 30, 20])
    rng = np.random.default_rng(1)
    labeled = np.array([0, 55, 90])
    candidates = rng.uniform(size=len(x)) < 0.6
    candidates[labeled[:2]] = True  # a labeled item wrongly marked candidate is still never proposed
    probs = probe_probs(x, labeled, cluster[labeled], c=1.0, seed=0)
    args = dict(embeddings=x, candidates=candidates, labeled=labeled, probs=probs, budget=budget, seed=4)
    got = propose(strategy, **args)
    pool = np.setdiff1d(np.flatnonzero(candidates), labeled)
    assert got.indices.dtype == np.int64 and len(got.indices) == len(got.scores) == min(budget, len(pool))
    assert len(set(got.indices)) == len(got.indices) and np.isin(got.indices, pool).all()
    again = propose(strategy, **args)
    np.testing.assert_array_equal(again.indices, got.indices)


def test_no_candidates_and_bad_requests():
    x, _ = blobs([10, 10])
    empty = propose("typical", embeddings=x, candidates=np.zeros(20, bool), labeled=[], probs=None, budget=3, seed=0)
    assert len(empty.indices) == 0
    for strategy in ("margin", "badge", "entropy"):
        with pytest.raises(SslflowError, match="select.strategy"):
            propose(strategy, embeddings=x, candidates=every_item(20), labeled=[], probs=None, budget=3, seed=0)


def test_probe_probs_fits_separable_data():
    x, cluster = blobs([30, 30, 30])
    labeled = np.arange(0, 90, 3)
    probs = probe_probs(x, labeled, cluster[labeled], c=1.0, seed=0, num_classes=4)
    assert probs.shape == (90, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert np.all(probs[:, 3] == 0)  # class 3 never labeled
    np.testing.assert_array_equal(probs[labeled].argmax(axis=1), cluster[labeled])
    assert np.mean(probs.argmax(axis=1) == cluster) == 1.0
