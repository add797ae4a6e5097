"""Scene: a dataset's cameras plus the Gaussian model, and the model folder layout.

Model folder (graphdeco layout): ``cfg_args``, ``cameras.json``, ``input.ply``,
``point_cloud/iteration_N/point_cloud.ply``, ``chkpntN.pth``.
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
from utils.io_utils import atomic_path, write_json
from utils.system_utils import resolve_iteration


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
    """Loads the dataset's cameras and either initialises or loads the Gaussians."""

    def __init__(self, args, gaussians: GaussianModel, load_iteration: int | None = None, device="cpu", load_test_only: bool = False):
        self.model_path = args.model_path
        self.gaussians = gaussians
        self.info: SceneInfo = read_scene(args.source_path, args)
        self.cameras_extent = self.info.extent
        self.loaded_iter = None
        if load_iteration is not None:
            self.loaded_iter = resolve_iteration(self.model_path, load_iteration)
            gaussians.load_ply(self.ply_path(self.loaded_iter))
        else:
            pc = self.info.point_cloud
            gaussians.create_from_pcd(pc.points, pc.colors, self.cameras_extent)
            Path(self.model_path).mkdir(parents=True, exist_ok=True)
            write_input_ply(Path(self.model_path) / "input.ply", pc.points, pc.colors)
            write_json(Path(self.model_path) / "cameras.json", [camera_to_json(c) for c in self.info.train_cameras + self.info.test_cameras])
        bg = background_color(args.white_background)
        load = lambda infos, what: [  # noqa: E731
            load_camera(c, args.resolution, bg, args, device) for c in tqdm(infos, desc=f"Loading {what} cameras", leave=False)
        ]
        self.train_cameras: list[Camera] = [] if load_test_only else load(self.info.train_cameras, "train")
        self.test_cameras: list[Camera] = load(self.info.test_cameras, "test")

    def ply_path(self, iteration: int) -> Path:
        return Path(self.model_path) / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply"

    def save(self, iteration: int) -> None:
        self.gaussians.save_ply(self.ply_path(iteration))

    def getTrainCameras(self) -> list[Camera]:
        return self.train_cameras

    def getTestCameras(self) -> list[Camera]:
        return self.test_cameras
