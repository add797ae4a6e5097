"""Small math helpers shared by the model and the renderer."""
from __future__ import annotations

import random

import numpy as np
import torch

NORM_EPS = 1e-12  # vector norms are clamped at this before dividing (quaternions, view directions)


def normalize(v: torch.Tensor) -> torch.Tensor:
    """[..., D] vectors divided by their norm, clamped at NORM_EPS (a zero vector stays zero)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(NORM_EPS)


def inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """logit(x); inverse of torch.sigmoid."""
    return torch.log(x / (1.0 - x))


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """[N, 4] quaternions (w, x, y, z; any norm) -> [N, 3, 3] rotation matrices."""
    w, x, y, z = normalize(q).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def build_covariance(scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """World covariance R S S^T R^T.

    Args:
        scales: [N, 3] standard deviations (already activated).
        quats: [N, 4] rotations (w first).
    Returns:
        [N, 3, 3] covariances.
    """
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
