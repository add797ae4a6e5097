"""A synthetic scene whose 'DINO' teacher features are known per object region (for distillation tests).

The Blender-format synthetic scene has 5 objects (ground, three spheres, a box). The
teacher feature of a pixel is a fixed random unit vector of the object it sees (zeros
on the background), stored in the folder layout of extract_dino_features.py with
bilinear (full-resolution) maps, so train.py reads it like real DINO features.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from scene import synthetic_blender as sb
from utils.dino_utils import DinoExtractor
from utils.io_utils import save_npy, write_json

NUM_REGIONS = 1 + len(sb.SPHERES) + 1  # ground, spheres, box
TEACHER_DIM = 12


def region_vectors(seed: int = 0) -> np.ndarray:
    """[NUM_REGIONS, TEACHER_DIM] distinct unit vectors."""
    v = np.random.default_rng(seed).normal(size=(NUM_REGIONS, TEACHER_DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def object_ids(view) -> np.ndarray:
    """[H, W] object id seen through each pixel centre (-1 = background)."""
    o, d = sb._rays(view, 1)
    _, _, obj = sb.cast(o, d.reshape(-1, 3))
    return obj.reshape(view.height, view.width)


def region_of_points(points: np.ndarray) -> np.ndarray:
    """[N] id of the object surface nearest to each point [N, 3]."""
    dists = [np.abs(points[:, 2])]
    for x, y, z, r in sb.SPHERES:
        dists.append(np.abs(np.linalg.norm(points - np.array([x, y, z]), axis=1) - r))
    lo, hi = (np.array(c) for c in sb.BOX)
    q = np.maximum(lo - points, points - hi)
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    inside = np.minimum(q.max(axis=1), 0)
    dists.append(np.abs(outside + inside))
    return np.argmin(np.stack(dists, 1), axis=1)


def write_teacher_features(out_dir: Path, n_train: int, n_test: int, size: int) -> Path:
    """Write <name>.npy [TEACHER_DIM, H, W] for each view of the synthetic Blender scene with these
    settings, plus a features_meta.json of a random-weight extractor."""
    vecs = region_vectors()
    images = {}
    for view in sb.synthetic_views(n_train, n_test, size, size):
        ids = object_ids(view)
        feat = np.where(ids[..., None] >= 0, vecs[np.clip(ids, 0, None)], 0.0).transpose(2, 0, 1)
        save_npy(out_dir / f"{view.name}.npy", feat.astype(np.float32))
        images[view.name] = {"file": f"{view.name}.png", "image_size": [size, size], "stored_size": [size, size]}
    ext = DinoExtractor("dino_vits16", resolution=64, random_init=True)
    meta = ext.meta() | {"version": 1, "dtype": "float32", "upsample": "bilinear", "channels": TEACHER_DIM,
                         "pca": None, "pca_dim": None, "images": images, "complete": True}
    write_json(out_dir / "features_meta.json", meta)
    return out_dir
