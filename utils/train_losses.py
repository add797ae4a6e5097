"""The training objective, assembled from the enabled terms.

colour: (1 - lambda_dssim) * L1 + lambda_dssim * (1 - SSIM), masked by tool masks;
depth:  lambda_depth * masked L1 on depth (EndoNeRF);
(the DINO perceptual and feature-distillation terms plug in here as well).
"""
from __future__ import annotations

from pathlib import Path

import torch

from utils.loss_utils import depth_l1_loss, l1_loss, ssim


class TrainingLosses:
    """Callable ``(iteration, camera, render_pkg, gaussians) -> (loss, {term: value})``."""

    def __init__(self, dataset, opt, scene, device):
        self.opt = opt
        self.device = device

    def color_loss(self, image: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        l1 = l1_loss(image, gt, mask)
        if self.opt.lambda_dssim <= 0:
            return l1
        if mask is not None:
            image, gt = image * mask, gt * mask
        return (1.0 - self.opt.lambda_dssim) * l1 + self.opt.lambda_dssim * (1.0 - ssim(image, gt, mask))

    def __call__(self, iteration: int, cam, pkg: dict, gaussians) -> tuple[torch.Tensor, dict]:
        terms = {"color": self.color_loss(pkg["render"], cam.original_image, cam.mask)}
        loss = terms["color"]
        if self.opt.lambda_depth > 0 and cam.depth is not None:
            terms["depth"] = depth_l1_loss(pkg["depth"], cam.depth, cam.mask)
            loss = loss + self.opt.lambda_depth * terms["depth"]
        return loss, terms

    def step(self) -> None:
        """Called after the Gaussians' optimizer step (extra optimizers step here)."""

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def save(self, model_path: Path, iteration: int) -> None:
        """Save extra learned modules beside the PLY (none for the plain objective)."""
