"""Cameras with their images loaded at the training resolution.

:func:`load_camera` turns a :class:`scene.dataset_readers.CameraInfo` into a
:class:`Camera`: reads the image (compositing RGBA on the background), the
optional tool mask, depth map and inverse-depth map, and scales the intrinsics to the chosen
resolution (3DGS ``-r`` rule: 1/2/4/8 divide, -1 caps the width at 1600 px,
any other value is the target width). The maps are held as codes (:mod:`scene.coded_maps`) and
decoded to exactly the float32 values this loader has always produced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from scene.coded_maps import U8_CODES, CodedMap, binary_map, from_codes, uint8_map
from scene.dataset_readers import CameraInfo
from scene.endonerf_depth import load_endonerf_depth_codes, load_mask
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
    """One view at training resolution; its image, mask and depth held compactly (:mod:`scene.coded_maps`).

    ``original_image`` [3,H,W], ``mask`` [1,H,W] (1 = pixel counts, 0 = excluded: tools, outside the
    field of view) or None, ``depth`` [1,H,W] (0 = unknown) or None are float32, decoded from the
    codes on each access; :meth:`to` decodes them once onto the compute device (each iteration).
    ``invdepth`` [1,H,W]: monocular inverse depth (``-d``, scene.invdepth) or None, kept as float32 (it is
    resized with interpolation, so its values are not a function of the PNG's).
    """

    uid: int
    image_name: str
    image_width: int
    image_height: int
    K: torch.Tensor
    viewmat: torch.Tensor
    image_data: CodedMap
    time: float = 0.0
    mask_data: CodedMap | None = None
    depth_data: CodedMap | None = None
    invdepth: torch.Tensor | None = None

    @classmethod
    def from_tensors(cls, uid: int, image_name: str, width: int, height: int, K: torch.Tensor, viewmat: torch.Tensor,
                     image: torch.Tensor, time: float = 0.0, mask: torch.Tensor | None = None,
                     depth: torch.Tensor | None = None) -> "Camera":
        """A view of float maps given as tensors (image [3,H,W], mask / depth [1,H,W] or None), held as they are."""
        plain = lambda x: None if x is None else CodedMap(x)  # noqa: E731
        return cls(uid, image_name, width, height, K, viewmat, CodedMap(image), time, plain(mask), plain(depth))

    @property
    def original_image(self) -> torch.Tensor:
        return self.image_data.decode()

    @property
    def mask(self) -> torch.Tensor | None:
        return None if self.mask_data is None else self.mask_data.decode()

    @property
    def depth(self) -> torch.Tensor | None:
        return None if self.depth_data is None else self.depth_data.decode()

    @property
    def camera_center(self) -> torch.Tensor:
        """[3] centre in world coordinates."""
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -R.T @ t

    def with_mask(self, valid: torch.Tensor) -> "Camera":
        """This view with the mask ``valid`` [1,H,W] bool (True = counted)."""
        return dataclasses.replace(self, mask_data=binary_map(valid))

    def stored_on(self, device) -> "Camera":
        """This view with its codes (and matrices) on ``device``, still compact (where the scene keeps it)."""
        return self._moved(device, lambda m: m.stored_on(device))

    def to(self, device) -> "Camera":
        """This view on ``device`` with its image, mask and depth decoded to float32 there (once per use)."""
        return self._moved(device, lambda m: m.decoded_on(device))

    def _moved(self, device, move_map) -> "Camera":
        move = lambda m: None if m is None else move_map(m)  # noqa: E731
        return dataclasses.replace(self, K=self.K.to(device), viewmat=self.viewmat.to(device), image_data=move_map(self.image_data),
                                   mask_data=move(self.mask_data), depth_data=move(self.depth_data),
                                   invdepth=None if self.invdepth is None else self.invdepth.to(device))


def _composite_rgba(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    """[H,W,4] uint8 -> [H,W,3] float in [0,1] composited on ``background`` [3]."""
    rgb = img[..., :3].astype(np.float32) / 255.0
    a = img[..., 3:4].astype(np.float32) / 255.0
    return rgb * a + background[None, None, :] * (1.0 - a)


@lru_cache(maxsize=4)
def _composite_table(background_bytes: bytes, dtype: str) -> np.ndarray:
    """[3, 65536] float32: entry (c, a * 256 + v) = _composite_rgba of value v with alpha a on channel c."""
    background = np.frombuffer(background_bytes, dtype=dtype)
    grid = np.empty((U8_CODES, U8_CODES, 4), np.uint8)  # [alpha, value]
    grid[..., :3] = np.arange(U8_CODES, dtype=np.uint8)[None, :, None]
    grid[..., 3] = np.arange(U8_CODES, dtype=np.uint8)[:, None]
    return np.ascontiguousarray(_composite_rgba(grid, background).astype(np.float32).reshape(-1, 3).T)


def image_map(img: np.ndarray, background: np.ndarray) -> CodedMap:
    """[H,W,3|4] uint8 image -> CodedMap of its [3,H,W] float32 image in [0,1] (RGBA composited on
    ``background`` [3]) as the loader has always computed it: ``img / 255`` or :func:`_composite_rgba`."""
    if img.shape[2] != 4:
        return uint8_map(img)
    codes = img[..., 3:4].astype(np.int64) * U8_CODES + img[..., :3]  # alpha * 256 + value
    return from_codes(codes.transpose(2, 0, 1), _composite_table(background.tobytes(), background.dtype.str))


def depth_map(info: CameraInfo, width: int, height: int, valid: np.ndarray | None) -> CodedMap:
    """CodedMap of ``info``'s depth map [1,H,W] at (width, height): load_endonerf_depth's map, resized with nearest."""
    codes, table = load_endonerf_depth_codes(info.depth_path, info.depth_mode, info.depth_scale, valid)
    # The float32 depth map's nearest resize, applied to its codes held as float32 (exact below 2^24): the same pixels.
    codes = resize_image(codes.astype(np.float32), width, height, nearest=True).astype(np.int64)
    return from_codes(codes[None], table[None])


def load_camera(info: CameraInfo, resolution: int, background: np.ndarray, device="cpu") -> Camera:
    """Read ``info``'s image (and mask/depth) at the chosen resolution, held compactly on ``device``.

    Depth maps are read with ``info.depth_mode`` / ``info.depth_scale``, set once per scene by the reader.
    """
    img = read_image(info.image_path)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    w, h = target_size(img.shape[1], img.shape[0], resolution, info.image_path)
    img = resize_image(img, w, h)  # 8-bit (read_image scales 16-bit images to 8 bits), so the codes are exact
    sx, sy = w / info.width, h / info.height
    K = torch.tensor([[info.fx * sx, 0, info.cx * sx], [0, info.fy * sy, info.cy * sy], [0, 0, 1]], dtype=torch.float32)
    valid = invdepth = None
    if info.mask_path:
        valid = load_mask(info.mask_path, w, h)
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
        image_data=image_map(img, background),
        time=info.time,
        mask_data=None if valid is None else binary_map(valid[None]),
        depth_data=depth_map(info, w, h, valid) if info.depth_path else None,
        invdepth=invdepth,
    ).stored_on(device)
