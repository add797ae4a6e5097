"""gsplat (CUDA) backend vs the torch reference backend; skips without CUDA / gsplat.

gsplat clamps alpha at 0.999 and stops at T <= 1e-4 in float32 (the contract:
0.99 and T < 1e-4, double transmittance), so the scenes keep opacity * exp(power)
below 0.99 and use few layers; the tolerance covers float32 + fast ``__expf``.
"""
from __future__ import annotations

import pytest
import torch

from gaussian_renderer.backends import gsplat_backend, torch_backend
from tests.raster_reference import random_projected

VALUE_TOL = 1e-4
GRAD_RTOL = 1e-3  # relative to the largest gradient of each kind


def _require_gsplat():
    if not torch.cuda.is_available():
        pytest.skip("gsplat backend needs CUDA; no CUDA device here")
    if not gsplat_backend.gsplat_available():
        pytest.skip("gsplat is not installed (pip install gsplat==1.5.3) or failed to import")


def _render(fn, scene, width, height):
    inputs = [t.detach().clone().cuda().requires_grad_(i < 4) for i, t in enumerate(scene)]
    image, alpha = fn(*inputs, width, height)
    g = torch.Generator().manual_seed(3)
    w_img = torch.randn(image.shape, generator=g).cuda()
    w_alpha = torch.randn(alpha.shape, generator=g).cuda()
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach().cpu(), alpha.detach().cpu(), [t.grad.cpu() for t in inputs[:4]]


@pytest.mark.parametrize("n,width,height,channels", [(300, 70, 45, 3), (500, 64, 48, 19), (200, 37, 29, 1)])
def test_gsplat_matches_torch_backend(n, width, height, channels):
    _require_gsplat()
    scene = list(random_projected(n, width, height, channels, dtype=torch.float32, seed=n))
    scene[2] = scene[2].clamp_max(0.95)  # keep alpha below both clamps (0.99 / 0.999)
    img, alpha, grads = _render(gsplat_backend.rasterize, scene, width, height)
    img_r, alpha_r, grads_r = _render(torch_backend.rasterize, scene, width, height)
    assert img.shape == img_r.shape == (channels, height, width)
    assert (img - img_r).abs().max() <= VALUE_TOL
    assert (alpha - alpha_r).abs().max() <= VALUE_TOL
    for got, ref in zip(grads, grads_r):
        assert (got - ref).abs().max() <= GRAD_RTOL * max(1.0, ref.abs().max().item())


def test_gsplat_means2d_gradient_reaches_the_leaf():
    _require_gsplat()
    scene = random_projected(100, 40, 30, 3, dtype=torch.float32, seed=1)
    means2d = scene[0].clone().cuda().requires_grad_(True)
    rest = [t.cuda() for t in scene[1:]]
    image, alpha = gsplat_backend.rasterize(means2d, *rest, 40, 30)
    (image.sum() + alpha.sum()).backward()
    assert means2d.grad is not None and means2d.grad.abs().sum() > 0
