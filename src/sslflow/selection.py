"""Active learning: which unlabeled items to label next, from frozen embeddings and, for the strategies that
need them, a linear probe's class probabilities. numpy and scikit-learn only."""

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler

from sslflow.errors import SslflowError

STRATEGIES = ("random", "typical", "margin", "badge")
TYPICALITY_NEIGHBOURS = 20  # TypiClust's K for the density estimate
MAX_FULL_KMEANS = 50  # above this many clusters TypiClust's code switches to mini-batch k-means


@dataclass(frozen=True)
class Proposal:
    """The items to label next and why.

    indices: (B,) int64 into the N items, in the order proposed.
    scores: (B,) float per item. random: 0. typical: typicality (1 / mean distance to the nearest neighbours in
    its cluster). margin: 1 - (p_top1 - p_top2), higher = nearer the decision boundary. badge: squared distance of
    the item's gradient embedding to the nearest one picked before it (the first: to the origin), i.e. the D² that
    k-means++ sampled it with; it is not monotone in the order.
    """

    indices: np.ndarray
    scores: np.ndarray


def probe_probs(embeddings, labeled, labels, *, c: float, seed: int, num_classes: int | None = None) -> np.ndarray:
    """(N, K) class probabilities of a multinomial logistic regression (inverse L2 strength `c`) fitted on the
    standardised embeddings of the `labeled` items with `labels` (ints 0..K-1). Absent classes get probability 0."""
    labeled, labels = np.asarray(labeled, np.int64), np.asarray(labels, np.int64)
    if len(labeled) == 0:
        raise SslflowError("select.strategy: the probe needs at least one labeled item; start with 'typical'")
    k = num_classes if num_classes is not None else int(labels.max()) + 1
    scaler = StandardScaler().fit(embeddings[labeled])
    probs = np.zeros((len(embeddings), k))
    present = np.unique(labels)
    if len(present) == 1:  # one class seen: the probe can only say that class
        probs[:, present[0]] = 1.0
        return probs
    probe = LogisticRegression(C=c, max_iter=1000, random_state=seed)
    probe.fit(scaler.transform(embeddings[labeled]), labels)
    probs[:, probe.classes_] = probe.predict_proba(scaler.transform(embeddings))
    return probs


def propose(
    strategy: str,
    *,
    embeddings: np.ndarray,
    candidates: np.ndarray,
    labeled: np.ndarray,
    probs: np.ndarray | None,
    budget: int,
    seed: int,
) -> Proposal:
    """Propose min(budget, #candidates) distinct candidates to label.

    embeddings (N, D); candidates (N,) bool, the items that may be proposed (a labeled item never is);
    labeled (L,) indices already labeled; probs (N, K) from `probe_probs`, needed by margin and badge only.
    """
    if strategy not in STRATEGIES:
        raise SslflowError(f"select.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if strategy in ("margin", "badge") and probs is None:
        raise SslflowError(f"select.strategy: {strategy!r} needs the probe's class probabilities (no labels yet?)")
    labeled = np.asarray(labeled, np.int64)
    pool = np.setdiff1d(np.flatnonzero(candidates), labeled)  # (M,) sorted
    budget = max(0, min(budget, len(pool)))
    if budget == 0:
        return Proposal(np.zeros(0, np.int64), np.zeros(0))
    if strategy == "random":
        return Proposal(np.random.default_rng(seed).permutation(pool)[:budget], np.zeros(budget))
    if strategy == "typical":
        return _typical(embeddings, pool, labeled, budget, seed)
    if strategy == "margin":
        return _margin(probs[pool], pool, budget)
    return _badge(embeddings[pool], probs[pool], pool, budget, seed)


def _margin(p: np.ndarray, pool: np.ndarray, budget: int) -> Proposal:
    """Margin sampling (Scheffer et al., 2001): the smallest gap between the two most probable classes."""
    top = np.sort(p, axis=1)  # (M, K) ascending
    second = top[:, -2] if p.shape[1] > 1 else 0.0
    score = 1.0 - (top[:, -1] - second)  # (M,)
    order = np.lexsort((pool, -score))[:budget]  # highest score first, ties by index
    return Proposal(pool[order].astype(np.int64), score[order])


def _typical(embeddings, pool, labeled, budget, seed) -> Proposal:
    """TypiClust (Hacohen, Dekel & Weinshall, ICML 2022, "Active Learning on a Budget").

    k-means with L + B clusters over candidates and labeled items; then B times: among the clusters with a
    candidate left, the one with the fewest labeled or picked items (the largest on ties) gives up its most typical
    candidate. With B uncovered clusters this is one item from each, largest first.
    """
    points = np.concatenate([pool, labeled])  # (P,), the M candidates first
    z = embeddings[points].astype(np.float32)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    k = min(len(labeled) + budget, len(points))
    cluster = _kmeans(z, k, seed)  # (P,)
    is_candidate = np.arange(len(points)) < len(pool)
    size = np.bincount(cluster, minlength=k)
    covered = np.bincount(cluster[~is_candidate], minlength=k)  # labeled so far, then + picked
    left = np.bincount(cluster[is_candidate], minlength=k)
    ranked: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # cluster -> its candidates by typicality, computed once
    indices, scores = [], []
    for _ in range(budget):
        order = np.lexsort((np.arange(k), -size, covered))
        c = order[left[order] > 0][0]
        if c not in ranked:
            ranked[c] = _by_typicality(z, cluster == c, is_candidate)
        positions, typicality = ranked[c]
        taken = len(positions) - left[c]
        indices.append(points[positions[taken]])
        scores.append(typicality[taken])
        covered[c] += 1
        left[c] -= 1
    return Proposal(np.asarray(indices, np.int64), np.asarray(scores))


def _kmeans(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels (P,); many clusters use mini-batch k-means, as TypiClust's code does."""
    if k <= MAX_FULL_KMEANS:
        return KMeans(k, n_init=3, random_state=seed).fit_predict(z)
    return MiniBatchKMeans(k, batch_size=5000, n_init=3, random_state=seed).fit_predict(z)


def _by_typicality(z: np.ndarray, member: np.ndarray, is_candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A cluster's candidate positions, most typical first, with their typicality: 1 / mean distance to the
    min(20, size - 1) nearest other members; a cluster of one has typicality 0."""
    members = np.flatnonzero(member)
    positions = members[is_candidate[members]]  # ascending, so ties keep index order
    n_neighbours = min(TYPICALITY_NEIGHBOURS, len(members) - 1)
    if n_neighbours == 0:
        return positions, np.zeros(len(positions))
    nn = NearestNeighbors(n_neighbors=n_neighbours + 1).fit(z[members])
    distance, _ = nn.kneighbors(z[positions])  # (m, n + 1), column 0 the point itself
    typicality = 1.0 / (distance[:, 1:].mean(axis=1) + 1e-12)
    order = np.argsort(-typicality, kind="stable")
    return positions[order], typicality[order]


def _badge(z: np.ndarray, p: np.ndarray, pool: np.ndarray, budget: int, seed: int) -> Proposal:
    """BADGE (Ash et al., ICLR 2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds").

    The gradient of the cross-entropy for the predicted label with respect to a linear layer on z is
    g = (p - onehot(argmax p)) ⊗ z, of size K·D; k-means++ seeding on g starts from the largest norm and samples
    each next item with probability ∝ its squared distance to the nearest picked one. g is never built:
    g_i · g_j = (r_i · r_j)(z_i · z_j) with r = p - onehot, so memory stays O(M·(K + D)).
    """
    z = z.astype(np.float64)  # (M, D)
    r = p.astype(np.float64)  # (M, K)
    r[np.arange(len(r)), r.argmax(axis=1)] -= 1.0
    sq_norm = (r * r).sum(axis=1) * (z * z).sum(axis=1)  # (M,) = |g|²
    rng = np.random.default_rng(seed)
    picked = np.zeros(len(pool), bool)
    nearest = np.full(len(pool), np.inf)  # (M,) squared distance to the nearest picked g
    order, scores = [], []
    for step in range(budget):
        if step == 0:
            i = int(np.argmax(sq_norm))
        elif nearest.sum() > 0:
            i = int(rng.choice(len(pool), p=nearest / nearest.sum()))
        else:  # every remaining g coincides with a picked one: no preference left
            i = int(rng.choice(np.flatnonzero(~picked)))
        order.append(i)
        scores.append(sq_norm[i] if step == 0 else nearest[i])
        picked[i] = True
        d2 = sq_norm + sq_norm[i] - 2.0 * (r @ r[i]) * (z @ z[i])  # (M,) |g - g_i|²
        nearest = np.where(picked, 0.0, np.minimum(nearest, np.maximum(d2, 0.0)))
    return Proposal(pool[order].astype(np.int64), np.asarray(scores))
