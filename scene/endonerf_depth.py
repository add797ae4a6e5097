"""EndoNeRF depth maps, tool masks and depth-based point initialisation.

Conventions (shared with the Camera loader and the masked losses):

* Mask PNG: non-zero (255) = tool / outside the field of view = EXCLUDED.
  :func:`load_mask` returns the opposite, ``True`` = valid tissue pixel.
* Depth PNG: 8- or 16-bit, one channel or grey stored as RGB(A). Two encodings exist:
  ``"depth"`` (value = depth, e.g. the stereo depth of the official scenes) and
  ``"inverse"`` (value = inverse depth, bright = near, e.g. monocular networks;
  the C3VD sample). :func:`load_endonerf_depth` returns float32 z-depth along the
  optical axis with 0 = invalid (no value, or excluded by the mask).
* ``"auto"`` is decided once per scene, by the reader, with :func:`resolve_depth_mode`:
  16-bit PNGs are plain depth; 8-bit PNGs are plain depth when the scene's
  ``poses_bounds.npy`` far bound is a raw 8-bit value (1 < far <= 255, i.e. the
  bounds were measured on the PNG values, as in the official scenes), otherwise
  (bounds in metres, or no bounds) inverse depth. ``--depth_mode`` overrides it. The
  answer travels on every ``CameraInfo.depth_mode``; nothing re-resolves it later.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scene.dataset_readers import CameraInfo, PointCloud
from utils.errors import UserError
from utils.image_utils import read_image, resize_image

DEPTH_MODES = ("auto", "depth", "inverse")
RESOLVED_MODES = ("depth", "inverse")
CLIP_PERCENTILES = (3.0, 99.8)  # robust depth range of the valid pixels (EndoNeRF loaders)
RAW_8BIT_MAX = 255.0
MIN_RAW_FAR_BOUND = 1.0  # a far bound above this (and <= 255) is read as "bounds in raw 8-bit units"
EXTENT_MARGIN = 1.1  # same margin as cameras_extent


def _grey_channel(raw: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """[H, W] or [H, W, C] PNG array -> [H, W]; RGB(A) must be grey (equal channels)."""
    if raw.ndim == 2:
        return raw
    if raw.shape[2] < 3:  # grey + alpha
        return raw[..., 0]
    rgb = raw[..., :3]
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise UserError(
            f"{path}: depth PNG has different R, G, B values (a colour-mapped picture, not depth); "
            "store depth as a grey 8/16-bit PNG"
        )
    return rgb[..., 0]


def read_raw_depth(path: str | os.PathLike) -> np.ndarray:
    """[H, W] uint8 or uint16 raw depth values of a depth PNG."""
    raw = read_image(path, unchanged=True)
    if raw.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: depth PNG must be 8- or 16-bit integer, got {raw.dtype}")
    return _grey_channel(raw, path)


def resolve_depth_mode(depth_mode: str, depth_path: str | os.PathLike, bounds: np.ndarray | None = None) -> str:
    """'depth' | 'inverse' for a scene: explicit modes pass through; 'auto' as in the module docstring.

    ``depth_path``: one of the scene's depth PNGs (its bit depth decides first); ``bounds``: [N, 2]
    near/far from the scene's parsed poses_bounds.npy, or None when there are none. Called once, by
    the reader; everything after it (point initialisation, camera loading) uses the answer.
    """
    if depth_mode != "auto":
        return _checked_mode(depth_mode)
    if read_image(depth_path, unchanged=True).dtype == np.uint16:
        return "depth"
    if bounds is not None and bounds.size:
        far = float(np.max(bounds[:, 1]))
        if MIN_RAW_FAR_BOUND < far <= RAW_8BIT_MAX:
            return "depth"
    return "inverse"


def _checked_mode(depth_mode: str) -> str:
    if depth_mode not in DEPTH_MODES:
        raise UserError(f"--depth_mode {depth_mode!r} is not one of {', '.join(DEPTH_MODES)}")
    return depth_mode


def _resolved(depth_mode: str | None) -> str:
    """A mode already resolved by :func:`resolve_depth_mode` ('depth' | 'inverse')."""
    if depth_mode not in RESOLVED_MODES:
        _checked_mode(str(depth_mode))
        raise ValueError(f"depth mode {depth_mode!r} must be resolved once per scene by resolve_depth_mode()")
    return depth_mode


def load_mask(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    """[H, W] bool, True = valid pixel (mask value 0), False = tool / excluded (non-zero).

    RGB masks count a pixel as excluded when any channel is non-zero; resized with nearest.
    """
    raw = read_image(path, unchanged=True)
    if raw.ndim == 3:
        rgb = raw[..., : min(3, raw.shape[2])]
        excluded = np.bitwise_or.reduce([rgb[..., c] for c in range(rgb.shape[2])]) > 0
    else:
        excluded = raw > 0
    excluded = resize_image(excluded.astype(np.uint8), width, height, nearest=True) > 0
    return ~excluded


def load_endonerf_depth(
    path: str | os.PathLike,
    depth_mode: str,
    depth_scale: float,
    valid_mask: np.ndarray | None = None,
) -> np.ndarray:
    """[H, W] float32 z-depth (0 = invalid) at the PNG's own size, from an EndoNeRF depth PNG.

    ``depth_mode``: 'depth' (depth = value) or 'inverse' (depth = 1 / (value / max of the
    bit depth), so the brightest possible value is depth 1), as resolved once per scene by
    :func:`resolve_depth_mode` (the camera's ``CameraInfo.depth_mode``). Invalid = value 0 or
    ``valid_mask`` False ([h, w] bool, True = tissue; resized to the PNG with nearest if its
    size differs, e.g. at a lower training resolution). Valid depths are clipped
    to the [3 %, 99.8 %] percentiles of the valid pixels, then multiplied by ``depth_scale``.
    """
    raw = read_raw_depth(path)
    mode = _resolved(depth_mode)
    valid = raw > 0
    if valid_mask is not None:
        valid &= resize_image(valid_mask.astype(np.uint8), raw.shape[1], raw.shape[0], nearest=True) > 0
    return _depth_from_raw(raw, valid, mode, depth_scale)


def _depth_from_raw(raw: np.ndarray, valid: np.ndarray, mode: str, depth_scale: float) -> np.ndarray:
    """[H, W] float32 depth from raw PNG values [H, W] on the ``valid`` [H, W] pixels, clipped and scaled."""
    values = raw[valid].astype(np.float64)
    if mode == "inverse":
        values = np.iinfo(raw.dtype).max / values
    depth = np.zeros(raw.shape, dtype=np.float32)
    if values.size:
        lo, hi = np.percentile(values, CLIP_PERCENTILES)
        depth[valid] = (np.clip(values, lo, hi) * depth_scale).astype(np.float32)
    return depth


def backproject_pixels(cam: CameraInfo, rows: np.ndarray, cols: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[M, 3] world points of pixels (rows [M], cols [M]) at z-depths z [M].

    Pixel (col, row) has its centre at (col + 0.5, row + 0.5), as in the renderer.
    """
    z = z.astype(np.float64)
    cam_pts = np.stack([(cols + 0.5 - cam.cx) / cam.fx * z, (rows + 0.5 - cam.cy) / cam.fy * z, z], axis=1)
    R, t = cam.world_to_cam[:3, :3], cam.world_to_cam[:3, 3]
    return (cam_pts - t) @ R  # R^T (x - t), row-wise


def backproject(cam: CameraInfo, depth: np.ndarray, select: np.ndarray) -> np.ndarray:
    """[M, 3] world points of the ``select``-ed pixels ([H, W] bool) with z-depth ``depth`` [H, W]."""
    rows, cols = np.nonzero(select)
    return backproject_pixels(cam, rows, cols, depth[rows, cols])


def _frame_arrays(cam: CameraInfo, depth_mode: str, depth_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(valid [H, W] bool, depth [H, W] float32) of one frame at the camera's size; mode resolved."""
    mask = load_mask(cam.mask_path, cam.width, cam.height) if cam.mask_path else None
    depth = load_endonerf_depth(cam.depth_path, depth_mode, depth_scale, mask)
    depth = resize_image(depth, cam.width, cam.height, nearest=True)
    valid = depth > 0
    if mask is not None:
        valid &= mask
    return valid, depth


def _frame_image(cam: CameraInfo) -> np.ndarray:
    """[H, W, 3] uint8 RGB of a frame at the camera's size."""
    img = resize_image(read_image(cam.image_path), cam.width, cam.height)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def _check_frame(cam: CameraInfo, ref: CameraInfo) -> None:
    if cam.depth_path is None:
        raise UserError(f"{cam.image_path}: frame has no depth map; point initialisation needs depth/")
    if (cam.width, cam.height) != (ref.width, ref.height):
        raise UserError(f"{cam.image_path}: size {cam.width}x{cam.height} differs from frame 0; all frames must match")


def init_points_from_depth(
    cam_infos: list[CameraInfo],
    depth_mode: str,
    depth_scale: float,
    num_points: int,
    seed: int,
) -> PointCloud:
    """Initial points from back-projected depth (EndoNeRF / Deform3DGS style).

    ``cam_infos`` in time order (use the training frames). Frame 0 contributes every valid
    pixel (mask allows it and depth > 0); each later frame contributes only the pixels that
    were invalid in ALL earlier frames (tool-occluded so far), so the tissue hidden by the
    tool in frame 0 is filled in. The pixel bookkeeping assumes a fixed camera (one pixel
    grid), true for EndoNeRF. The candidate pixels are subsampled to ``num_points`` with a
    seeded generator (``num_points <= 0`` keeps all), then back-projected through the inverse
    of each frame's world_to_cam. Colours come from the frames' images, in [0, 1].
    """
    if not cam_infos:
        raise UserError("point initialisation needs at least one frame with depth")
    ref = cam_infos[0]
    _check_frame(ref, ref)
    mode = _resolved(depth_mode)
    covered = np.zeros((ref.height, ref.width), dtype=bool)
    picks = []  # per contributing frame: (frame index, rows [M], cols [M], z [M], rgb [M, 3] uint8)
    for k, cam in enumerate(cam_infos):
        _check_frame(cam, ref)
        if covered.all():
            break
        valid, depth = _frame_arrays(cam, mode, depth_scale)
        rows, cols = np.nonzero(valid & ~covered)
        if rows.size:
            picks.append((k, rows, cols, depth[rows, cols], _frame_image(cam)[rows, cols]))
        covered |= valid
    if not picks:
        raise UserError(
            f"{Path(ref.depth_path).parent}: no valid depth pixel in any frame; check depth/ (0 = invalid) "
            "and masks/ (255 = tool, excluded)"
        )
    frame_of = np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(picks)])
    keep = np.arange(len(frame_of))
    if 0 < num_points < len(frame_of):
        keep = np.sort(np.random.default_rng(seed).choice(len(frame_of), size=num_points, replace=False))
    offsets = np.cumsum([0] + [len(p[1]) for p in picks])
    points, colors = [], []
    for i, (k, rows, cols, z, rgb) in enumerate(picks):
        local = keep[frame_of[keep] == i] - offsets[i]
        points.append(backproject_pixels(cam_infos[k], rows[local], cols[local], z[local]))
        colors.append(rgb[local].astype(np.float32) / RAW_8BIT_MAX)
    return PointCloud(points=np.concatenate(points).astype(np.float32), colors=np.concatenate(colors))



def points_extent(points: np.ndarray) -> float:
    """Scene extent for a fixed camera: max distance of the points [N, 3] to their centroid x 1.1."""
    if len(points) == 0:
        return 1.0
    radius = float(np.linalg.norm(points - points.mean(0), axis=1).max()) * EXTENT_MARGIN
    return radius if radius > 0 else 1.0
