"""Torch reference backend == brute-force per-pixel compositing; float64 gradcheck."""
from __future__ import annotations

import pytest
import torch

from gaussian_renderer.backends import torch_backend
from tests.raster_reference import image_and_grads, random_projected, rasterize_bruteforce

SCENES = [  # n, width, height, channels, seed (sizes not multiples of the 16-pixel tile)
    (12, 21, 18, 3, 0),
    (25, 35, 20, 2, 1),
    (8, 17, 33, 1, 2),
]


@pytest.mark.parametrize("n,width,height,channels,seed", SCENES)
def test_torch_backend_matches_bruteforce(n, width, height, channels, seed):
    scene = random_projected(n, width, height, channels, dtype=torch.float64, seed=seed)
    img, alpha, grads = image_and_grads(torch_backend.rasterize, scene, width, height, seed=11)
    img_r, alpha_r, grads_r = image_and_grads(rasterize_bruteforce, scene, width, height, seed=11)
    assert img.shape == (channels, height, width) and alpha.shape == (1, height, width)
    torch.testing.assert_close(img, img_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_r, rtol=1e-10, atol=1e-12)
    for got, ref in zip(grads, grads_r):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)
    assert alpha.max() > 0.5  # the scene is not accidentally empty


def test_torch_backend_early_termination_matches_bruteforce():
    # stacked opaque Gaussians: transmittance falls below T_MIN within a few layers
    width, height = 18, 17
    means2d, conics, opacities, colors, depths, radii = random_projected(30, width, height, 2, seed=4)
    means2d = means2d * 0.3 + torch.tensor([width * 0.35, height * 0.35], dtype=torch.float64)
    opacities = 0.9 + 0.09 * torch.rand(30, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    scene = (means2d, conics, opacities, colors, depths, radii)
    img, alpha, grads = image_and_grads(torch_backend.rasterize, scene, width, height, seed=11)
    img_r, alpha_r, grads_r = image_and_grads(rasterize_bruteforce, scene, width, height, seed=11)
    torch.testing.assert_close(img, img_r, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_r, rtol=1e-10, atol=1e-12)
    for got, ref in zip(grads, grads_r):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)
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
