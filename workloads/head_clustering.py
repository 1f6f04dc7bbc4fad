"""Clustering attention heads by their scores (CHAI, studies.md section 3), in torch and numpy.

Offline, per layer: `kmeans_inertia` for k = 1..heads over sampled attention scores, and
`elbow` picks the layer's cluster count from that curve. Online, per request: `head_features`
(each head's softmax(QK^T/sqrt(d)) over the first prompt tokens), `cosine_distances`, then
`average_linkage` groups the heads into the layer's k clusters and `representatives` names
the head of each cluster that computes QK^T for all of them.
"""
from __future__ import annotations

import numpy as np
import torch

KNEE_MIN = 0.25  # a knee lies at least this far below the chord of the normalized curve; else no elbow


def head_features(probs: torch.Tensor) -> torch.Tensor:
    """(batch, heads, L, L) attention probabilities -> (batch, heads, L*L), one feature row per head."""
    return probs.flatten(2)


def cosine_distances(features: torch.Tensor) -> torch.Tensor:
    """(..., heads, n) -> (..., heads, heads): 1 - cosine similarity of every pair of heads."""
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    return (1 - unit @ unit.transpose(-1, -2)).clamp(min=0)


def average_linkage(distances: np.ndarray, clusters: int) -> np.ndarray:
    """Agglomerative clustering with average linkage (UPGMA) down to `clusters` groups.

    `distances`: (n, n) symmetric. Returns (n,) labels 0..clusters-1, numbered by each
    cluster's lowest head. Merges the closest pair of clusters while there are too many; the
    merged cluster's distance to any other is the size-weighted mean (Lance-Williams), i.e.
    the mean over all pairs of their members.
    """
    n = distances.shape[0]
    if not 1 <= clusters <= n:
        raise ValueError(f"clusters must be in 1..{n}, got {clusters}")
    d = np.array(distances, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    sizes = np.ones(n)
    owner = np.arange(n)  # the surviving cluster (by index) of each head
    for _ in range(n - clusters):
        i, j = np.unravel_index(np.argmin(d), d.shape)
        i, j = min(i, j), max(i, j)
        merged = (sizes[i] * d[i] + sizes[j] * d[j]) / (sizes[i] + sizes[j])
        d[i, :], d[:, i] = merged, merged
        d[i, i] = np.inf
        d[j, :], d[:, j] = np.inf, np.inf
        sizes[i] += sizes[j]
        owner[owner == j] = i
    _, labels = np.unique(owner, return_inverse=True)  # owners are each cluster's lowest head: order kept
    return labels


def representatives(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(clusters,) the medoid of each cluster: the member with the least summed distance to the others."""
    reps = []
    for c in range(labels.max() + 1):
        members = np.flatnonzero(labels == c)
        reps.append(members[np.argmin(distances[np.ix_(members, members)].sum(axis=1))])
    return np.array(reps)


def kmeans_inertia(points: torch.Tensor, k: int, restarts: int = 4, iters: int = 30, seed: int = 0) -> float:
    """Least within-cluster sum of squares of k-means (Lloyd, k-means++ starts) over `restarts` tries."""
    generator = torch.Generator().manual_seed(seed)
    points = points.double()
    best = float("inf")
    for _ in range(restarts):
        centers = points[torch.randint(len(points), (1,), generator=generator)]
        while len(centers) < k:  # k-means++: the next start far from the chosen ones
            nearest = torch.cdist(points, centers).min(dim=1).values ** 2
            if nearest.sum() <= 0:
                break
            centers = torch.cat([centers, points[torch.multinomial(nearest, 1, generator=generator)]])
        for _ in range(iters):
            assign = torch.nn.functional.one_hot(torch.cdist(points, centers).argmin(dim=1), len(centers)).double()
            sizes = assign.sum(0)[:, None]
            moved = torch.where(sizes > 0, assign.T @ points / sizes.clamp(min=1), centers)  # an empty cluster stays put
            if torch.equal(moved, centers):
                break
            centers = moved
        best = min(best, float(torch.cdist(points, centers).min(dim=1).values.pow(2).sum()))
    return best


def elbow(inertias: list[float]) -> int:
    """The cluster count at the elbow of `inertias` (inertia of k = 1, 2, ... clusters).

    Kneedle: with k and inertia both scaled to [0, 1], the knee is the k farthest below the
    chord from the first point to the last. A curve that never falls KNEE_MIN below its chord
    has no elbow (every cluster removed costs about the same: no redundancy), and keeps every head.
    """
    y = np.asarray(inertias, dtype=np.float64)
    n = len(y)
    if n == 1 or y[0] <= 1e-9 * max(1.0, abs(y).max()):
        return 1  # one head, or all heads alike
    x = np.arange(n) / (n - 1)
    yn = (y - y.min()) / (y.max() - y.min())
    below = (1 - x) - yn
    knee = int(np.argmax(below))
    return knee + 1 if below[knee] >= KNEE_MIN else n


def layer_cluster_count(features: torch.Tensor, seed: int = 0) -> tuple[int, list[float]]:
    """A layer's cluster count from its heads' sampled scores (heads, n): the elbow of k-means
    over unit-length features (Euclidean on unit vectors ranks like cosine distance)."""
    points = torch.nn.functional.normalize(features.double(), dim=-1)
    inertias = [kmeans_inertia(points, k, seed=seed) for k in range(1, len(points) + 1)]
    return elbow(inertias), inertias
