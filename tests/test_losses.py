"""Losses: SSIM equals the 11x11 2D-window definition and the planar-blur implementation it replaced (values and
gradients); masked means ignore excluded pixels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from utils.loss_utils import _gaussian_kernel_1d, l1_loss, ssim, ssim_map


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


def _ssim_planar_reference(img1, img2):
    """The implementation before the channels-last blur: depthwise convolutions on planar maps."""
    C, pad = img1.shape[0], 5
    g = _gaussian_kernel_1d(img1.device, img1.dtype)

    def blur(x):
        B = x.shape[0]
        y = F.conv2d(x[None], g.view(1, 1, 1, -1).expand(B, 1, 1, -1), padding=(0, pad), groups=B)
        return F.conv2d(y, g.view(1, 1, -1, 1).expand(B, 1, -1, 1), padding=(pad, 0), groups=B)[0]

    mu1, e11, e12 = blur(torch.cat([img1, img1 * img1, img1 * img2])).split(C)
    mu2, e22 = blur(torch.cat([img2, img2 * img2])).split(C)
    s11, s22, s12 = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    return ((2 * mu1 * mu2 + 1e-4) * (2 * s12 + 9e-4)) / ((mu1 * mu1 + mu2 * mu2 + 1e-4) * (s11 + s22 + 9e-4))


def _values_and_grads(fn, pred, gt, mask):
    """SSIM map, masked loss and its gradients for both images, as training computes it."""
    a, b = pred.clone().requires_grad_(True), gt.clone().requires_grad_(True)
    m = fn(a * mask, b * mask)
    loss = (m * mask).sum() / mask.sum()
    return (m.detach(), loss.detach(), *torch.autograd.grad(loss, [a, b]))


def _assert_close_to_reference(new, ref):
    torch.testing.assert_close(new[0], ref[0], rtol=0, atol=2e-6)
    torch.testing.assert_close(new[1], ref[1], rtol=0, atol=1e-6)
    for gn, gr in zip(new[2:], ref[2:]):
        scale = float(gr.abs().max())
        assert scale > 0 and float((gn - gr).abs().max()) <= 1e-4 * scale


def test_ssim_equals_the_planar_implementation_in_float32():
    """Values and gradients (both images, masked as in training) within float32 rounding of the planar blur."""
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, 61, 75, generator=g)
    pred = (gt + 0.2 * torch.randn(3, 61, 75, generator=g)).clamp(0, 1)
    mask = (torch.rand(1, 61, 75, generator=g) > 0.3).float()
    _assert_close_to_reference(_values_and_grads(ssim_map, pred, gt, mask),
                               _values_and_grads(_ssim_planar_reference, pred, gt, mask))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ssim_on_cuda_equals_the_cpu_one():
    g = torch.Generator().manual_seed(3)
    a, b, m = torch.rand(3, 40, 52, generator=g), torch.rand(3, 40, 52, generator=g), torch.ones(1, 40, 52)
    on_gpu = _values_and_grads(ssim_map, a.cuda(), b.cuda(), m.cuda())
    _assert_close_to_reference([t.cpu() for t in on_gpu], _values_and_grads(ssim_map, a, b, m))


def test_ssim_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(2, 9, 13, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(2, 9, 13, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ssim_map, (a, b), eps=1e-6, atol=1e-8)


def test_masked_l1_ignores_excluded_pixels():
    a, b = torch.zeros(3, 4, 4), torch.zeros(3, 4, 4)
    b[:, 0, 0] = 5.0
    mask = torch.ones(1, 4, 4)
    mask[:, 0, 0] = 0
    assert float(l1_loss(a, b, mask)) == 0.0 and float(l1_loss(a, b)) > 0
