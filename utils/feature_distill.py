"""Per-Gaussian feature distillation: rendered D-channel maps against stored DINO maps.

The teacher (Ct channels) meets the student (D channels) one of two ways:
* ``pca``: the teacher folder was extracted with ``--pca_dim P >= D``; its first D PCA
  channels are the target (components are ordered by variance).
* ``decoder``: a learned 1x1 convolution lifts the D rendered channels to Ct; it is saved
  beside the PLY as ``feature_decoder.npz`` (arrays ``weight`` [Ct, D], ``bias`` [Ct]).
``auto`` picks pca when the folder's PCA has at least D components, else decoder.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from utils.errors import UserError
from utils.io_utils import atomic_path
from utils.perceptual import perceptual_loss

DECODER_FILE = "feature_decoder.npz"
FEATURE_LOSSES = ("l1", "cosine")


def choose_mode(requested: str, feature_dim: int, teacher_channels: int, pca_dim: int | None, meta_path) -> str:
    """Resolve --feature_decoder auto|pca|decoder against what the feature folder holds."""
    if requested not in ("auto", "pca", "decoder"):
        raise UserError(f"--feature_decoder {requested}: choose auto, pca or decoder")
    if requested == "pca" and (pca_dim is None or pca_dim < feature_dim):
        raise UserError(f"{meta_path}: --feature_decoder pca needs features extracted with --pca_dim >= {feature_dim} "
                        f"(this folder has {'no PCA' if pca_dim is None else f'pca_dim {pca_dim}'}); re-extract or use --feature_decoder decoder")
    if requested == "auto":
        return "pca" if pca_dim is not None and pca_dim >= feature_dim else "decoder"
    return requested


class FeatureDecoder(torch.nn.Module):
    """1x1 convolution D -> Ct applied to a [D, H, W] map."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_dim, in_dim) / np.sqrt(in_dim))
        self.bias = torch.nn.Parameter(torch.zeros(out_dim))

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.einsum("od,dhw->ohw", self.weight, fmap) + self.bias[:, None, None]

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, weight=self.weight.detach().cpu().numpy(), bias=self.bias.detach().cpu().numpy())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureDecoder":
        try:
            with np.load(path, allow_pickle=False) as z:
                w, b = z["weight"], z["bias"]
        except (OSError, KeyError, ValueError) as exc:
            raise UserError(f"{path}: not a feature decoder file ({exc})") from None
        dec = cls(w.shape[1], w.shape[0])
        dec.weight.data = torch.from_numpy(w)
        dec.bias.data = torch.from_numpy(b)
        return dec


def teacher_at(teacher: torch.Tensor, size: tuple[int, int], channels: int | None = None) -> torch.Tensor:
    """[Ct, h, w] stored map -> [channels or Ct, H, W] bilinearly resized to the render size."""
    t = teacher[:channels] if channels is not None else teacher
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]


def feature_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, mask: torch.Tensor | None) -> torch.Tensor:
    """L1 or cosine between [C,H,W] maps over valid pixels (mask [1,H,W], 1 = valid)."""
    if kind not in FEATURE_LOSSES:
        raise UserError(f"--feature_loss {kind}: choose {' or '.join(FEATURE_LOSSES)}")
    return perceptual_loss(pred, target, kind, mask)


def decoder_path(model_path: str | os.PathLike, iteration: int) -> Path:
    from scene.model_folder import ModelFolder

    return ModelFolder(model_path).iteration_dir(iteration) / DECODER_FILE
