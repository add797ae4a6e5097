"""Cameras with their images loaded at the training resolution.

:func:`load_camera` turns a :class:`scene.dataset_readers.CameraInfo` into a
:class:`Camera`: reads the image (compositing RGBA on the background), the
optional tool mask, depth map and inverse-depth map, and scales the intrinsics to the chosen
resolution (3DGS ``-r`` rule: 1/2/4/8 divide, -1 caps the width at 1600 px,
any other value is the target width).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from scene.dataset_readers import CameraInfo
from utils.errors import UserError
from utils.image_utils import read_image, resize_image

MAX_AUTO_WIDTH = 1600  # -r -1: larger images are scaled down to this width
DIVISOR_FLAGS = (1, 2, 4, 8)


def target_size(width: int, height: int, resolution: int, path: str) -> tuple[int, int]:
    """Image size after applying the ``-r/--resolution`` rule; a 0 px result is a UserError."""
    if resolution in DIVISOR_FLAGS:
        scale = float(resolution)
    elif resolution == -1:
        scale = max(width / MAX_AUTO_WIDTH, 1.0)
    elif resolution > 0:
        scale = width / resolution
    else:
        raise UserError(f"-r/--resolution {resolution} is invalid: use 1, 2, 4, 8, -1 or a target width in pixels")
    w, h = round(width / scale), round(height / scale)
    if w < 1 or h < 1:
        raise UserError(f"{path}: -r {resolution} would make this {width}x{height} image {w}x{h} px; use a smaller -r")
    return w, h


@dataclass
class Camera:
    """One view at training resolution. Images are [C, H, W] float tensors.

    mask: [1,H,W] with 1 = pixel counts, 0 = excluded (tools, outside the field of view), or None.
    depth: [1,H,W] depth (0 = unknown), or None.
    invdepth: [1,H,W] monocular inverse depth (``-d``, scene.invdepth), or None.
    """

    uid: int
    image_name: str
    image_width: int
    image_height: int
    K: torch.Tensor
    viewmat: torch.Tensor
    original_image: torch.Tensor
    time: float = 0.0
    mask: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    invdepth: torch.Tensor | None = None

    @property
    def camera_center(self) -> torch.Tensor:
        """[3] centre in world coordinates."""
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -R.T @ t

    def to(self, device) -> "Camera":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def _composite_rgba(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    """[H,W,4] uint8 -> [H,W,3] float in [0,1] composited on ``background`` [3]."""
    rgb = img[..., :3].astype(np.float32) / 255.0
    a = img[..., 3:4].astype(np.float32) / 255.0
    return rgb * a + background[None, None, :] * (1.0 - a)


def load_camera(info: CameraInfo, resolution: int, background: np.ndarray, device="cpu") -> Camera:
    """Read ``info``'s image (and mask/depth) at the chosen resolution.

    Depth maps are read with ``info.depth_mode`` / ``info.depth_scale``, set once per scene by the
    reader (``args`` is accepted for the callers' sake and not read).
    """
    img = read_image(info.image_path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    w, h = target_size(img.shape[1], img.shape[0], resolution, info.image_path)
    img = resize_image(img, w, h)
    rgb = _composite_rgba(img, background) if img.shape[2] == 4 else img.astype(np.float32) / 255.0
    sx, sy = w / info.width, h / info.height
    K = torch.tensor([[info.fx * sx, 0, info.cx * sx], [0, info.fy * sy, info.cy * sy], [0, 0, 1]], dtype=torch.float32)
    mask = depth = None
    if info.mask_path:
        from scene.endonerf_reader import load_mask

        mask = torch.from_numpy(load_mask(info.mask_path, w, h).astype(np.float32))[None]
    if info.depth_path:
        from scene.endonerf_reader import load_endonerf_depth

        valid = None if mask is None else mask[0].numpy() > 0.5
        d = load_endonerf_depth(info.depth_path, info.depth_mode, info.depth_scale, valid)  # as the reader resolved
        depth = torch.from_numpy(resize_image(d, w, h, nearest=True).astype(np.float32))[None]
    invdepth = None
    if info.invdepth is not None:
        from scene.invdepth import load_invdepth

        invdepth = torch.from_numpy(load_invdepth(info.invdepth, w, h))[None]
    return Camera(
        uid=info.uid,
        image_name=info.image_name,
        image_width=w,
        image_height=h,
        K=K,
        viewmat=torch.tensor(info.world_to_cam, dtype=torch.float32),
        original_image=torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float(),
        time=info.time,
        mask=mask,
        depth=depth,
        invdepth=invdepth,
    ).to(device)
