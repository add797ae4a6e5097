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
"""
from __future__ import annotations

import functools
import warnings

import torch

from gaussian_renderer.backends.common import TILE_SIZE, support
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


def rasterize(means2d, conics, opacities, colors, depths, radii, width: int, height: int, tile: int = TILE_SIZE):
    """Alpha-composite projected Gaussians with gsplat (CUDA, float32).

    Args:
        means2d: [N, 2] pixels. conics: [N, 3]. opacities: [N]. colors: [N, C] any C
        (gsplat pads C to a supported size internally). depths: [N] sort keys.
        radii: [N] int (0 = culled; the tiles come from the support ellipse). width, height:
        image size. tile: tile edge.
    Returns:
        image [C, H, W] and alpha [1, H, W], differentiable w.r.t. means2d, conics,
        opacities and colors.
    """
    from gsplat.cuda._wrapper import isect_offset_encode, isect_tiles, rasterize_to_pixels

    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    # gsplat takes a leading image dimension (one image here) and per-axis radii.
    m = means2d.float()[None]  # [1, N, 2]
    radii_xy = support_radii(means2d.float(), conics.float(), opacities.float(), radii, width, height)[None]
    _, isect_ids, flatten_ids = isect_tiles(
        m.detach().contiguous(), radii_xy, depths.detach().float()[None].contiguous(), tile, tiles_x, tiles_y
    )
    offsets = isect_offset_encode(isect_ids, 1, tiles_x, tiles_y)  # [1, tiles_y, tiles_x]
    image, alpha = rasterize_to_pixels(
        m, conics.float()[None], colors.float()[None], opacities.float()[None], width, height, tile, offsets, flatten_ids
    )  # [1, H, W, C], [1, H, W, 1]
    return image[0].permute(2, 0, 1), alpha[0].permute(2, 0, 1)
