"""Scene descriptions shared by all dataset readers, and format detection.

A reader turns a scene folder into a :class:`SceneInfo`: cameras (with image
paths, not pixels), an initial point cloud and the scene's extent. Formats:

* COLMAP: ``sparse/0`` (or ``sparse``) with cameras/images/points3D ``.bin`` or ``.txt``
  -> :mod:`scene.colmap_reader`
* Blender / NeRF-synthetic: ``transforms_train.json`` -> :mod:`scene.blender_reader`
* EndoNeRF: ``poses_bounds.npy`` + ``images/`` -> :mod:`scene.endonerf_reader`
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from utils.errors import UserError

if TYPE_CHECKING:
    from scene.invdepth import InvDepthMap


@dataclass
class CameraInfo:
    """One view. Intrinsics are in pixels of the full-resolution image.

    world_to_cam: [4, 4] OpenCV convention (x right, y down, z forward).
    mask_path: optional mask image, 255 (non-zero) = pixel excluded (tool / outside FOV).
    depth_path: optional depth image. time: normalised frame time in [0, 1].
    depth_mode: how depth_path's values are read, 'depth' | 'inverse', resolved once per scene by the
    reader (never 'auto'); depth_scale: factor applied to those depths (see scene.endonerf_depth).
    alpha_background: for RGBA images, composite on the background at load time.
    invdepth: the monocular inverse-depth map of a training view (``-d``; see scene.invdepth), or None.
    """

    uid: int
    image_name: str
    image_path: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    world_to_cam: np.ndarray
    time: float = 0.0
    mask_path: str | None = None
    depth_path: str | None = None
    is_test: bool = False
    depth_mode: str | None = None
    depth_scale: float = 1.0
    invdepth: InvDepthMap | None = None

    @property
    def center(self) -> np.ndarray:
        """[3] camera centre in world coordinates."""
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t


@dataclass
class PointCloud:
    """Initial points: positions [N, 3] and colours [N, 3] in [0, 1]."""

    points: np.ndarray
    colors: np.ndarray


@dataclass
class SceneInfo:
    """What a reader returns. ``extent`` is the 3DGS 'cameras_extent' (radius of the camera centres x 1.1)."""

    kind: str
    point_cloud: PointCloud
    train_cameras: list[CameraInfo]
    test_cameras: list[CameraInfo]
    extent: float
    extras: dict = field(default_factory=dict)


def cameras_extent(cams: list[CameraInfo]) -> tuple[np.ndarray, float]:
    """Centre and radius (max distance to the mean centre, x1.1) of the camera centres (graphdeco's normalisation)."""
    centers = np.stack([c.center for c in cams]) if cams else np.zeros((1, 3))
    mean = centers.mean(0)
    radius = float(np.linalg.norm(centers - mean, axis=1).max()) * 1.1
    return mean, radius if radius > 0 else 1.0


def split_every_nth(names: list[str], eval_mode: bool, llffhold: int = 8) -> set[str]:
    """Names of test images for ``--eval``: every ``llffhold``-th of the name-sorted list."""
    if not eval_mode:
        return set()
    return {n for i, n in enumerate(sorted(names)) if i % llffhold == 0}


def detect_format(path: str | os.PathLike) -> str:
    """'colmap' | 'blender' | 'endonerf' from the folder's content, or a UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: scene folder not found (check -s/--source_path)")
    if not p.is_dir():
        raise UserError(f"{p}: is not a folder; -s/--source_path must be a scene folder")
    if (p / "sparse").is_dir():
        return "colmap"
    if (p / "transforms_train.json").is_file():
        return "blender"
    if (p / "poses_bounds.npy").is_file():
        return "endonerf"
    raise UserError(
        f"{p}: unknown scene format: expected sparse/ (COLMAP; run convert.py on photos in input/), "
        "transforms_train.json (Blender) or poses_bounds.npy (EndoNeRF)"
    )


def read_scene(path: str | os.PathLike, args) -> SceneInfo:
    """Read any supported scene; ``args`` carries loader options (eval, white_background, ...)."""
    kind = detect_format(path)
    if kind == "endonerf" and getattr(args, "depths", ""):
        raise UserError(f"-d/--depths {args.depths}: EndoNeRF scenes bring their depth in depth/ (--lambda_depth); "
                        "-d (monocular inverse depth) is for COLMAP and Blender scenes: drop it")
    if kind == "colmap":
        from scene.colmap_reader import read_colmap_scene

        return read_colmap_scene(path, args)
    if kind == "blender":
        from scene.blender_reader import read_blender_scene

        return read_blender_scene(path, args)
    from scene.endonerf_reader import read_endonerf_scene

    return read_endonerf_scene(path, args)
