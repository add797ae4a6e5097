"""Definitions every compositing backend shares, so they agree bit for bit on *what* is rendered.

Compositing contract (all backends):
  * A Gaussian with radius 0 is culled; otherwise the radius plays no part: every
    other Gaussian is considered for every pixel (no tile or 3-sigma truncation).
  * Gaussians are composited front to back in increasing depth (ties: lower index first).
  * alpha = min(ALPHA_MAX, opacity * exp(power)), power = -0.5(a dx^2 + c dy^2) - b dx dy,
    with dx = mean_x - (px + 0.5); a Gaussian is skipped where power > 0 or alpha < ALPHA_MIN.
  * Compositing stops before the first Gaussian that would push transmittance below T_MIN.
  * Outputs: ``image[c] = sum_i w_i color_i[c]`` and ``alpha = sum_i w_i``, w_i = alpha_i T_i;
    no background (the caller adds ``(1 - alpha) * bg``).

render()'s outputs from these (:func:`finish_outputs`; a backend may fuse it, ``Backend.finish``):
the image on the background ``rgb + (1 - alpha) bg``, the depth normalised by the coverage
``depth_sum / max(alpha, DEPTH_ALPHA_FLOOR)``, the other channels (features, 1/z) as composited.

Support cut-off (how backends find the pixels a Gaussian can reach, without changing any):
  alpha >= ALPHA_MIN needs opacity * exp(power) >= ALPHA_MIN, i.e. with the conic form
  q(d) = a dx^2 + 2 b dx dy + c dy^2 = -2 power:

      q(d) <= 2 ln(opacity / ALPHA_MIN),

  an ellipse reaching sqrt(2 ln(opacity / ALPHA_MIN)) standard deviations along each
  principal axis: 3.33 sigma for opacity 1, 3 sigma for 0.35, 2.3 sigma for 0.05, nothing
  below ALPHA_MIN (the ALPHA_MAX clamp never lowers alpha below ALPHA_MIN). The bound is
  inflated by a rounding margin (SUPPORT_SLACK_ULPS of the working precision) so that every
  pixel whose floating-point alpha passes lies inside it. A backend bins a Gaussian into the
  tiles whose pixel-centre rectangle meets that ellipse (:func:`bin_gaussians`, exact
  ellipse-versus-rectangle test); any superset of those tiles gives the same image, so the
  C++ kernels, gsplat's bounding boxes and the per-pixel brute force all agree. A Gaussian
  with no usable ellipse (conic not positive definite, non-finite values) goes to every tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TILE_SIZE = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
MAX_SUPPORT_SIGMAS = math.sqrt(2.0 * math.log(1.0 / ALPHA_MIN))  # reach of an opacity-1 Gaussian (3.33)
SUPPORT_SLACK_ULPS = 256.0  # rounding margin on the support bound, in units of the working epsilon
SPAN_MARGIN_PX = 1e-3  # tile rectangles are widened by this much on each side
DEPTH_ALPHA_FLOOR = 1e-6  # the depth's normaliser: keeps it finite where no Gaussian covers the pixel


@dataclass
class Support:
    """Per-Gaussian support ellipse q(d) <= q2, all [N] float64 (as the C++ ``pack_gaussian``).

    q2: inflated bound. det: a c - b^2. hx, hy: half extents of its bounding box (pixels).
    bounded: the ellipse is usable. never: opacity below ALPHA_MIN, no pixel can pass.
    """

    q2: torch.Tensor
    det: torch.Tensor
    hx: torch.Tensor
    hy: torch.Tensor
    bounded: torch.Tensor
    never: torch.Tensor


def support(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor) -> Support:
    """The support ellipse of each Gaussian (see the module docstring), with the rounding margin of
    the inputs' dtype. Same float64 operations, in the same order, as ``pack_gaussian`` in
    submodules/cpu_rasterizer/csrc/tile_math.h, so both backends bin identically.

    Args:
        means2d: [N, 2]. conics: [N, 3] (a, b, c). opacities: [N]; all of one float dtype.
    """
    dtype = means2d.dtype
    eps = torch.finfo(dtype).eps
    o_w = opacities.detach()
    alpha_min = torch.tensor(ALPHA_MIN, dtype=dtype)
    never = o_w < alpha_min * torch.tensor(1.0 - 16 * eps, dtype=dtype)
    m, con, o = means2d.detach().double(), conics.detach().double(), o_w.double()
    mx, my, a, b, c = m[:, 0], m[:, 1], con[:, 0], con[:, 1], con[:, 2]
    det = a * c - b * b
    finite = torch.isfinite(m).all(1) & torch.isfinite(con).all(1) & torch.isfinite(o)
    q2 = 2.0 * torch.log(o / alpha_min.double()).clamp_min(0.0)
    hx, hy = torch.sqrt(q2 * c / det), torch.sqrt(q2 * a / det)
    ab = b.abs()
    terms = a * hx * hx + c * hy * hy + 2.0 * ab * hx * hy
    slope = (a + ab) * hx + (c + ab) * hy
    coord = mx.abs() + my.abs() + hx + hy + 1.0
    q2 = q2 + SUPPORT_SLACK_ULPS * eps * (terms + q2 + 1.0 + slope * coord)
    hx, hy = torch.sqrt(q2 * c / det), torch.sqrt(q2 * a / det)
    bounded = ~never & finite & (a > 0) & (det > 0) & torch.isfinite(hx) & torch.isfinite(hy)
    return Support(q2=q2, det=det, hx=hx, hy=hy, bounded=bounded, never=never)


def _edge_min(u, v0, v1, b, c, inv_c, det_c):
    """min over v in [v0, v1] of a u^2 + 2 b u v + c v^2 (c > 0), as det/c u^2 + c (v - v*)^2
    with inv_c = 1 / c and det_c = det / c (non-negative terms: no cancellation)."""
    vs = -b * u * inv_c
    vc = torch.minimum(torch.maximum(vs, v0), v1)
    return det_c * u * u + c * (vc - vs) * (vc - vs)


def ellipse_meets_rect(mx, my, a, b, c, det, q2, x0, x1, y0, y1) -> torch.Tensor:
    """Whether {p : q(p - mean) <= q2} meets the rectangle [x0, x1] x [y0, y1] (all float64, broadcast).

    The minimum of the positive definite form over the rectangle: 0 when the mean is inside,
    else the smallest of its minima over the four edges (same operations as ``ellipse_meets_rect``
    in the C++ binning).
    """
    u0, u1, v0, v1 = x0 - mx, x1 - mx, y0 - my, y1 - my
    inside = (u0 <= 0) & (u1 >= 0) & (v0 <= 0) & (v1 >= 0)
    inv_a, inv_c = 1.0 / a, 1.0 / c
    det_a, det_c = det * inv_a, det * inv_c
    best = torch.minimum(_edge_min(u0, v0, v1, b, c, inv_c, det_c), _edge_min(u1, v0, v1, b, c, inv_c, det_c))
    best = torch.minimum(best, _edge_min(v0, u0, u1, b, a, inv_a, det_a))
    best = torch.minimum(best, _edge_min(v1, u0, u1, b, a, inv_a, det_a))
    return inside | (best <= q2)


def _candidate_range(centre, half, n_tiles: int, tile: int):
    """Inclusive tile range covering [centre - half, centre + half], clamped to the grid."""
    lo = torch.floor((centre - half) / tile).clamp(0, n_tiles - 1).long()
    hi = torch.floor((centre + half) / tile).clamp(0, n_tiles - 1).long()
    return lo, hi


def tile_pairs(means2d, conics, opacities, radii, width: int, height: int, tile: int = TILE_SIZE):
    """(Gaussian, tile) pairs of the contract: tiles whose pixel-centre rectangle meets the support.

    Args:
        means2d: [N, 2] pixels. conics: [N, 3]. opacities: [N]. radii: [N] int (0 = culled).
    Returns:
        (gid, tile_id): [P] int64 each, grouped by Gaussian, tiles in row-major order.
    """
    device = means2d.device
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    s = support(means2d, conics, opacities)
    m = means2d.detach().double()
    live = (radii > 0) & ~s.never
    unbounded = live & ~s.bounded
    x0, x1 = _candidate_range(m[:, 0], s.hx, tiles_x, tile)
    y0, y1 = _candidate_range(m[:, 1], s.hy, tiles_y, tile)
    zero = torch.zeros_like(x0)
    x0, y0 = torch.where(unbounded, zero, x0), torch.where(unbounded, zero, y0)
    x1, y1 = torch.where(unbounded, zero + tiles_x - 1, x1), torch.where(unbounded, zero + tiles_y - 1, y1)
    nx = torch.where(live, x1 - x0 + 1, zero)
    ny = torch.where(live, y1 - y0 + 1, zero)
    counts = nx * ny
    gid = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    local = torch.arange(gid.numel(), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    tx = x0[gid] + local % nx[gid].clamp_min(1)
    ty = y0[gid] + local // nx[gid].clamp_min(1)
    # pixel-centre rectangle of each candidate tile (clipped to the image), widened by the margin
    px0 = (tx * tile).double() + (0.5 - SPAN_MARGIN_PX)
    px1 = torch.clamp_max(tx * tile + tile, width).double() - (0.5 - SPAN_MARGIN_PX)
    py0 = (ty * tile).double() + (0.5 - SPAN_MARGIN_PX)
    py1 = torch.clamp_max(ty * tile + tile, height).double() - (0.5 - SPAN_MARGIN_PX)
    con = conics.detach().double()[gid]
    hit = ellipse_meets_rect(m[gid, 0], m[gid, 1], con[:, 0], con[:, 1], con[:, 2], s.det[gid], s.q2[gid],
                             px0, px1, py0, py1)
    keep = hit | unbounded[gid]
    return gid[keep], (ty * tiles_x + tx)[keep]


def bin_gaussians(means2d, conics, opacities, radii, depths, width: int, height: int, tile: int = TILE_SIZE):
    """Sort the (tile, Gaussian) pairs of :func:`tile_pairs` by tile, then depth.

    Returns:
        gauss_ids: [P] int64 Gaussian index of each pair, grouped by tile, front to back.
        offsets: [T + 1] int64, pairs of tile t are gauss_ids[offsets[t]:offsets[t+1]].
    """
    n_tiles = ((width + tile - 1) // tile) * ((height + tile - 1) // tile)
    gid, tile_id = tile_pairs(means2d, conics, opacities, radii, width, height, tile)
    order = torch.argsort(depths.detach(), stable=True)  # front to back
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    by_depth = torch.argsort(rank[gid], stable=True)
    gid, tile_id = gid[by_depth], tile_id[by_depth]
    perm = torch.argsort(tile_id, stable=True)  # stable keeps the depth order within a tile
    per_tile = torch.bincount(tile_id, minlength=n_tiles)
    offsets = torch.zeros(n_tiles + 1, dtype=torch.long, device=gid.device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return gid[perm], offsets


def finish_outputs(out: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor, depth_channel: int, invdepth: bool):
    """render()'s maps from the compositing's (the reference of every backend's fused ``finish``).

    Args:
        out: [C, H, W] composited channels: RGB, features (rows 3 .. depth_channel - 1), the depth sum
            (row ``depth_channel``) and, when ``invdepth``, the 1/z sum (the last row).
        alpha: [1, H, W] coverage. bg: [3] background colour.
    Returns:
        (image [3, H, W] on the background, features [depth_channel - 3, H, W], depth [1, H, W]
        normalised by the coverage, inverse depth [1, H, W] or None); features and inverse depth as composited.
    """
    # one split (its backward is one concatenation; slices would each zero-fill a full-size gradient)
    rgb, features, depth_sum, inv = out.split([3, depth_channel - 3, 1, int(invdepth)])
    image = rgb + (1.0 - alpha) * bg[:, None, None]
    depth = depth_sum / alpha.clamp_min(DEPTH_ALPHA_FLOOR)
    return image, features, depth, inv if invdepth else None
