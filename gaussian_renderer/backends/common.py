"""Definitions every compositing backend shares, so they agree bit for bit on *what* is rendered.

Compositing contract (all backends):
  * Gaussian g is considered for pixel p only if p's 16x16 tile lies in g's tile
    rectangle :func:`tile_rect` (from its pixel radius; radius 0 = culled).
  * Gaussians are composited front to back in increasing depth (ties: lower index first).
  * alpha = min(ALPHA_MAX, opacity * exp(power)), power = -0.5(a dx^2 + c dy^2) - b dx dy,
    with dx = mean_x - (px + 0.5); a Gaussian is skipped where power > 0 or alpha < ALPHA_MIN.
  * Compositing stops before the first Gaussian that would push transmittance below T_MIN.
  * Outputs: ``image[c] = sum_i w_i color_i[c]`` and ``alpha = sum_i w_i``, w_i = alpha_i T_i;
    no background (the caller adds ``(1 - alpha) * bg``).
"""
from __future__ import annotations

import torch

TILE_SIZE = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def tile_rect(means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int, tile: int = TILE_SIZE):
    """Inclusive tile ranges touched by each Gaussian.

    Args:
        means2d: [N, 2] pixels. radii: [N] int pixel radii.
    Returns:
        (x0, y0, x1, y1): [N] int64 each, clamped to the grid; empty (x1 < x0) when radius is 0.
    """
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    m = means2d.detach()
    r = radii.to(m.dtype)
    x0 = torch.floor((m[:, 0] - r) / tile).clamp(0, tiles_x - 1).long()
    x1 = torch.floor((m[:, 0] + r) / tile).clamp(0, tiles_x - 1).long()
    y0 = torch.floor((m[:, 1] - r) / tile).clamp(0, tiles_y - 1).long()
    y1 = torch.floor((m[:, 1] + r) / tile).clamp(0, tiles_y - 1).long()
    dead = radii <= 0
    x1 = torch.where(dead, x0 - 1, x1)
    return x0, y0, x1, y1


def bin_gaussians(means2d, radii, depths, width: int, height: int, tile: int = TILE_SIZE):
    """Sort (tile, Gaussian) pairs by tile, then depth.

    Returns:
        gauss_ids: [P] int64 Gaussian index of each pair, grouped by tile, front to back.
        offsets: [T + 1] int64, pairs of tile t are gauss_ids[offsets[t]:offsets[t+1]].
    """
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    n_tiles = tiles_x * tiles_y
    device = means2d.device
    x0, y0, x1, y1 = tile_rect(means2d, radii, width, height, tile)
    nx = (x1 - x0 + 1).clamp_min(0)
    ny = (y1 - y0 + 1).clamp_min(0)
    counts = nx * ny
    order = torch.argsort(depths.detach(), stable=True)  # front to back
    counts_o = counts[order]
    gid = torch.repeat_interleave(order, counts_o)
    # position of each pair inside its Gaussian's rectangle
    start = torch.cumsum(counts_o, 0) - counts_o
    local = torch.arange(gid.numel(), device=device) - torch.repeat_interleave(start, counts_o)
    nxg = nx[gid]
    tx = x0[gid] + local % nxg.clamp_min(1)
    ty = y0[gid] + local // nxg.clamp_min(1)
    tile_id = ty * tiles_x + tx
    perm = torch.argsort(tile_id, stable=True)  # stable keeps the depth order within a tile
    gauss_ids = gid[perm]
    per_tile = torch.bincount(tile_id, minlength=n_tiles)
    offsets = torch.zeros(n_tiles + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return gauss_ids, offsets
