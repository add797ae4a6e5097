"""Brute-force per-pixel compositing reference (no tiles, no vectorised tricks).

Follows the contract in gaussian_renderer/backends/common.py literally: for each
pixel, walk every Gaussian that is not culled (radius > 0) in depth order and
accumulate; no tiles and no support cut-off, so a backend that matches it shows
that its binning drops no pixel the contract keeps. Differentiable through plain
autograd; use tiny scenes.
"""
from __future__ import annotations

import math

import torch

from gaussian_renderer.backends.common import ALPHA_MAX, ALPHA_MIN, T_MIN


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


def oriented_gaussians(means, sigmas, thetas, opacities, channels: int, seed: int = 0, dtype=torch.float64):
    """Screen-space Gaussians from means [N,2], std-devs [N,2] along axes turned by thetas [N] (radians).

    Returns (means2d, conics, opacities, colors, depths, radii) in ``dtype``; radii are 3 sigma
    of the major axis (only their sign matters to the backends).
    """
    g = torch.Generator().manual_seed(seed)
    n = means.shape[0]
    cos, sin = torch.cos(thetas.double()), torch.sin(thetas.double())
    va, vb = sigmas[:, 0].double() ** 2, sigmas[:, 1].double() ** 2
    cxx, cxy, cyy = cos**2 * va + sin**2 * vb, cos * sin * (va - vb), sin**2 * va + cos**2 * vb
    det = cxx * cyy - cxy**2
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], -1)
    radii = torch.ceil(3 * sigmas.double().max(1).values).to(torch.int32)
    colors = torch.rand(n, channels, generator=g, dtype=torch.float64)
    depths = torch.rand(n, generator=g, dtype=torch.float64) * 9 + 1
    cast = lambda t: t.to(dtype).contiguous()  # noqa: E731
    return cast(means), cast(conics), cast(opacities), cast(colors), cast(depths), radii


CUTOFF_KINDS = ("solid_tails", "diagonal", "faint")


def cutoff_scene(kind: str, width: int, height: int, channels: int, dtype=torch.float64, seed: int = 0):
    """Scenes that probe the support cut-off (see common.py) near 16-pixel tile borders.

    solid_tails: opacity 0.97-0.99 (reach ~3.3 sigma) whose 3-sigma square stops just short of a
    tile border that the support crosses;
    diagonal: long thin ellipses at ~45 degrees through tile corners (their bounding box holds
    tiles they miss); faint: opacity just above ALPHA_MIN (reach well under 3 sigma).
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    corners = torch.tensor([[x, y] for x in range(16, width, 16) for y in range(16, height, 16)], dtype=torch.float64)
    if kind == "solid_tails":  # major axis along x, 3-sigma square ending just short of a tile border
        n = 10
        major = rand(n) * 2 + 4
        border = 16.0 * torch.randint(1, max(2, (width - 1) // 16 + 1), (n,), generator=g).double()
        side = torch.where(rand(n) < 0.5, -1.0, 1.0).double()
        means = torch.stack([border + side * (torch.ceil(3 * major) + 0.3), rand(n) * height], -1)
        sigmas = torch.stack([major, major * (0.4 + 0.5 * rand(n))], -1)
        return oriented_gaussians(means, sigmas, rand(n) * 0.1 - 0.05, 0.97 + 0.02 * rand(n), channels, seed, dtype)
    if kind == "diagonal":
        n = 2 * corners.shape[0]
        means = corners.repeat(2, 1) + rand(n, 2) * 6 - 3
        sigmas = torch.stack([rand(n) * 6 + 6, rand(n) * 0.6 + 0.4], -1)
        thetas = math.pi / 4 + math.pi / 2 * (rand(n) < 0.5).double() + rand(n) * 0.2 - 0.1
        return oriented_gaussians(means, sigmas, thetas, 0.3 + 0.69 * rand(n), channels, seed, dtype)
    if kind == "faint":
        n = 16
        means = rand(n, 2) * torch.tensor([width, height], dtype=torch.float64)
        return oriented_gaussians(means, rand(n, 2) * 5 + 1, rand(n) * math.pi, 0.0035 + 0.03 * rand(n), channels,
                                  seed, dtype)
    raise ValueError(kind)


def image_and_grads(fn, scene, width: int, height: int, seed: int = 1, device: str = "cpu",
                    grad_mask: torch.Tensor | None = None):
    """Run a compositing function on ``scene`` (moved to ``device``) and backpropagate a random linear loss.

    ``grad_mask`` [H, W] (0 / 1): the loss ignores the pixels where it is 0 (their upstream gradients are 0).
    Returns (image, alpha, [grad means2d, conics, opacities, colors]), all on the CPU.
    """
    inputs = [t.detach().clone().to(device).requires_grad_(i < 4) for i, t in enumerate(scene)]
    image, alpha = fn(*inputs, width, height)
    g = torch.Generator().manual_seed(seed)
    w_img = torch.randn(image.shape, generator=g, dtype=image.dtype).to(device)
    w_alpha = torch.randn(alpha.shape, generator=g, dtype=alpha.dtype).to(device)
    if grad_mask is not None:
        w_img, w_alpha = w_img * grad_mask.to(w_img), w_alpha * grad_mask.to(w_alpha)
    ((image * w_img).sum() + (alpha * w_alpha).sum()).backward()
    return image.detach().cpu(), alpha.detach().cpu(), [t.grad.cpu() for t in inputs[:4]]


def rasterize_bruteforce(means2d, conics, opacities, colors, depths, radii, width, height):
    """Per-pixel loop; returns image [C,H,W], alpha [1,H,W]."""
    C = colors.shape[1]
    order = [g for g in torch.argsort(depths.detach(), stable=True).tolist() if radii[g] > 0]
    rows, arows = [], []
    for py in range(height):
        row, arow = [], []
        for px in range(width):
            T = 1.0
            acc = torch.zeros(C, dtype=colors.dtype)
            acc_a = torch.zeros((), dtype=colors.dtype)
            for g in order:
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
                if float(t_next.detach()) < T_MIN:
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
