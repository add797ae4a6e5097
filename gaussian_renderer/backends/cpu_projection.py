"""Fused per-Gaussian geometry, projection and SH colour on the CPU (C++/OpenMP kernels of submodules/cpu_rasterizer).

:func:`geometry`, :func:`project` and :func:`sh_to_color` compute :func:`scene.deformation.gaussian_geometry`,
:func:`gaussian_renderer.projection.project_gaussians` and :func:`utils.sh_utils.eval_sh` with the same
operations, one Gaussian per loop iteration, and their backward passes are the derivatives autograd takes of
the torch code (tests/test_cpu_projection.py and tests/test_cpu_geometry.py hold them to it, float64
gradcheck included). Together they replace about 170 small torch ops per render, and the autograd graph
behind them, by six calls.

Not covered by the kernels, so handed to the torch code instead: gradients w.r.t. the camera
(``viewmat`` / ``K`` requiring grad) and w.r.t. the view directions (render() detaches them).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from gaussian_renderer.backends.common import MAX_SUPPORT_SIGMAS
from gaussian_renderer.backends.cpu_backend import _extension, working_dtype
from gaussian_renderer.projection import (COMPENSATION_FLOOR, EIGEN_GAP_FLOOR, EPS_2D, FRUSTUM_SLACK, NEAR_PLANE,
                                          SIGMA_EXTENT, Projected, project_gaussians)
from scene.deformation import bump_activations, gaussian_geometry
from utils.general_utils import NORM_EPS, normalize
from utils.sh_utils import SH_C0, SH_C1, SH_C2, SH_C3, eval_sh

# Passed to the kernels in this order (bindings.cpp projection_settings / sh_settings): no C++ copies.
PROJECTION_CONSTANTS = [NEAR_PLANE, EPS_2D, FRUSTUM_SLACK, SIGMA_EXTENT, MAX_SUPPORT_SIGMAS, COMPENSATION_FLOOR,
                        EIGEN_GAP_FLOOR, NORM_EPS]
SH_CONSTANTS = [SH_C0, SH_C1, *SH_C2, *SH_C3]


class _ProjectCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means3d, scales, quats, viewmat, K, width, height, antialiased, threads):
        means2d, conics, depths, radii, compensation = _extension().project_forward(
            means3d, scales, quats, viewmat, K, width, height, antialiased, PROJECTION_CONSTANTS, threads)
        ctx.save_for_backward(means3d, scales, quats, viewmat, K)
        ctx.settings = (width, height, antialiased, threads)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, radii, compensation

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_means2d, grad_conics, grad_depths, _grad_radii, grad_compensation):
        means3d, scales, quats, viewmat, K = ctx.saved_tensors
        width, height, antialiased, threads = ctx.settings
        grads = (g.to(means3d.dtype).contiguous() for g in (grad_means2d, grad_conics, grad_depths, grad_compensation))
        d_means, d_scales, d_quats = _extension().project_backward(
            means3d, scales, quats, viewmat, K, width, height, antialiased, PROJECTION_CONSTANTS, *grads, threads)
        return d_means, d_scales, d_quats, None, None, None, None, None, None


def project(means3d, scales, quats, viewmat, K, width: int, height: int, antialiased: bool = False) -> Projected:
    """The C++ EWA projection, with the result of ``projection.project_gaussians``.

    Args and result as :func:`gaussian_renderer.projection.project_gaussians` (``tile_radii`` stays
    None: the CPU compositing bins by the support ellipse itself). Differentiable w.r.t. means3d,
    scales and quats; runs on ``torch.get_num_threads()`` OpenMP threads.
    """
    if viewmat.requires_grad or K.requires_grad:  # camera gradients: only the torch projection has them
        return project_gaussians(means3d, scales, quats, viewmat, K, width, height, antialiased=antialiased)
    dtype = working_dtype(means3d)
    geometry = (t.to(dtype).contiguous() for t in (means3d, scales, quats))
    camera = (t.to(dtype).contiguous() for t in (viewmat, K))
    means2d, conics, depths, radii, compensation = _ProjectCPU.apply(
        *geometry, *camera, int(width), int(height), bool(antialiased), torch.get_num_threads())
    return Projected(means2d=means2d, conics=conics, depths=depths, radii=radii,
                     compensation=compensation if antialiased else None)


class _ShCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, sh, dirs, threads):
        ctx.save_for_backward(sh, dirs)
        ctx.settings = (degree, threads)
        return _extension().sh_forward(sh, dirs, degree, SH_CONSTANTS, NORM_EPS, threads)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_colors):
        sh, dirs = ctx.saved_tensors
        degree, threads = ctx.settings
        d_sh = _extension().sh_backward(sh, dirs, degree, SH_CONSTANTS, NORM_EPS,
                                        grad_colors.to(sh.dtype).contiguous(), threads)
        return None, d_sh, None, None


def sh_to_color(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """The C++ SH colour, with ``eval_sh``'s result: [N, 3] = clamp_min(sum_k sh_k Y_k(dir) + 0.5, 0).

    Args:
        degree: SH degree in use. sh: [N, K, 3] coefficients, K >= (degree + 1)^2. dirs: [N, 3]
        view directions (any length; normalised as ``general_utils.normalize`` does).
    Returns:
        [N, 3], differentiable w.r.t. sh (directions with a gradient go through the torch code).
    """
    if dirs.requires_grad:
        return eval_sh(degree, sh, normalize(dirs))
    dtype = working_dtype(sh)
    return _ShCPU.apply(int(degree), sh.to(dtype).contiguous(), dirs.to(dtype).contiguous(), torch.get_num_threads())


class _GeometryCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xyz, log_scales, quats, weights, phi, threads):
        ctx.save_for_backward(log_scales, quats, weights, phi)
        ctx.threads = threads
        return tuple(_extension().geometry_forward(xyz, log_scales, quats, weights, phi, NORM_EPS, threads))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_means, grad_scales, grad_quats):
        log_scales, quats, weights, phi = ctx.saved_tensors
        grads = (torch.zeros_like(ref) if g is None else g.to(ref.dtype).contiguous()
                 for g, ref in ((grad_means, log_scales), (grad_scales, log_scales), (grad_quats, quats)))
        d_xyz, d_log_scales, d_quats, d_weights = _extension().geometry_backward(
            log_scales, quats, weights, phi, NORM_EPS, *grads, ctx.threads)
        return d_xyz, d_log_scales, d_quats, d_weights if weights is not None else None, None, None


def geometry(xyz, log_scales, quats, weights=None, t: float = 0.0):
    """The C++ ``scene.deformation.gaussian_geometry``: (means [N, 3], scales [N, 3], unit quaternions [N, 4]).

    Args and result as that function (weights [N, B, 10] or None). Differentiable w.r.t. xyz, log_scales,
    quats and weights (the bump activations at ``t`` are constants); one pass over the Gaussians each way
    instead of the deformation's matrix products and the activations' autograd graph.
    """
    dtype = working_dtype(xyz)
    params = [p.to(dtype).contiguous() for p in (xyz, log_scales, quats)]
    phi = None
    if weights is not None:
        weights = weights.to(dtype).contiguous()
        phi = bump_activations(t, weights.shape[1], weights.device, dtype)
    return _GeometryCPU.apply(*params, weights, phi, torch.get_num_threads())
