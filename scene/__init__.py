"""Scene: a dataset's cameras plus the Gaussian model, and the model folder layout.

The model folder's layout is named once, in :mod:`scene.model_folder`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement
from tqdm import tqdm

from scene.cameras import Camera, load_camera
from scene.dataset_readers import CameraInfo, SceneInfo, read_scene
from scene.gaussian_model import GaussianModel
from scene.model_folder import ModelFolder
from utils.io_utils import atomic_path, write_json


def background_color(white: bool) -> np.ndarray:
    """[3] float background colour."""
    return np.ones(3, np.float32) if white else np.zeros(3, np.float32)


def write_input_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray) -> None:
    """Plain coloured point cloud (x y z nx ny nz red green blue), as 3DGS's input.ply."""
    n = len(points)
    data = np.empty(n, dtype=[(k, "f4") for k in ("x", "y", "z", "nx", "ny", "nz")] + [(k, "u1") for k in ("red", "green", "blue")])
    data["x"], data["y"], data["z"] = points.T
    data["nx"] = data["ny"] = data["nz"] = 0
    rgb = np.clip(colors * 255.0 + 0.5, 0, 255).astype(np.uint8)
    data["red"], data["green"], data["blue"] = rgb.T
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")]).write(tmp)


def camera_to_json(info: CameraInfo) -> dict:
    """graphdeco's cameras.json entry (camera-to-world rotation and centre)."""
    c2w = np.linalg.inv(info.world_to_cam)
    return {
        "id": info.uid,
        "img_name": info.image_name,
        "width": info.width,
        "height": info.height,
        "position": c2w[:3, 3].tolist(),
        "rotation": c2w[:3, :3].tolist(),
        "fy": info.fy,
        "fx": info.fx,
        "time": info.time,
    }


class Scene:
    """A scene's cameras (images loaded) plus its Gaussians, initialised from the scene or loaded from the model.

    ``info``: the scene as read by :func:`read_scene` (read it first when the model's shape depends
    on the scene's format); read here when None. ``device``: where the images are kept.
    """

    def __init__(self, args, gaussians: GaussianModel, load_iteration: int | None = None, device="cpu",
                 load_test_only: bool = False, info: SceneInfo | None = None, quiet: bool = False):
        self.folder = ModelFolder(args.model_path)
        self.model_path = args.model_path
        self.gaussians = gaussians
        if info is None and load_iteration is not None and args.depths:
            args = args.replace(depths="")  # a trained model is rendered, not trained: no inverse-depth maps (graphdeco)
        self.info: SceneInfo = info if info is not None else read_scene(args.source_path, args)
        self.cameras_extent = self.info.extent
        self.loaded_iter = None
        if load_iteration is not None:
            self.loaded_iter = self.folder.resolve_iteration(load_iteration)
            gaussians.load_ply(self.ply_path(self.loaded_iter))
        else:
            pc = self.info.point_cloud
            gaussians.create_from_pcd(pc.points, pc.colors, self.cameras_extent)
            write_input_ply(self.folder.input_ply, pc.points, pc.colors)
            write_json(self.folder.cameras_json, [camera_to_json(c) for c in self.info.train_cameras + self.info.test_cameras])
        bg = background_color(args.white_background)
        load = lambda infos, what: [  # noqa: E731
            load_camera(c, args.resolution, bg, device)
            for c in tqdm(infos, desc=f"Loading {what} cameras", leave=False, disable=quiet)
        ]
        self.train_cameras: list[Camera] = [] if load_test_only else load(self.info.train_cameras, "train")
        self.test_cameras: list[Camera] = load(self.info.test_cameras, "test")

    def ply_path(self, iteration: int) -> Path:
        return self.folder.ply(iteration)

    def save(self, iteration: int) -> None:
        self.gaussians.save_ply(self.ply_path(iteration))

    def getTrainCameras(self) -> list[Camera]:
        return self.train_cameras

    def getTestCameras(self) -> list[Camera]:
        return self.test_cameras
