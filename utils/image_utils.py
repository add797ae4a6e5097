"""Image reading/writing and image-space metrics helpers."""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from utils.errors import UserError
from utils.io_utils import atomic_path


def read_image(path: str | os.PathLike, unchanged: bool = False) -> np.ndarray:
    """Read an image file as a numpy array (RGB/RGBA order, uint8 or uint16).

    ``unchanged`` keeps the stored bit depth and channel count (for depth/mask PNGs).
    A missing or undecodable file is a :class:`UserError` naming the path.
    """
    if not os.path.isfile(path):
        raise UserError(f"{path}: image file not found")
    flag = cv2.IMREAD_UNCHANGED
    img = cv2.imread(str(path), flag)
    if img is None or img.size == 0:
        raise UserError(f"{path}: cannot decode image (corrupt or unsupported format)")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if not unchanged and img.dtype != np.uint8:
        img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255).round().astype(np.uint8)
    return img


def resize_image(img: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    """Resize to (width, height); area filtering when shrinking, nearest for masks."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR)
    return cv2.resize(img, (width, height), interpolation=interp)


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[C,H,W] float tensor in [0,1] (or [H,W,C] array) -> [H,W,C] uint8."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().float().clamp(0, 1).cpu().numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
    else:
        arr = np.clip(image, 0, 1)
    return (arr * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> None:
    """Save an RGB image ([C,H,W] float tensor in [0,1], or uint8 [H,W,C]) as PNG, atomically."""
    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, arr):
            raise UserError(f"{path}: could not write image")


def colorize_depth(depth: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """[1,H,W] depth -> [H,W,3] uint8 turbo colour map (near = warm), robust to outliers."""
    d = depth.detach().float().cpu().numpy()[0]
    valid = d > 0 if mask is None else (mask.detach().cpu().numpy()[0] > 0.5) & (d > 0)
    if valid.any():
        lo, hi = np.percentile(d[valid], [1, 99])
    else:
        lo, hi = 0.0, 1.0
    norm = np.clip((d - lo) / max(hi - lo, 1e-8), 0, 1)
    norm = ((1.0 - norm) * 255).astype(np.uint8)
    color = cv2.applyColorMap(norm, cv2.COLORMAP_TURBO)
    color[~valid] = 0
    return cv2.cvtColor(color, cv2.COLOR_BGR2RGB)


def psnr(img: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB of images in [0,1]; ``mask`` [1,H,W] (1 = counted) restricts the pixels."""
    diff2 = (img - gt) ** 2
    if mask is None:
        mse = diff2.mean()
    else:
        m = mask.expand_as(diff2)
        mse = (diff2 * m).sum() / m.sum().clamp_min(1.0)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))
