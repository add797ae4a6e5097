"""Projection of 3D Gaussians to screen space (pure PyTorch, differentiable).

This is the first half of rendering; the second half (tile compositing) lives
in the backends. Conventions: OpenCV camera (x right, y down, z forward),
pixel (i, j) has its centre at (i + 0.5, j + 0.5), ``K`` in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from gaussian_renderer.backends.common import MAX_SUPPORT_SIGMAS
from utils.general_utils import build_covariance

NEAR_PLANE = 0.2  # Gaussians closer than this to the camera are culled (as in 3DGS)
EPS_2D = 0.3  # isotropic pixel-space blur added to every 2D covariance (anti-aliasing low-pass)
# --antialiasing (Mip-Splatting's 2D filter, graphdeco's and gsplat's "antialiased" mode): the blur
# above widens small Gaussians, so their opacity is scaled by sqrt(det(cov) / det(cov + EPS_2D I)),
# keeping each Gaussian's integral over the image unchanged at any resolution.
COMPENSATION_FLOOR = 1e-6  # smallest factor: keeps sqrt's gradient finite for a degenerate (flat) covariance
FRUSTUM_SLACK = 1.3  # Jacobian clamp: view-space x/z, y/z limited to 1.3x the half field of view
SIGMA_EXTENT = 3.0  # reported screen radius = 3 standard deviations (graphdeco's max_radii2D statistic)
EIGEN_GAP_FLOOR = 0.1  # floor under (mid^2 - det) in the major eigenvalue mid + sqrt(.) of the radius (graphdeco's)


@dataclass
class Projected:
    """Screen-space Gaussians (N = all input Gaussians; culled ones have radius 0).

    means2d: [N, 2] pixel coordinates.
    conics: [N, 3] inverse 2D covariance (a, b, c) for a*dx^2 + 2b*dx*dy + c*dy^2.
    depths: [N] view-space z.
    radii: [N] int32 pixel radius, 3 sigma of the major axis (0 = culled). Compositing uses it
        only as the cull flag: a Gaussian's reach comes from its opacity (backends/common.py).
    compensation: [N] opacity factor sqrt(det(cov2d) / det(cov2d + EPS_2D I)) in [0, 1] with
        ``antialiased=True`` (multiply the opacities by it before compositing), else None.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    compensation: torch.Tensor | None = None
    tile_radii: torch.Tensor | None = None  # [N, 2] int32 support box half extents, when a fused projection made them


def major_axis_variance(cov_xx: torch.Tensor, cov_yy: torch.Tensor, det: torch.Tensor) -> torch.Tensor:
    """[N] larger eigenvalue of 2D covariances given by their diagonal and determinant (graphdeco's
    formula, the eigen gap floored at EIGEN_GAP_FLOOR); 3 sqrt of it is the reported radius."""
    mid = 0.5 * (cov_xx + cov_yy)
    return mid + torch.sqrt((mid * mid - det).clamp_min(EIGEN_GAP_FLOOR))


def project_gaussians(
    means3d: torch.Tensor,
    scales: torch.Tensor,
    quats: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    antialiased: bool = False,
) -> Projected:
    """EWA-project Gaussians into one camera.

    Args:
        means3d: [N, 3] world positions.
        scales: [N, 3] activated scales. quats: [N, 4] (w first).
        viewmat: [4, 4] world-to-camera. K: [3, 3] intrinsics in pixels.
        width, height: image size in pixels.
        antialiased: also return the opacity compensation of the EPS_2D blur (--antialiasing).
    """
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    p = means3d @ R.T + t
    x, y, z = p.unbind(-1)
    in_front = z > NEAR_PLANE
    zs = torch.where(in_front, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    # Jacobian of the perspective map, with x/z and y/z clamped just outside the frustum
    lim_x = FRUSTUM_SLACK * 0.5 * width / fx
    lim_y = FRUSTUM_SLACK * 0.5 * height / fy
    tx = (x / zs).clamp(-lim_x, lim_x) * zs
    ty = (y / zs).clamp(-lim_y, lim_y) * zs
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / zs**2, zero, fy / zs, -fy * ty / zs**2], dim=-1
    ).reshape(-1, 2, 3)
    cov3d = build_covariance(scales, quats)
    T = J @ R
    cov2d = T @ cov3d @ T.transpose(1, 2)
    a = cov2d[:, 0, 0] + EPS_2D
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + EPS_2D
    det = a * c - b * b
    valid = in_front & (det > 0)
    det_s = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)
    compensation = None
    if antialiased:  # det(cov2d) / det(cov2d + EPS_2D I); 0 for culled or degenerate Gaussians
        det_raw = cov2d[:, 0, 0] * cov2d[:, 1, 1] - b * b
        ratio = (det_raw / det_s).clamp_min(COMPENSATION_FLOOR**2)
        compensation = torch.where(valid, ratio.sqrt(), torch.zeros_like(det))

    with torch.no_grad():
        lam = major_axis_variance(a, c, det)
        radius = torch.ceil(SIGMA_EXTENT * torch.sqrt(lam))
        reach = MAX_SUPPORT_SIGMAS * torch.sqrt(lam)  # no opacity <= 1 reaches further (common.py)
        u, v = means2d[:, 0], means2d[:, 1]
        on_screen = (u + reach > 0) & (u - reach < width) & (v + reach > 0) & (v - reach < height)
        radii = torch.where(valid & on_screen, radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=z, radii=radii, compensation=compensation)
