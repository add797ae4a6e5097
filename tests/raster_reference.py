"""Brute-force per-pixel compositing reference (no tiles, no vectorised tricks).

Follows the contract in gaussian_renderer/backends/common.py literally: for each
pixel, walk every Gaussian whose tile rectangle covers the pixel's tile in depth
order and accumulate. Differentiable through plain autograd; use tiny scenes.
"""
from __future__ import annotations

import math

import torch

from gaussian_renderer.backends.common import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE, tile_rect


def random_projected(n: int, width: int, height: int, channels: int, dtype=torch.float64, seed: int = 0):
    """Random screen-space Gaussians: (means2d, conics, opacities, colors, depths, radii)."""
    g = torch.Generator().manual_seed(seed)
    means2d = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([width * 1.2, height * 1.2], dtype=dtype) - torch.tensor([width * 0.1, height * 0.1], dtype=dtype)
    sx = torch.rand(n, generator=g, dtype=dtype) * 4 + 0.8
    sy = torch.rand(n, generator=g, dtype=dtype) * 4 + 0.8
    rho = (torch.rand(n, generator=g, dtype=dtype) - 0.5) * 1.2
    a, b, c = sx * sx, rho * sx * sy, sy * sy
    det = a * c - b * b
    conics = torch.stack([c / det, -b / det, a / det], -1)
    opacities = torch.rand(n, generator=g, dtype=dtype) * 0.9 + 0.05
    colors = torch.rand(n, channels, generator=g, dtype=dtype)
    depths = torch.rand(n, generator=g, dtype=dtype) * 5 + 1
    lam = 0.5 * (a + c) + torch.sqrt((0.25 * (a - c) ** 2 + b * b))
    radii = torch.ceil(3 * torch.sqrt(lam)).to(torch.int32)
    return means2d, conics, opacities, colors, depths, radii


def image_and_grads(fn, scene, width: int, height: int, seed: int = 1, device: str = "cpu"):
    """Run a compositing function on ``scene`` (moved to ``device``) and backpropagate a random linear loss.

    Returns (image, alpha, [grad means2d, conics, opacities, colors]), all on the CPU.
    """
    inputs = [t.detach().clone().to(device).requires_grad_(i < 4) for i, t in enumerate(scene)]
    image, alpha = fn(*inputs, width, height)
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g, dtype=image.dtype).to(device)
    w_alpha = torch.randn(alpha.shape, generator=g, dtype=alpha.dtype).to(device)
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach().cpu(), alpha.detach().cpu(), [t.grad.cpu() for t in inputs[:4]]


def rasterize_bruteforce(means2d, conics, opacities, colors, depths, radii, width, height, tile=TILE_SIZE):
    """Per-pixel loop; returns image [C,H,W], alpha [1,H,W]."""
    C = colors.shape[1]
    x0, y0, x1, y1 = tile_rect(means2d, radii, width, height, tile)
    order = torch.argsort(depths.detach(), stable=True).tolist()
    rows, arows = [], []
    for py in range(height):
        row, arow = [], []
        for px in range(width):
            tx, ty = px // tile, py // tile
            T = 1.0
            acc = torch.zeros(C, dtype=colors.dtype)
            acc_a = torch.zeros((), dtype=colors.dtype)
            for g in order:
                if not (x0[g] <= tx <= x1[g] and y0[g] <= ty <= y1[g]):
                    continue
                dx = means2d[g, 0] - (px + 0.5)
                dy = means2d[g, 1] - (py + 0.5)
                a, b, c = conics[g]
                power = -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy
                if power > 0:
                    continue
                alpha = torch.clamp(opacities[g] * torch.exp(power), max=ALPHA_MAX)
                if alpha < ALPHA_MIN:
                    continue
                t_next = T * (1 - alpha)
                if float(t_next) < T_MIN:
                    break
                acc = acc + alpha * T * colors[g]
                acc_a = acc_a + alpha * T
                T = t_next
            row.append(acc)
            arow.append(acc_a)
        rows.append(torch.stack(row))
        arows.append(torch.stack(arow))
    img = torch.stack(rows).permute(2, 0, 1)
    return img, torch.stack(arows)[None]
