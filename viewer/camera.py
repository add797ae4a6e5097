"""Camera conversions between the browser (viser) and our :class:`scene.cameras.Camera`.

viser reports a camera as ``wxyz`` (camera-to-world rotation), ``position`` (centre),
``fov`` (vertical, radians) and the canvas size, in OpenCV axes (+Z forward, -Y up),
the same axes as our ``viewmat`` (world-to-camera).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import viser.transforms as vtf

from scene.cameras import Camera

MIN_RENDER_SIDE = 16  # px: no render is smaller than this on its short side


@dataclass(frozen=True)
class ViewPose:
    """A browser camera: wxyz [4] camera-to-world rotation, position [3], vertical fov (radians)."""

    wxyz: tuple[float, float, float, float]
    position: tuple[float, float, float]
    fov: float


def render_size(canvas_w: int, canvas_h: int, max_side: int, scale: float = 1.0) -> tuple[int, int]:
    """Render size with the canvas's aspect: long side min(canvas, max_side) times ``scale``."""
    canvas_w, canvas_h = max(int(canvas_w), 1), max(int(canvas_h), 1)
    long_side = min(max(canvas_w, canvas_h), int(max_side)) * float(scale)
    s = long_side / max(canvas_w, canvas_h)
    w, h = round(canvas_w * s), round(canvas_h * s)
    short = min(w, h)
    if short < MIN_RENDER_SIDE:
        k = MIN_RENDER_SIDE / max(short, 1)
        w, h = round(w * k), round(h * k)
    return max(w, 1), max(h, 1)


def pose_viewmat(pose: ViewPose) -> torch.Tensor:
    """[4,4] world-to-camera matrix of a browser pose."""
    R = vtf.SO3(np.asarray(pose.wxyz, np.float64)).as_matrix()
    c = np.asarray(pose.position, np.float64)
    m = np.eye(4)
    m[:3, :3] = R.T
    m[:3, 3] = -R.T @ c
    return torch.tensor(m, dtype=torch.float32)


def pinhole_K(fov_y: float, width: int, height: int) -> torch.Tensor:
    """[3,3] intrinsics of a centred pinhole with vertical field of view ``fov_y`` (radians) and square pixels."""
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return torch.tensor([[f, 0, 0.5 * width], [0, f, 0.5 * height], [0, 0, 1]], dtype=torch.float32)


def fitted_K(cam: Camera, width: int, height: int) -> torch.Tensor:
    """[3,3] ``cam``'s own intrinsics scaled to ``height`` and centred horizontally in a ``width`` canvas.

    The vertical field of view (what the browser keeps) is ``cam``'s; at ``cam``'s own size
    this is exactly ``cam.K``.
    """
    s = height / cam.image_height
    K = cam.K.detach().cpu().clone().float()
    K[:2] *= s
    K[2, 2] = 1.0
    K[0, 2] += 0.5 * (width - cam.image_width * s)
    return K


def camera_pose(cam: Camera) -> ViewPose:
    """The browser pose that looks through ``cam`` (same centre, rotation and vertical fov)."""
    w2c = cam.viewmat.detach().cpu().double().numpy()
    R = w2c[:3, :3].T
    centre = -R @ w2c[:3, 3]
    fy = float(cam.K[1, 1])
    fov = 2.0 * math.atan(0.5 * cam.image_height / fy)
    wxyz = vtf.SO3.from_matrix(R).wxyz
    return ViewPose(tuple(float(v) for v in wxyz), tuple(float(v) for v in centre), fov)


def same_pose(a: ViewPose, b: ViewPose, pos_tol: float, angle_tol: float = 1e-3) -> bool:
    """Whether two poses agree: centres within ``pos_tol``, rotations within ``angle_tol`` radians, same fov."""
    if np.linalg.norm(np.subtract(a.position, b.position)) > pos_tol or abs(a.fov - b.fov) > angle_tol:
        return False
    dot = abs(float(np.dot(a.wxyz, b.wxyz))) / (np.linalg.norm(a.wxyz) * np.linalg.norm(b.wxyz))
    return 2.0 * math.acos(min(1.0, dot)) <= angle_tol


def view_camera(pose: ViewPose, width: int, height: int, time: float, snapped: Camera | None = None) -> Camera:
    """A :class:`Camera` for rendering ``pose`` at ``width`` x ``height``.

    ``snapped``: the dataset camera the browser was snapped to; its exact pose and
    intrinsics are used (so the frame matches render.py's render of it).
    """
    if snapped is not None:
        viewmat, K = snapped.viewmat.detach().cpu().float(), fitted_K(snapped, width, height)
    else:
        viewmat, K = pose_viewmat(pose), pinhole_K(pose.fov, width, height)
    blank = torch.zeros(3, 1, 1)
    return Camera.from_tensors(-1, "viewer", width, height, K, viewmat, blank, time=float(time))
