"""Torch reference backend == brute-force per-pixel compositing; float64 gradcheck."""
from __future__ import annotations

import pytest
import torch

from gaussian_renderer.backends import common, torch_backend
from tests.raster_reference import (CUTOFF_KINDS, cutoff_scene, image_and_grads, random_projected,
                                    rasterize_bruteforce)

SCENES = [  # n, width, height, channels, seed (sizes not multiples of the 16-pixel tile)
    (12, 21, 18, 3, 0),
    (25, 35, 20, 2, 1),
    (8, 17, 33, 1, 2),
]


def assert_matches_bruteforce(scene, width, height, seed):
    """Torch backend == per-pixel brute force (float64): values and gradients. Returns (image, alpha)."""
    img, alpha, grads = image_and_grads(torch_backend.rasterize, scene, width, height, seed=seed)
    img_r, alpha_r, grads_r = image_and_grads(rasterize_bruteforce, scene, width, height, seed=seed)
    torch.testing.assert_close(img, img_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_r, rtol=1e-10, atol=1e-12)
    for got, ref in zip(grads, grads_r):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)
    return img, alpha


@pytest.mark.parametrize("n,width,height,channels,seed", SCENES)
def test_torch_backend_matches_bruteforce(n, width, height, channels, seed):
    scene = random_projected(n, width, height, channels, dtype=torch.float64, seed=seed)
    img, alpha = assert_matches_bruteforce(scene, width, height, seed=11)
    assert img.shape == (channels, height, width) and alpha.shape == (1, height, width)
    assert alpha.max() > 0.5  # the scene is not accidentally empty


def test_torch_backend_early_termination_matches_bruteforce():
    # stacked opaque Gaussians: transmittance falls below T_MIN within a few layers
    width, height = 18, 17
    means2d, conics, opacities, colors, depths, radii = random_projected(30, width, height, 2, seed=4)
    means2d = means2d * 0.3 + torch.tensor([width * 0.35, height * 0.35], dtype=torch.float64)
    opacities = 0.9 + 0.09 * torch.rand(30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    scene = (means2d, conics, opacities, colors, depths, radii)
    _, alpha = assert_matches_bruteforce(scene, width, height, seed=11)
    assert alpha.max() > 0.999  # termination was reached somewhere


def test_torch_backend_gradcheck():
    # Few Gaussians, opacities well inside (1/255, 0.99) and T far above T_MIN, so no
    # pixel sits on a threshold where the finite differences would jump.
    width, height = 17, 14
    means2d = torch.tensor([[4.2, 4.9], [11.3, 7.7], [8.6, 10.4], [13.9, 3.6]], dtype=torch.float64)
    conics = torch.tensor([[0.30, 0.05, 0.22], [0.41, -0.08, 0.35], [0.18, 0.02, 0.51], [0.6, 0.1, 0.3]],
                          dtype=torch.float64)
    opacities = torch.tensor([0.6, 0.45, 0.7, 0.5], dtype=torch.float64)
    colors = torch.rand(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    depths = torch.tensor([2.0, 1.0, 3.0, 1.5], dtype=torch.float64)
    radii = torch.tensor([9, 8, 9, 6], dtype=torch.int32)
    inputs = tuple(t.clone().requires_grad_(True) for t in (means2d, conics, opacities, colors))

    def fn(m, c, o, col):
        return torch_backend.rasterize(m, c, o, col, depths, radii, width, height)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _pixel_support(scene, width, height):
    """[N, H, W] bool: pixels where the contract lets each Gaussian contribute (power <= 0, alpha >= ALPHA_MIN)."""
    means2d, conics, opacities = scene[:3]
    py, px = torch.meshgrid(torch.arange(height, dtype=means2d.dtype) + 0.5,
                            torch.arange(width, dtype=means2d.dtype) + 0.5, indexing="ij")
    dx = means2d[:, 0, None, None] - px
    dy = means2d[:, 1, None, None] - py
    a, b, c = (conics[:, i, None, None] for i in range(3))
    power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
    alpha = (opacities[:, None, None] * torch.exp(power)).clamp_max(common.ALPHA_MAX)
    return (power <= 0) & (alpha >= common.ALPHA_MIN)


def _box_tiles(scene, width, height):
    """[N, tiles_y, tiles_x] bool: the tiles of the 3-sigma bounding square (the rule before the support cut-off)."""
    means2d, radii = scene[0].double(), scene[5].double()
    tx, ty = torch.arange((width + 15) // 16), torch.arange((height + 15) // 16)
    x0, x1 = torch.floor((means2d[:, 0] - radii) / 16), torch.floor((means2d[:, 0] + radii) / 16)
    y0, y1 = torch.floor((means2d[:, 1] - radii) / 16), torch.floor((means2d[:, 1] + radii) / 16)
    in_x = (tx[None] >= x0[:, None]) & (tx[None] <= x1[:, None])
    in_y = (ty[None] >= y0[:, None]) & (ty[None] <= y1[:, None])
    return in_y[:, :, None] & in_x[:, None, :]


def _tiles_of(pixels, tile=16):
    """[N, H, W] bool -> [N, tiles_y, tiles_x] bool (any pixel of the tile)."""
    n, h, w = pixels.shape
    padded = torch.zeros(n, -(-h // tile) * tile, -(-w // tile) * tile, dtype=torch.bool)
    padded[:, :h, :w] = pixels
    return padded.reshape(n, h // tile + (h % tile > 0), tile, -1, tile).any(4).any(2)


@pytest.mark.parametrize("kind", CUTOFF_KINDS)
def test_support_cutoff_changes_no_pixel(kind):
    """Binning by the opacity-dependent support ellipse: same image and gradients as the
    per-pixel brute force (which has no cut-off), on scenes where a 3-sigma square would differ."""
    width, height = 35, 33
    scene = cutoff_scene(kind, width, height, 2, dtype=torch.float64, seed=3)
    needed = _tiles_of(_pixel_support(scene, width, height))
    box = _box_tiles(scene, width, height)
    if kind == "solid_tails":  # the reach beyond 3 sigma matters here: the old square lost pixels
        assert (needed & ~box).any()
    else:  # the square held tiles the support never reaches: the ellipse bins fewer pairs
        gid, tile_id = common.tile_pairs(*scene[:3], scene[5], width, height)
        assert gid.numel() < int(box.sum())
    assert_matches_bruteforce(scene, width, height, seed=2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binning_is_conservative_and_tight(dtype):
    """Every tile holding a pixel that passes (in the working precision) is binned; every binned
    tile meets the support ellipse (checked by sampling the outline of its pixel-centre rectangle)."""
    width, height = 48, 40
    scenes = [cutoff_scene(k, width, height, 1, dtype=dtype, seed=4) for k in CUTOFF_KINDS]
    scenes.append(random_projected(200, width, height, 1, dtype=dtype, seed=4))
    tiles_x, tiles_y = 3, 3
    for scene in scenes:
        n = scene[0].shape[0]
        gid, tile_id = common.tile_pairs(*scene[:3], scene[5], width, height)
        binned = torch.zeros(n, tiles_y * tiles_x, dtype=torch.bool)
        binned[gid, tile_id] = True
        binned = binned.reshape(n, tiles_y, tiles_x)
        assert not (_tiles_of(_pixel_support(scene, width, height)) & ~binned).any()
        # the ellipse (with the rounding margin of common.support, +0.1 %) against every tile's
        # pixel-centre rectangle: mean inside, or a point of its outline (every 0.01 px) inside the ellipse
        m, con = scene[0].double(), scene[1].double()
        q2 = common.support(*scene[:3]).q2 * 1.001
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                x0, x1 = tx * 16 + 0.5, min(tx * 16 + 16, width) - 0.5
                y0, y1 = ty * 16 + 0.5, min(ty * 16 + 16, height) - 0.5
                ts = torch.linspace(0, 1, 1601, dtype=torch.float64)
                xs = torch.cat([x0 + (x1 - x0) * ts, x0 + (x1 - x0) * ts, torch.full_like(ts, x0), torch.full_like(ts, x1)])
                ys = torch.cat([torch.full_like(ts, y0), torch.full_like(ts, y1), y0 + (y1 - y0) * ts, y0 + (y1 - y0) * ts])
                u, v = xs[None] - m[:, :1], ys[None] - m[:, 1:]
                form = con[:, :1] * u * u + 2 * con[:, 1:2] * u * v + con[:, 2:] * v * v
                inside = (m[:, 0] >= x0) & (m[:, 0] <= x1) & (m[:, 1] >= y0) & (m[:, 1] <= y1)
                meets = inside | (form <= q2[:, None]).any(1)
                assert not (binned[:, ty, tx] & ~meets).any()
