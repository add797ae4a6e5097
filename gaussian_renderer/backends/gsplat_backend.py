"""CUDA compositing through gsplat's tile rasterizer (PyPI ``gsplat`` 1.5.x).

Only gsplat's low-level CUDA functions are used: ``isect_tiles`` +
``isect_offset_encode`` bin *our* projected Gaussians and ``rasterize_to_pixels``
composites them, so projection stays in :mod:`gaussian_renderer.projection` and
the screen-space mean gradient (``means2d.grad``, used for densification)
comes back through gsplat's backward pass.

Differences from the contract in :mod:`gaussian_renderer.backends.common` (gsplat
1.5.3 kernels; tests compare against the torch backend with a looser tolerance
and on scenes that keep clear of these edges):
  * alpha is clamped at 0.999 (contract: ``ALPHA_MAX`` = 0.99);
  * a pixel stops when the next transmittance is ``<= 1e-4`` (contract: ``< T_MIN``),
    and transmittance is accumulated in float32 (contract / torch: double);
  * gsplat bins a Gaussian into the tiles of its bounding box, so we hand it per-axis radii
    covering the support ellipse of the contract (:func:`support_radii`): a superset of the
    contract's tiles, hence the same pixels (``ceil`` of the radius keeps gsplat's exclusive
    ``ceil`` upper bound from dropping a tile the ellipse reaches);
  * depth order comes from a radix sort of the float32 depth bits (ties: lower index);
  * ``exp`` is CUDA's fast ``__expf``, and everything runs in float32.
The skip rule for ``alpha < 1/255`` and ``power > 0`` is the same.

Projection and SH colour (:func:`project`, :func:`sh_to_color`) use gsplat's fused CUDA
kernels, which replace a few hundred small PyTorch ops (and their backward) per render.
They follow :func:`gaussian_renderer.projection.project_gaussians` (near plane, EPS_2D blur,
1.3x frustum clamp of the Jacobian, antialiasing compensation) and ``eval_sh``, checked on a
GPU by tests/test_gsplat_backend.py, except:
  * gsplat culls a Gaussian whose per-axis 3.33-sigma box misses the image; the torch
    projection culls by a circle of the major axis, so a few more off-screen Gaussians
    count as visible there (neither reaches a pixel);
  * gsplat's Jacobian clamp is centred on the principal point (the torch one on the image
    centre): the same for centred cameras;
  * the tiles come from gsplat's 3.33-sigma boxes (``tile_radii``), a superset of the
    contract's support ellipse except within 0.0002 sigma of an opacity-1 Gaussian's edge,
    where alpha is 1/255.
"""
from __future__ import annotations

import functools
import warnings

import torch

from gaussian_renderer.backends.common import TILE_SIZE, support
from gaussian_renderer.projection import EPS_2D, NEAR_PLANE, SIGMA_EXTENT, Projected, major_axis_variance
from utils.errors import one_line


@functools.lru_cache(maxsize=1)
def gsplat_available() -> bool:
    """True when CUDA is available, gsplat imports and its CUDA kernels load.

    gsplat compiles its kernels the first time they are loaded (a few minutes, needs
    nvcc); loading them here, once, means a failed build gives one warning and the
    registry's fallback instead of an error deep inside the first render.
    """
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels  # noqa: F401
    except Exception:  # not installed, or a broken / incompatible install
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception as exc:  # the JIT build failed
        reason = one_line(exc)
        warnings.warn(f"gsplat could not build its CUDA kernels ({reason})", stacklevel=2)
        return False
    if _C is None:
        warnings.warn("gsplat found no CUDA toolkit to build its kernels (install cuda-nvcc, see environment.yml)", stacklevel=2)
        return False
    return True


def support_radii(means2d, conics, opacities, radii, width: int, height: int) -> torch.Tensor:
    """Per-axis integer pixel radii of each Gaussian's support box (see common.support).

    Args:
        means2d: [N, 2]. conics: [N, 3]. opacities: [N]. radii: [N] int (0 = culled).
    Returns:
        [N, 2] int32: 0 for culled Gaussians and those whose opacity is below ALPHA_MIN; a box
        covering the whole image for those without a usable ellipse (non positive definite conic).
    """
    s = support(means2d, conics, opacities)
    m = means2d.detach().double()
    half = torch.stack([s.hx, s.hy], -1).ceil()
    cover = (m.abs() + torch.tensor([width, height], dtype=torch.float64, device=m.device)).ceil()
    live = (radii > 0).to(m.device)
    bounded = (live & s.bounded)[:, None]
    unbounded = (live & ~s.bounded & ~s.never & torch.isfinite(m).all(-1))[:, None]  # a NaN mean never contributes
    out = torch.where(bounded, half, torch.where(unbounded, cover, torch.zeros_like(half)))
    return out.clamp_max(2**30).to(torch.int32).contiguous()


def project(means3d, scales, quats, viewmat, K, width: int, height: int, antialiased: bool = False) -> Projected:
    """gsplat's fused EWA projection, with the result of ``projection.project_gaussians``.

    Args and result as :func:`gaussian_renderer.projection.project_gaussians`; the result also
    carries ``tile_radii`` [N, 2] int32, gsplat's per-axis box half extents for :func:`rasterize`.
    Differentiable w.r.t. means3d, scales and quats (gsplat's backward kernels).
    """
    from gsplat.cuda._wrapper import fully_fused_projection

    radii_xy, means2d, depths, conics, compensation = fully_fused_projection(
        means3d.float()[None], None, quats.float()[None], scales.float()[None], viewmat.float()[None, None],
        K.float()[None, None], width, height, eps2d=EPS_2D, near_plane=NEAR_PLANE, calc_compensations=antialiased,
    )  # [1, 1, N, ...]
    radii_xy = radii_xy[0, 0]
    live = radii_xy.amax(-1) > 0
    # gsplat leaves the outputs of culled Gaussians unwritten (uninitialised memory): zero them
    means2d, conics = (torch.where(live[:, None], t[0, 0], 0.0) for t in (means2d, conics))
    depths = torch.where(live, depths[0, 0], 0.0)
    with torch.no_grad():  # the reported radius: 3 sigma of the major axis, as the torch projection
        a, b, c = conics.unbind(-1)
        det_conic = torch.where(live, a * c - b * b, 1.0)
        lam = major_axis_variance(c / det_conic, a / det_conic, 1.0 / det_conic)  # the conic inverted
        radii = torch.where(live, torch.ceil(SIGMA_EXTENT * torch.sqrt(lam)), 0.0).to(torch.int32)
    return Projected(means2d=means2d, conics=conics, depths=depths, radii=radii,
                     compensation=None if compensation is None else compensation[0, 0], tile_radii=radii_xy)


def sh_to_color(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """gsplat's SH kernel with ``eval_sh``'s result: [N, 3] = clamp_min(sum_k sh_k Y_k(dir) + 0.5, 0).

    Args:
        degree: SH degree in use. sh: [N, K, 3] coefficients, K >= (degree + 1)^2. dirs: [N, 3]
        view directions (any length).
    """
    from gsplat.cuda._wrapper import spherical_harmonics

    return (spherical_harmonics(degree, dirs.float(), sh.float()) + 0.5).clamp_min(0.0)


def rasterize(means2d, conics, opacities, colors, depths, radii, width: int, height: int, tile: int = TILE_SIZE,
              tile_radii: torch.Tensor | None = None):
    """Alpha-composite projected Gaussians with gsplat (CUDA, float32).

    Args:
        means2d: [N, 2] pixels. conics: [N, 3]. opacities: [N]. colors: [N, C] any C
        (gsplat pads C to a supported size internally). depths: [N] sort keys.
        radii: [N] int (0 = culled; the tiles come from the support ellipse). width, height:
        image size. tile: tile edge. tile_radii: [N, 2] int32 per-axis box half extents already
        covering the support (from :func:`project`), used instead of computing them here.
    Returns:
        image [C, H, W] and alpha [1, H, W], differentiable w.r.t. means2d, conics,
        opacities and colors.
    """
    from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels

    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    # gsplat takes a leading image dimension (one image here) and per-axis radii.
    m = means2d.float()[None]  # [1, N, 2]
    if tile_radii is None:
        tile_radii = support_radii(means2d.float(), conics.float(), opacities.float(), radii, width, height)
    radii_xy = tile_radii.to(torch.int32).contiguous()[None]
    _, isect_ids, flatten_ids = isect_tiles(
        m.detach().contiguous(), radii_xy, depths.detach().float()[None].contiguous(), tile, tiles_x, tiles_y
    )
    offsets = isect_offset_encode(isect_ids, 1, tiles_x, tiles_y)  # [1, tiles_y, tiles_x]
    image, alpha = rasterize_to_pixels(
        m, conics.float()[None], colors.float()[None], opacities.float()[None], width, height, tile, offsets, flatten_ids
    )  # [1, H, W, C], [1, H, W, 1]
    return image[0].permute(2, 0, 1), alpha[0].permute(2, 0, 1)
