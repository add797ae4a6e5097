"""The C++ extension's per-pixel op after the compositing: render()'s image and depth in one pass each way.

:func:`finish` is :func:`gaussian_renderer.backends.common.finish_outputs` (the reference it is tested
against) as one forward and one backward pass over the pixels, instead of the blend's and the
normalisation's autograd graph (about ten full-image ops).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from gaussian_renderer.backends.common import DEPTH_ALPHA_FLOOR, finish_outputs
from gaussian_renderer.backends.cpu_backend import KERNEL_DTYPES, _extension


class _FinishCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, alpha, bg, depth_channel, threads):
        image, depth = _extension().finish_forward(out, alpha, bg, depth_channel, DEPTH_ALPHA_FLOOR, threads)
        ctx.save_for_backward(out, alpha, bg)
        ctx.settings = (depth_channel, threads)
        # the other channels pass through: views of out, their gradients copied into its gradient
        C = out.shape[0]
        return image, out.narrow(0, 3, depth_channel - 3), depth, out.narrow(0, depth_channel + 1, C - depth_channel - 1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image, grad_features, grad_depth, grad_tail):
        out, alpha, bg = ctx.saved_tensors
        d, threads = ctx.settings
        grads = (None if g is None else g.to(out.dtype).contiguous() for g in (grad_image, grad_depth))
        grad_out, grad_alpha = _extension().finish_backward(out, alpha, bg, d, DEPTH_ALPHA_FLOOR, *grads, threads)
        for rows, g in ((grad_out[3:d], grad_features), (grad_out[d + 1:], grad_tail)):
            if g is None:
                rows.zero_()
            else:
                rows.copy_(g)
        return grad_out, grad_alpha, None, None, None


def finish(out: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor, depth_channel: int, invdepth: bool):
    """``finish_outputs`` (same arguments and result) in the C++ extension; the torch code where the
    kernel does not apply (a background that wants a gradient, dtypes it is not built for)."""
    if bg.requires_grad or out.dtype not in KERNEL_DTYPES or alpha.dtype != out.dtype:
        return finish_outputs(out, alpha, bg, depth_channel, invdepth)
    image, features, depth, inv = _FinishCPU.apply(out.contiguous(), alpha.contiguous(),
                                                   bg.detach().to(out.dtype).contiguous(), depth_channel,
                                                   torch.get_num_threads())
    return image, features, depth, inv if invdepth else None
