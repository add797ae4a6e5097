"""Losses: separable SSIM equals the 11x11 2D-window definition; masked means ignore excluded pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.loss_utils import l1_loss, ssim, ssim_map


def _ssim_2d_reference(a, b):
    x = torch.arange(11, dtype=a.dtype) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None]).expand(a.shape[0], 1, 11, 11)
    conv = lambda t: F.conv2d(t[None], w, padding=5, groups=a.shape[0])[0]  # noqa: E731
    mu1, mu2 = conv(a), conv(b)
    s11, s22, s12 = conv(a * a) - mu1**2, conv(b * b) - mu2**2, conv(a * b) - mu1 * mu2
    return ((2 * mu1 * mu2 + 1e-4) * (2 * s12 + 9e-4)) / ((mu1**2 + mu2**2 + 1e-4) * (s11 + s22 + 9e-4))


def test_separable_ssim_matches_2d_window():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 30, 41, generator=g, dtype=torch.float64), torch.rand(3, 30, 41, generator=g, dtype=torch.float64)
    assert torch.allclose(ssim_map(a, b), _ssim_2d_reference(a, b), atol=1e-12)
    assert float(ssim(a, a)) == 1.0 or abs(float(ssim(a, a)) - 1.0) < 1e-12
    a.requires_grad_(True)
    (grad,) = torch.autograd.grad(ssim(a, b), a)
    (grad_ref,) = torch.autograd.grad(_ssim_2d_reference(a, b).mean(), a)
    assert torch.allclose(grad, grad_ref, atol=1e-12)


def test_masked_l1_ignores_excluded_pixels():
    a, b = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)
    b[:, 0, 0] = 5.0
    mask = torch.ones(1, 4, 4)
    mask[:, 0, 0] = 0
    assert float(l1_loss(a, b, mask)) == 0.0 and float(l1_loss(a, b)) > 0
