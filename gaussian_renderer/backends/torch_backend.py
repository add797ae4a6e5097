"""Reference compositing backend in pure PyTorch (autograd does the backward pass).

Tiles are processed in chunks: for each chunk the Gaussians of every tile are
gathered into a padded [tiles, K] table and alpha is evaluated for every
(pixel, Gaussian) pair of the chunk. Exact and differentiable, but it
materialises pixel x Gaussian tensors, so it is the numerical reference and the
fallback rather than the fast path.
"""
from __future__ import annotations

import torch

from gaussian_renderer.backends.common import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE, bin_gaussians

MAX_CHUNK_ELEMENTS = 1 << 22  # pixel x Gaussian pairs evaluated at once (bounds memory)


def _composite_tiles(px, py, means2d, conics, opacities, colors, idx):
    """Composite a batch of tiles.

    Args:
        px, py: [t, P] pixel centre coordinates.
        idx: [t, K] Gaussian indices front to back, -1 = padding.
    Returns:
        ([t, P, C] colour, [t, P] alpha).
    """
    valid = idx >= 0
    safe = idx.clamp_min(0)
    m = means2d[safe]  # [t, K, 2]
    con = conics[safe]
    dx = m[..., 0][:, None, :] - px[..., None]  # [t, P, K]
    dy = m[..., 1][:, None, :] - py[..., None]
    a, b, c = con[..., 0][:, None, :], con[..., 1][:, None, :], con[..., 2][:, None, :]
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = (opacities[safe][:, None, :] * torch.exp(power)).clamp_max(ALPHA_MAX)
    keep = valid[:, None, :] & (power <= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    trans_incl = torch.cumprod(1.0 - alpha, dim=-1)
    trans_excl = torch.cat([torch.ones_like(trans_incl[..., :1]), trans_incl[..., :-1]], dim=-1)
    alive = trans_incl.detach() >= T_MIN  # monotone: once below, all later are dropped
    w = torch.where(alive, alpha * trans_excl, torch.zeros_like(alpha))
    out = torch.einsum("tpk,tkc->tpc", w, colors[safe])
    return out, w.sum(-1)


def rasterize(means2d, conics, opacities, colors, depths, radii, width: int, height: int, tile: int = TILE_SIZE):
    """Alpha-composite projected Gaussians (see :mod:`gaussian_renderer.backends.common`).

    Args:
        means2d: [N, 2] pixels. conics: [N, 3]. opacities: [N] in (0, 1).
        colors: [N, C] any channel count. depths: [N] sort keys. radii: [N] int (0 = culled; the value
            is not used otherwise: the tiles come from the support ellipse).
    Returns:
        image [C, H, W] and alpha [1, H, W].
    """
    gauss_ids, offsets = bin_gaussians(means2d, conics, opacities, radii, depths, width, height, tile)
    return composite_binned(means2d, conics, opacities, colors, gauss_ids, offsets, width, height, tile)


def composite_binned(means2d, conics, opacities, colors, gauss_ids, offsets, width: int, height: int, tile: int = TILE_SIZE):
    """Composite Gaussians that are already binned into tiles.

    Args:
        means2d: [N, 2]. conics: [N, 3]. opacities: [N]. colors: [N, C].
        gauss_ids: [P] int64 Gaussian index of each (tile, Gaussian) pair, grouped by
            row-major tile and front to back inside a tile.
        offsets: [T + 1] int64, the pairs of tile t are ``gauss_ids[offsets[t]:offsets[t + 1]]``.
    Returns:
        image [C, H, W] and alpha [1, H, W].
    """
    C = colors.shape[1]
    dev, dt = colors.device, colors.dtype
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    counts = offsets[1:] - offsets[:-1]
    n_tiles = tiles_x * tiles_y
    P = tile * tile
    out = torch.zeros(n_tiles, P, C, device=dev, dtype=dt)
    alpha_out = torch.zeros(n_tiles, P, device=dev, dtype=dt)
    local = torch.arange(P, device=dev)
    lx, ly = (local % tile).to(dt), (local // tile).to(dt)
    occupied = torch.nonzero(counts > 0).flatten()
    if occupied.numel():
        # process occupied tiles in chunks sorted by count so padding stays small
        occ = occupied[torch.argsort(counts[occupied])]
        occ_counts = counts[occ].tolist()
        start = 0
        outs, alphas, tids = [], [], []
        while start < occ.numel():
            n = max(1, MAX_CHUNK_ELEMENTS // (P * occ_counts[start]))
            n = min(n, occ.numel() - start)
            while n > 1 and n * P * occ_counts[start + n - 1] > MAX_CHUNK_ELEMENTS:
                n //= 2
            chunk = occ[start : start + n]
            kmax = int(counts[chunk].max())
            ar = torch.arange(kmax, device=dev)
            pos = offsets[chunk][:, None] + ar[None, :]
            in_range = ar[None, :] < counts[chunk][:, None]
            idx = torch.where(in_range, gauss_ids[pos.clamp_max(gauss_ids.numel() - 1)], torch.full_like(pos, -1))
            tx = (chunk % tiles_x).to(dt)
            ty = (chunk // tiles_x).to(dt)
            px = tx[:, None] * tile + lx[None, :] + 0.5
            py = ty[:, None] * tile + ly[None, :] + 0.5
            o, a = _composite_tiles(px, py, means2d, conics, opacities, colors, idx)
            outs.append(o)
            alphas.append(a)
            tids.append(chunk)
            start += chunk.numel()
        tids = torch.cat(tids)
        out = out.index_put((tids,), torch.cat(outs))
        alpha_out = alpha_out.index_put((tids,), torch.cat(alphas))
    # [tiles_y, tiles_x, ty, tx, C] -> [C, H, W]
    img = out.reshape(tiles_y, tiles_x, tile, tile, C).permute(4, 0, 2, 1, 3).reshape(C, tiles_y * tile, tiles_x * tile)
    alp = alpha_out.reshape(tiles_y, tiles_x, tile, tile).permute(0, 2, 1, 3).reshape(1, tiles_y * tile, tiles_x * tile)
    return img[:, :height, :width], alp[:, :height, :width]
