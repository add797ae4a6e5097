"""Photometric losses (optionally masked): L1, SSIM, depth L1."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` [C,H,W] over pixels where ``mask`` [1,H,W] is 1 (all pixels if None)."""
    if mask is None:
        return x.mean()
    m = mask.expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error over valid pixels."""
    return masked_mean((pred - gt).abs(), mask)


def _gaussian_kernel_1d(device, dtype) -> torch.Tensor:
    """[SSIM_WINDOW] normalised Gaussian taps."""
    x = torch.arange(SSIM_WINDOW, device=device, dtype=dtype) - SSIM_WINDOW // 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def _gaussian_blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of [B, H, W] maps (zero padding), equal to the 2D window.

    Two depthwise convolutions (one group per map). On a CPU they run channels-last (pixel-major,
    maps innermost), where oneDNN's depthwise kernel is ~8x faster than on planar maps; the layout
    changes cost less than that, and the values are the planar convolution's.
    """
    B, H, W = x.shape
    pad = SSIM_WINDOW // 2
    cpu = x.device.type == "cpu"
    y = x[None].contiguous(memory_format=torch.channels_last) if cpu else x[None]
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(B, 1, 1, -1), padding=(0, pad), groups=B)
    y = F.conv2d(y, g.view(1, 1, -1, 1).expand(B, 1, -1, 1), padding=(pad, 0), groups=B)[0]
    if not cpu:
        return y
    return y.permute(1, 2, 0).reshape(H * W, B).t().contiguous().view(B, H, W)  # a 2D transpose: the fast way back


def _ssim_terms(mu1, mu2, e11, e22, e12) -> tuple[torch.Tensor, ...]:
    """(numerator factors a, b and denominator factors c, d) of SSIM = a b / (c d), from the blurred maps."""
    s11, s22, s12 = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    return 2 * mu1 * mu2 + SSIM_C1, 2 * s12 + SSIM_C2, mu1 * mu1 + mu2 * mu2 + SSIM_C1, s11 + s22 + SSIM_C2


class _SSIMMap(torch.autograd.Function):
    """Per-pixel SSIM with its gradient in closed form: one blur of the 5 statistics maps forward, one of at
    most 4 maps backward, and a handful of element-wise passes (autograd recorded ~20 of them, each saved).

    With S = a b / (c d) of the blurred statistics mu1, mu2, e11 = G(x1^2), e22 = G(x2^2), e12 = G(x1 x2)
    (a = 2 mu1 mu2 + C1, b = 2 (e12 - mu1 mu2) + C2, c = mu1^2 + mu2^2 + C1, d = e11 - mu1^2 + e22 - mu2^2 + C2)
    and w = dL/dS: dL/dmu1 = w (mu2 p - mu1 q), dL/de11 = dL/de22 = w r, dL/de12 = w t with p = 2 (b - a) / (c d),
    q = 2 S (1/c - 1/d), r = -S / d, t = 2 a / (c d); the blur G (symmetric taps, zero padding) is its own
    adjoint, so dL/dx1 = G(dL/dmu1) + 2 x1 G(dL/de11) + x2 G(dL/de12), and likewise for x2.
    """

    @staticmethod
    def forward(ctx, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        C = img1.shape[0]
        g = _gaussian_kernel_1d(img1.device, img1.dtype)
        blurred = _gaussian_blur(torch.cat([img1, img2, img1 * img1, img2 * img2, img1 * img2]), g)
        mu1, mu2, e11, e22, e12 = blurred.split(C)
        a, b, c, d = _ssim_terms(mu1, mu2, e11, e22, e12)
        mu1, mu2 = blurred[: 2 * C].clone().split(C)  # saved without the other 3 blurred maps
        ctx.save_for_backward(img1, img2, mu1, mu2, a, b, c, d, g)
        return (a * b) / (c * d)

    @staticmethod
    @once_differentiable
    def backward(ctx, w: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        img1, img2, mu1, mu2, a, b, c, d, g = ctx.saved_tensors
        need1, need2 = ctx.needs_input_grad
        cd = c * d
        s = a * b / cd
        wp, wq = w * (2 * (b - a) / cd), w * (2 * s * (1 / c - 1 / d))
        maps = [w * (-s / d), w * (2 * a / cd)] + [mu2 * wp - mu1 * wq] * need1 + [mu1 * wp - mu2 * wq] * need2
        blurred = _gaussian_blur(torch.cat(maps), g).split(img1.shape[0])
        g_e, g_12 = blurred[0], blurred[1]
        grad1 = blurred[2] + 2 * img1 * g_e + img2 * g_12 if need1 else None
        grad2 = blurred[-1] + 2 * img2 * g_e + img1 * g_12 if need2 else None
        return grad1, grad2


def ssim_map(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM [C,H,W] of two [C,H,W] images (11x11 Gaussian window, sigma 1.5; gradients in closed form)."""
    return _SSIMMap.apply(img1, img2)


def ssim(img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM over valid pixels."""
    return masked_mean(ssim_map(img1, img2), mask)


def depth_l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 on depth over valid pixels with ground truth (gt > 0), divided by the mean valid ground-truth depth.

    The normalisation makes the term unit-free, so one ``--lambda_depth`` works whether the
    depth PNGs hold millimetres, 0.1 mm steps or 8-bit relative values.
    """
    valid = (gt > 0).to(pred.dtype)
    if mask is not None:
        valid = valid * mask
    scale = masked_mean(gt, valid).detach().clamp_min(1e-8)
    return masked_mean((pred - gt).abs(), valid) / scale
