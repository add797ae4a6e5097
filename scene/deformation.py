"""Deformation over time as sums of Gaussian bumps in t (Deform3DGS-style, no network).

Each Gaussian carries weights ``w`` [B, 10] for B bumps centred at mu_b = b/(B-1)
with a shared width. At time t its offsets are ``sum_b w_b * exp(-((t - mu_b)/sigma)^2)``:
3 position, 4 quaternion and 3 log-scale components. Weights start at zero, so an
untrained deformation is the identity.
"""
from __future__ import annotations

import torch

from utils.general_utils import normalize

DEFORM_CHANNELS = 10  # 3 position + 4 rotation + 3 log-scale offsets
BUMP_WIDTH_SPACINGS = 1.0  # bump sigma in units of the spacing between centres


# A bump is cut to exactly 0 below this fraction of its peak (beyond ~4.08 widths from its centre). The
# nearest bump to any t is at least exp(-1/4) ~ 0.78, so a cut term is under half a float32 ulp of an
# equal-weight nearest term. Without the cut, far bumps reach subnormal values (9.4 to 10.2 widths away)
# and so do their products with the weights and gradients: every CPU multiply with a subnormal takes a
# slow microcode path, which made the deformation's matrix products 3 to 8 times slower on such frames.
BUMP_CUTOFF = 2.0**-24


def bump_activations(t: float, num_basis: int, device, dtype=torch.float32) -> torch.Tensor:
    """[B] bump values at time ``t`` in [0, 1] (exactly 0 below BUMP_CUTOFF)."""
    centers = torch.linspace(0.0, 1.0, num_basis, device=device, dtype=dtype)
    sigma = BUMP_WIDTH_SPACINGS / max(num_basis - 1, 1)
    phi = torch.exp(-(((t - centers) / sigma) ** 2))
    return torch.where(phi >= BUMP_CUTOFF, phi, torch.zeros((), device=device, dtype=dtype))


def deform_offsets(weights: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets at time ``t``.

    Args:
        weights: [N, B, 10] per-Gaussian bump weights.
    Returns:
        (d_xyz [N, 3], d_quat [N, 4], d_log_scale [N, 3]).
    """
    n, num_basis, channels = weights.shape
    phi = bump_activations(t, num_basis, weights.device, weights.dtype)
    # one matrix product [N, B*10] @ [B*10, 10] with the block column phi_b * I: no layout copies in the forward or
    # backward pass (einsum permuted the weights both ways: 19 vs 5 ms at N = 30,000, B = 17 on 2 CPU threads)
    basis = (phi[:, None, None] * torch.eye(channels, device=weights.device, dtype=weights.dtype)).reshape(-1, channels)
    off = weights.reshape(n, num_basis * channels) @ basis
    # one split: its backward is one concatenation (three slices would each zero-fill an [N, 10] gradient)
    d_xyz, d_quat, d_log_scale = off.split([3, 4, 3], dim=1)
    return d_xyz, d_quat, d_log_scale


def gaussian_geometry(xyz: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                      weights: torch.Tensor | None = None, t: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussians' world-space geometry at time ``t`` from their trained parameters (the torch reference of the
    backends' fused ``geometry``).

    Args:
        xyz: [N, 3] positions. log_scales: [N, 3]. quats: [N, 4] (w first, any norm).
        weights: [N, B, 10] bump weights of a deformable model, or None (``t`` is then unused).
    Returns:
        (means [N, 3], scales [N, 3] = exp(log scales), unit quaternions [N, 4]), offset by the deformation
        at ``t`` when there are weights.
    """
    if weights is None:
        return xyz, torch.exp(log_scales), normalize(quats)
    d_xyz, d_rot, d_scale = deform_offsets(weights, t)
    return xyz + d_xyz, torch.exp(log_scales + d_scale), normalize(quats + d_rot)
