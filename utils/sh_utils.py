"""Real spherical harmonics up to degree 3 (the basis used by 3DGS colour).

Colour = clamp_min(sum_k sh_k * Y_k(dir) + 0.5, 0). The DC coefficient relates to
RGB by ``rgb = 0.5 + SH_C0 * dc``.
"""
from __future__ import annotations

import math

import torch

SH_C0 = 0.5 / math.sqrt(math.pi)  # Y_0^0
SH_C1 = math.sqrt(3.0 / (4.0 * math.pi))
SH_C2 = (
    0.5 * math.sqrt(15.0 / math.pi),
    -0.5 * math.sqrt(15.0 / math.pi),
    0.25 * math.sqrt(5.0 / math.pi),
    -0.5 * math.sqrt(15.0 / math.pi),
    0.25 * math.sqrt(15.0 / math.pi),
)
SH_C3 = (
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),
    0.5 * math.sqrt(105.0 / math.pi),
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),
    0.25 * math.sqrt(7.0 / math.pi),
    -0.25 * math.sqrt(21.0 / (2.0 * math.pi)),
    0.25 * math.sqrt(105.0 / math.pi),
    -0.25 * math.sqrt(35.0 / (2.0 * math.pi)),
)


def num_sh_bases(degree: int) -> int:
    """Number of coefficients for SH up to ``degree`` (1, 4, 9, 16)."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate the real SH basis.

    Args:
        degree: 0..3.
        dirs: [N, 3] unit directions.
    Returns:
        [N, (degree+1)^2] basis values.
    """
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colour from SH coefficients.

    Args:
        degree: active SH degree (uses the first (degree+1)^2 coefficients).
        sh: [N, K, 3] coefficients, K >= (degree+1)^2.
        dirs: [N, 3] unit view directions (camera centre -> Gaussian).
    Returns:
        [N, 3] colour, ``sum_k sh_k Y_k + 0.5`` clamped at 0.
    """
    basis = sh_basis(degree, dirs)  # [N, B]
    coeffs = sh[:, : basis.shape[1], :]
    return (torch.einsum("nb,nbc->nc", basis, coeffs) + 0.5).clamp_min(0.0)


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that reproduces ``rgb`` (any shape)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_sh`."""
    return dc * SH_C0 + 0.5
