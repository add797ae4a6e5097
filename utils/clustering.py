"""Grouping Gaussians by their feature vectors (scikit-learn k-means / mean shift)."""
from __future__ import annotations

import colorsys
import time
from dataclasses import dataclass, field

import numpy as np

from utils.errors import UserError

MEANSHIFT_FIT_SAMPLES = 2000  # mean shift is fitted on at most this many points (plenty for modes holding >= 1% of them), then every point is assigned
BANDWIDTH_QUANTILE = 0.1  # sklearn estimate_bandwidth quantile for --bandwidth auto (below the within-cluster share of pairs of up to ~10 equal regions)
BANDWIDTH_SAMPLES = 2000
KMEANS_RESTARTS = 4
MIN_CLUSTER_FRACTION = 0.01  # mean-shift modes holding fewer points than this fraction are merged into the nearest larger mode
GOLDEN_RATIO = 0.618033988749895


@dataclass
class ClusterResult:
    """labels [N] (0..K-1), centroids [K, F] in the clustered space, and what was done."""

    labels: np.ndarray
    centroids: np.ndarray
    info: dict = field(default_factory=dict)


def cluster_space(features: np.ndarray, xyz: np.ndarray, xyz_weight: float) -> np.ndarray:
    """[N, D] features L2-normalised, optionally joined by xyz_weight x standardised positions [N, 3]."""
    f = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    if xyz_weight <= 0:
        return f.astype(np.float32)
    p = (xyz - xyz.mean(0)) / max(float(xyz.std(0).mean()), 1e-12)
    return np.concatenate([f, xyz_weight * p], axis=1).astype(np.float32)


def kmeans(x: np.ndarray, k: int, seed: int = 0) -> ClusterResult:
    if k < 1:
        raise UserError(f"--k {k}: need at least one cluster")
    if k > len(x):
        raise UserError(f"--k {k} is larger than the number of Gaussians to cluster ({len(x)}); lower --k or --min_opacity")
    from sklearn.cluster import KMeans  # here, not at import: sklearn and scipy.stats cost ~90 MB in every train.py

    km = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    return ClusterResult(km.labels_.astype(np.int64), km.cluster_centers_, {"method": "kmeans", "k": k, "inertia": float(km.inertia_)})


def merge_small_clusters(x: np.ndarray, labels: np.ndarray, centers: np.ndarray, min_fraction: float):
    """Drop modes with fewer than ``min_fraction`` of the points; reassign their points to the nearest kept mode.

    Returns (labels [N] renumbered 0..K'-1 by decreasing size, centers [K', F], number of modes dropped).
    """
    sizes = np.bincount(labels, minlength=len(centers))
    keep = np.flatnonzero(sizes >= max(min_fraction * len(x), 1))
    if len(keep) == 0:
        keep = np.array([int(sizes.argmax())])
    keep = keep[np.argsort(-sizes[keep], kind="stable")]
    kept_centers = centers[keep]
    new = _nearest(x, kept_centers)
    return new, kept_centers, len(centers) - len(keep)


def meanshift(x: np.ndarray, bandwidth: str | float, seed: int = 0, min_fraction: float = MIN_CLUSTER_FRACTION) -> ClusterResult:
    """Mean shift with bin seeding, fitted on a subsample and then assigning every point to its nearest mode."""
    from sklearn.cluster import MeanShift, estimate_bandwidth
    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(len(x), size=min(len(x), MEANSHIFT_FIT_SAMPLES), replace=False)
    sample = x[fit_idx]
    if bandwidth == "auto":
        bw = float(estimate_bandwidth(sample, quantile=BANDWIDTH_QUANTILE, n_samples=min(len(sample), BANDWIDTH_SAMPLES), random_state=seed))
        if bw <= 0:
            raise UserError("--bandwidth auto: the features are all identical; is the model trained with --lambda_feature?")
    else:
        bw = float(bandwidth)
        if bw <= 0:
            raise UserError(f"--bandwidth {bandwidth}: must be positive or 'auto'")
    ms = MeanShift(bandwidth=bw, bin_seeding=True, cluster_all=True).fit(sample)
    labels, centers, dropped = merge_small_clusters(x, _nearest(x, ms.cluster_centers_), ms.cluster_centers_, min_fraction)
    info = {"method": "meanshift", "bandwidth": bw, "bandwidth_mode": "auto" if bandwidth == "auto" else "given",
            "fit_points": int(len(sample)), "assigned_points": int(len(x)), "bin_seeding": True,
            "min_cluster_fraction": min_fraction, "small_modes_merged": dropped,
            "note": f"fitted on {len(sample)} of {len(x)} points (bin seeding), all points assigned to the nearest mode; "
                    f"{dropped} mode(s) with < {min_fraction:.1%} of the points merged into their nearest larger mode"}
    return ClusterResult(labels, centers, info)


def _nearest(x: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(x), np.int64)
    c2 = (centers**2).sum(1)
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk]
        out[s : s + chunk] = np.argmin(c2[None, :] - 2 * xs @ centers.T, axis=1)
    return out


def run_clustering(x: np.ndarray, method: str, k: int, bandwidth, seed: int = 0, min_fraction: float = MIN_CLUSTER_FRACTION) -> ClusterResult:
    t0 = time.perf_counter()
    if method == "kmeans":
        res = kmeans(x, k, seed)
    elif method == "meanshift":
        res = meanshift(x, bandwidth, seed, min_fraction)
    else:
        raise UserError(f"--method {method}: choose kmeans or meanshift")
    res.info["seconds"] = time.perf_counter() - t0
    return res


def palette(k: int) -> np.ndarray:
    """[k, 3] well separated colours in [0, 1] (golden-ratio hue steps)."""
    return np.array([colorsys.hsv_to_rgb((i * GOLDEN_RATIO) % 1.0, 0.75, 0.95) for i in range(k)], np.float32)
