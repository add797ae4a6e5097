"""Feature-space (DINO) perceptual loss between a render and its ground truth.

Both inputs are dense feature maps [C,h,w] (or batched [B,C,h,w]); the channel axis is
dim -3. A mask [1,h,w] (1 = valid, 0 = excluded, e.g. surgical tools) restricts the
cells that count; :func:`mask_to_feature_res` brings an image-resolution mask down to
the feature grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_KINDS = ("cosine", "l1", "l2", "smooth_l1")
VALID_CELL_FRACTION = 0.99  # a feature cell is valid only if >= 99 % of its pixels are valid
COSINE_EPS = 1e-8
SMOOTH_L1_BETA = 1.0  # torch default: quadratic below |d| = 1, linear above


def _per_cell(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """[...,C,h,w] pair -> [...,1,h,w] loss per cell (averaged over channels)."""
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(pred, target, dim=-3, eps=COSINE_EPS).unsqueeze(-3)
    if kind == "l1":
        diff = (pred - target).abs()
    elif kind == "l2":
        diff = (pred - target) ** 2
    elif kind == "smooth_l1":
        diff = F.smooth_l1_loss(pred, target, reduction="none", beta=SMOOTH_L1_BETA)
    else:
        raise ValueError(f"unknown perceptual loss kind '{kind}'; use one of {', '.join(LOSS_KINDS)}")
    return diff.mean(dim=-3, keepdim=True)


def perceptual_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "cosine",
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar loss between feature maps ``pred`` and ``target`` [C,h,w] (or [B,C,h,w]).

    ``cosine`` = mean over cells of 1 - cos(pred, target) along channels; ``l1`` / ``l2`` /
    ``smooth_l1`` = mean over cells and channels. ``mask`` [1,h,w] (or [B,1,h,w]; 1 = valid)
    weights the cells; an all-zero mask gives 0 (still attached to the graph). The target
    is treated as a constant (detached).
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    cell = _per_cell(pred, target.detach().to(pred.dtype), kind)
    if mask is None:
        return cell.mean()
    m = mask.to(cell.dtype).expand_as(cell)
    return (cell * m).sum() / m.sum().clamp_min(1.0)


def mask_to_feature_res(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[1,H,W] validity mask (1 = valid) -> [1,h,w] float mask on the feature grid.

    Each cell takes the area-average of the pixels it covers and counts as valid only if
    that fraction is >= VALID_CELL_FRACTION, so cells touching an excluded region (tool,
    outside the field of view) are dropped.
    """
    m = mask.float()
    if tuple(m.shape[-2:]) == tuple(size):
        return (m >= VALID_CELL_FRACTION).float()
    frac = F.adaptive_avg_pool2d(m.unsqueeze(0), tuple(size))[0]
    return (frac >= VALID_CELL_FRACTION).float()
