"""Photometric losses (optionally masked): L1, SSIM, the training colour loss (L1 + D-SSIM), depth L1."""
from __future__ import annotations

import functools

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
    maps innermost), where oneDNN's depthwise kernel is ~8x faster than on planar maps; the two layout
    changes cost less than that. The values are the planar convolutions' (bit for bit where measured;
    the tests allow float32 rounding).
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


def ssim_map(img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM [C,H,W] of two [C,H,W] images (11x11 Gaussian window, sigma 1.5)."""
    C = img1.shape[0]
    g = _gaussian_kernel_1d(img1.device, img1.dtype)
    # img2-only statistics are blurred apart: for a constant ground truth they need no backward pass
    mu1, e11, e12 = _gaussian_blur(torch.cat([img1, img1 * img1, img1 * img2]), g).split(C)
    mu2, e22 = _gaussian_blur(torch.cat([img2, img2 * img2]), g).split(C)
    s11, s22, s12 = e11 - mu1 * mu1, e22 - mu2 * mu2, e12 - mu1 * mu2
    num = (2 * mu1 * mu2 + SSIM_C1) * (2 * s12 + SSIM_C2)
    den = (mu1 * mu1 + mu2 * mu2 + SSIM_C1) * (s11 + s22 + SSIM_C2)
    return num / den


def ssim(img1: torch.Tensor, img2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM over valid pixels."""
    return masked_mean(ssim_map(img1, img2), mask)


def l1_dssim_torch(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None,
                   lambda_dssim: float) -> torch.Tensor:
    """The training colour loss composed of torch ops (the reference; CUDA tensors use it).

    ``(1 - lambda) * L1 + lambda * (1 - SSIM)`` of ``pred``, ``gt`` [C,H,W] over ``mask`` [1,H,W]
    (SSIM of the masked images); just L1 when ``lambda_dssim`` is 0.
    """
    l1 = l1_loss(pred, gt, mask)
    if lambda_dssim <= 0:
        return l1
    if mask is not None:
        pred, gt = pred * mask, gt * mask
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - ssim(pred, gt, mask))


@functools.lru_cache(maxsize=None)
def _window_taps(dtype: torch.dtype) -> list[float]:
    """The SSIM window's taps as the torch composition convolves with them (rounded to ``dtype``), for the
    fused kernel; computed once per dtype instead of every training iteration."""
    return _gaussian_kernel_1d("cpu", dtype).tolist()


class _FusedLossCPU(torch.autograd.Function):
    """A C++ loss kernel that gives the loss and its gradient w.r.t. ``pred`` in one call:
    ``kernel(need_grad) -> (loss [], d loss / d pred, or [0] when not needed)``."""

    @staticmethod
    def forward(ctx, pred, kernel):
        loss, grad = kernel(ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, None


def _kernel_input(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A constant map (ground truth, mask) as the C++ kernels take it."""
    return None if t is None else t.detach().to(dtype).contiguous()


def _cpu_backend_for(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None):
    """gaussian_renderer.backends.cpu_backend when its C++ extension can compute this loss (float CPU
    images, no gradient wanted for gt or mask, the extension built), else None."""
    from gaussian_renderer.backends import cpu_backend

    if pred.device.type != "cpu" or pred.dtype not in cpu_backend.KERNEL_DTYPES:
        return None
    if gt.requires_grad or (mask is not None and mask.requires_grad):
        return None
    return cpu_backend if cpu_backend.extension_available() else None


def l1_dssim_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None,
                  lambda_dssim: float = 0.2) -> torch.Tensor:
    """``(1 - lambda) * L1 + lambda * (1 - SSIM)`` (just L1 when lambda is 0): scalar, differentiable w.r.t. ``pred``.

    ``pred``, ``gt`` [C,H,W]; ``mask`` [1,H,W] or None. CPU images go through the fused C++ kernel of
    submodules/cpu_rasterizer (``torch.get_num_threads()`` threads) when it is available; otherwise,
    and on other devices, :func:`l1_dssim_torch`, whose values it equals to float rounding.
    """
    if not 0.0 <= lambda_dssim <= 1.0:
        raise ValueError(f"lambda_dssim must be in [0, 1] (got {lambda_dssim})")
    backend = _cpu_backend_for(pred, gt, mask)
    if backend is None:
        return l1_dssim_torch(pred, gt, mask, lambda_dssim)
    pred, gt, mask = pred.contiguous(), _kernel_input(gt, pred.dtype), _kernel_input(mask, pred.dtype)
    ext, threads, taps = backend._extension(), torch.get_num_threads(), _window_taps(pred.dtype)
    return _FusedLossCPU.apply(pred, lambda need_grad: ext.l1_dssim(pred, gt, mask, float(lambda_dssim), taps, SSIM_C1, SSIM_C2,
                                                                    need_grad, threads, backend.KERNEL_ISA))


DEPTH_SCALE_FLOOR = 1e-8  # the depth L1's normaliser (mean valid ground-truth depth) is at least this


def depth_l1_torch(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`depth_l1_loss` composed of torch ops (the reference; CUDA tensors use it)."""
    valid = (gt > 0).to(pred.dtype)
    if mask is not None:
        valid = valid * mask
    scale = masked_mean(gt, valid).detach().clamp_min(DEPTH_SCALE_FLOOR)
    return masked_mean((pred - gt).abs(), valid) / scale


def depth_l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L1 on depth over valid pixels with ground truth (gt > 0), divided by the mean valid ground-truth depth.

    ``pred``, ``gt``, ``mask`` [1,H,W]. The normalisation makes the term unit-free, so one ``--lambda_depth``
    works whether the depth PNGs hold millimetres, 0.1 mm steps or 8-bit relative values. CPU maps go through
    the C++ kernel of submodules/cpu_rasterizer when it is available; otherwise :func:`depth_l1_torch`, whose
    values it equals to float rounding.
    """
    backend = _cpu_backend_for(pred, gt, mask)
    if backend is None or pred.dim() != 3 or pred.shape[0] != 1:
        return depth_l1_torch(pred, gt, mask)
    pred, gt, mask = pred.contiguous(), _kernel_input(gt, pred.dtype), _kernel_input(mask, pred.dtype)
    ext, threads = backend._extension(), torch.get_num_threads()
    return _FusedLossCPU.apply(pred, lambda need_grad: ext.depth_l1(pred, gt, mask, DEPTH_SCALE_FLOOR, need_grad, threads))
