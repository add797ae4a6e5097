"""COLMAP scenes: ``SCENE/sparse/0`` (or ``SCENE/sparse``) + ``SCENE/<images>/`` -> SceneInfo.

Only undistorted pinhole cameras (PINHOLE, SIMPLE_PINHOLE) are accepted: the
rasteriser has no lens distortion, so a distorted model must first go through
``convert.py`` (or ``colmap image_undistorter``). Image sizes come from the
camera model; an image file may be stored uniformly downscaled (images_2/ ...;
the camera loader rescales it) but must keep its camera's aspect ratio. Image
names must stay inside the image folder. Nothing is written into the scene folder.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from scene.colmap_loader import ColmapCamera, ColmapModel, image_world_to_cam, model_extension, read_colmap_model
from scene.dataset_readers import CameraInfo, PointCloud, SceneInfo, cameras_extent, split_every_nth
from scene.invdepth import COLMAP_DIVISOR, attach_invdepth, depths_folder
from scene.reader_utils import check_image_size, list_images, path_inside, short_list, unique_image_names
from utils.errors import UserError
from utils.io_utils import shown_path

MODEL_SUBDIRS = ("sparse/0", "sparse")
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")


def find_model_dir(scene: Path) -> Path:
    """The first of sparse/0, sparse that holds a complete model."""
    for sub in MODEL_SUBDIRS:
        if model_extension(scene / sub) is not None:
            return scene / sub
    raise UserError(
        f"{scene / 'sparse'}: no COLMAP model found in sparse/0 or sparse (cameras/images/points3D .bin or .txt); "
        "run convert.py -s SCENE on the photos in SCENE/input/"
    )


def pinhole_intrinsics(cam: ColmapCamera, model_dir: Path) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels; a distorted camera model is a UserError."""
    if cam.model == "SIMPLE_PINHOLE":
        f, cx, cy = cam.params
        return float(f), float(f), float(cx), float(cy)
    if cam.model == "PINHOLE":
        fx, fy, cx, cy = cam.params
        return float(fx), float(fy), float(cx), float(cy)
    raise UserError(
        f"{model_dir}: camera {cam.id} uses the distorted model {cam.model}; only PINHOLE/SIMPLE_PINHOLE are "
        "supported: run convert.py -s SCENE (it undistorts) or 'colmap image_undistorter' first"
    )


def _check_image_files(model: ColmapModel, image_dir: Path, model_dir: Path) -> list[str]:
    """Verify the registered images are files inside ``image_dir``; return the files COLMAP did not register."""
    if not image_dir.is_dir():
        raise UserError(f"{image_dir}: image folder not found (set --images to the folder name inside the scene)")
    images_file = model_dir / f"images{model_extension(model_dir)}"
    for img in model.images.values():
        path_inside(image_dir, img.name, f"{images_file}: image {img.id}")
    on_disk = list_images(image_dir)
    if not on_disk:
        raise UserError(f"{image_dir}: image folder is empty; put the scene's (undistorted) images there")
    registered = {img.name.replace(os.sep, "/") for img in model.images.values()}
    missing = sorted(n for n in registered if not (image_dir / n).is_file())
    if missing and (image_dir / missing[0]).exists():
        raise UserError(f"{shown_path(image_dir / missing[0])}: is a folder, not an image file; "
                        f"replace it with the image {images_file} registers under that name")
    if missing:
        raise UserError(
            f"{shown_path(image_dir / missing[0])}: image registered in {model_dir} is missing "
            f"({len(missing)} missing: {short_list(missing)}); restore it or re-run convert.py"
        )
    return [n for n in on_disk if n not in registered]


def build_cameras(model: ColmapModel, image_dir: Path, model_dir: Path, eval_mode: bool) -> list[CameraInfo]:
    """CameraInfo per registered image, sorted by image name, test flags from the every-8th split.

    Each image file must have its camera's aspect ratio (it may be stored downscaled, as in images_2/).
    """
    images = sorted(model.images.values(), key=lambda im: im.name)
    names = unique_image_names([im.name for im in images])
    test_names = split_every_nth(names, eval_mode)
    cameras_file = model_dir / f"cameras{model_extension(model_dir)}"
    cams = []
    for uid, (img, name) in enumerate(zip(images, names)):
        cam = model.cameras[img.camera_id]
        fx, fy, cx, cy = pinhole_intrinsics(cam, model_dir)
        check_image_size(image_dir / img.name, (cam.width, cam.height), f"camera {cam.id} in {cameras_file}")
        cams.append(CameraInfo(
            uid=uid, image_name=name, image_path=str(image_dir / img.name), width=cam.width, height=cam.height,
            fx=fx, fy=fy, cx=cx, cy=cy, world_to_cam=image_world_to_cam(img), is_test=name in test_names,
        ))
    return cams


def model_point_cloud(model: ColmapModel, model_dir: Path) -> PointCloud:
    """points3D -> PointCloud (xyz [N, 3], rgb/255 [N, 3])."""
    if len(model.points.xyz) == 0:
        raise UserError(f"{model_dir}: the COLMAP model has no 3D points; re-run convert.py (mapping failed?)")
    return PointCloud(points=model.points.xyz.astype(np.float32), colors=(model.points.rgb / 255.0).astype(np.float32))


def read_colmap_scene(path: str | os.PathLike, args) -> SceneInfo:
    """Read a COLMAP scene folder; ``args`` supplies ``images`` (folder name), ``eval`` and ``depths``
    (inverse-depth maps of the training views, scene.invdepth)."""
    scene = Path(path)
    model_dir = find_model_dir(scene)
    model = read_colmap_model(model_dir)
    if not model.images:
        raise UserError(f"{model_dir}: the COLMAP model registers no images; re-run convert.py")
    for cam_id in sorted({img.camera_id for img in model.images.values()}):
        pinhole_intrinsics(model.cameras[cam_id], model_dir)  # distorted models fail before any file checks
    image_dir = scene / args.images
    unregistered = _check_image_files(model, image_dir, model_dir)
    if unregistered:
        warnings.warn(
            f"{shown_path(image_dir)}: {len(unregistered)} image(s) not registered by COLMAP are skipped: "
            f"{short_list(unregistered)}",
            stacklevel=2,
        )
    cams = build_cameras(model, image_dir, model_dir, args.eval)
    train = [c for c in cams if not c.is_test]
    test = [c for c in cams if c.is_test]
    if not train:
        raise UserError(f"{model_dir}: no training cameras left after the --eval split; register more images")
    depths = getattr(args, "depths", "")
    if depths:  # graphdeco names a map and its depth_params.json entry by the registered name without extension
        names = [Path(os.path.relpath(c.image_path, image_dir)).with_suffix("").as_posix() for c in train]
        attach_invdepth(train, names, depths_folder(scene, depths), depths, COLMAP_DIVISOR, model_dir)
    return SceneInfo(
        kind="colmap",
        point_cloud=model_point_cloud(model, model_dir),
        train_cameras=train,
        test_cameras=test,
        extent=cameras_extent(train)[1],
        extras={"model_dir": str(model_dir), "unregistered_images": unregistered},
    )
