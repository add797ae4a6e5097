"""Monocular inverse-depth maps for depth regularisation (graphdeco's ``-d/--depths``).

Not to be confused with EndoNeRF's ``depth/`` (view-space z, ``--lambda_depth``): these maps hold
*inverse* depth 1/z, as monocular networks (Depth Anything v2) predict it, and train the rendered
inverse depth (graphdeco's current release; the regularisation of Hierarchical 3DGS).

Layout and encoding, as graphdeco reads them:

* ``-d DIR`` names a folder inside the scene folder; the map of image ``NAME.EXT`` is
  ``DIR/NAME.png`` (``NAME`` as COLMAP registers it, subfolders included; for Blender scenes the
  image file's stem). Only training images need maps; test views are never trained on.
* PNG, 8- or 16-bit, grey (one channel, or equal R, G, B). Inverse depth = value / 65536 for
  COLMAP scenes and value / 512 for Blender scenes (graphdeco's two divisors). The map is resized
  to the training resolution (it must have its image's aspect ratio).
* COLMAP scenes need ``sparse/0/depth_params.json`` (graphdeco's ``utils/make_depth_scale.py``
  writes it): per image name without extension ``{"scale": s, "offset": o}``, which maps the
  network's relative inverse depth onto the scene's: ``invdepth = value * s + o``. A map whose
  scale is outside [0.2, 5] x the median of the positive scales is unreliable and not used
  (graphdeco's rule; a warning lists them). Blender maps are used as they are.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene.dataset_readers import CameraInfo
from scene.endonerf_depth import read_raw_depth
from scene.reader_utils import same_aspect, short_list
from utils.errors import UserError
from utils.image_utils import image_size, resize_image
from utils.io_utils import read_json, shown_path

COLMAP_DIVISOR = 65536.0  # graphdeco: value / 2**16 for real (COLMAP) scenes
BLENDER_DIVISOR = 512.0  # graphdeco: value / 512 for NeRF-synthetic (Blender) scenes
MAP_SUFFIX = ".png"
PARAMS_FILE = "depth_params.json"  # beside the COLMAP model (sparse/0)
RELIABLE_SCALE = (0.2, 5.0)  # a map's scale must lie within these multiples of the median scale
HOW_TO_MAKE = ("one grey PNG per training image, named like the image (e.g. Depth Anything v2's "
               "run.py --pred-only --grayscale)")


@dataclass(frozen=True)
class InvDepthMap:
    """Where one image's inverse-depth map is and how its values become inverse depth.

    inverse depth = raw PNG value / divisor * scale + offset.
    """

    path: str
    divisor: float
    scale: float = 1.0
    offset: float = 0.0


def depths_folder(scene: str | os.PathLike, depths: str) -> Path:
    """The folder ``-d`` names, relative to the scene folder; it must exist and stay inside the scene."""
    root = Path(scene)
    folder = root / depths
    real_root, real = os.path.realpath(root), os.path.realpath(folder)
    if os.path.commonpath([real_root, real]) != real_root:
        raise UserError(f"-d/--depths {depths}: {shown_path(folder)} is outside the scene folder {shown_path(root)}; "
                        "put the inverse-depth maps in a folder inside the scene and pass its name (e.g. -d depths)")
    if not folder.is_dir():
        raise UserError(f"-d/--depths {depths}: folder {shown_path(folder)} not found; -d names the folder inside the "
                        f"scene that holds {HOW_TO_MAKE}")
    return folder


def _number(entry: dict, key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: '{key}' must be a finite number, got {value!r}; re-run make_depth_scale.py")
    return float(value)


def read_depth_params(model_dir: str | os.PathLike) -> tuple[dict[str, tuple[float, float]], float]:
    """``depth_params.json`` of a COLMAP model -> ({image name without extension: (scale, offset)}, median scale)."""
    path = Path(model_dir) / PARAMS_FILE
    if not path.is_file():
        raise UserError(f"{shown_path(path)}: not found; -d with a COLMAP scene needs each map's scale and offset: "
                        "run graphdeco's utils/make_depth_scale.py --base_dir SCENE --depths_dir SCENE/DEPTHS")
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise UserError(f"{shown_path(path)}: expected a JSON object of image name -> {{scale, offset}}")
    params = {}
    for name, entry in doc.items():
        where = f"{shown_path(path)}: {name}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected an object with 'scale' and 'offset'; re-run make_depth_scale.py")
        params[name] = (_number(entry, "scale", where), _number(entry, "offset", where))
    positive = [s for s, _ in params.values() if s > 0]
    if not positive:
        raise UserError(f"{shown_path(path)}: no image has a positive scale (the maps could not be aligned with the "
                        "COLMAP points); re-run make_depth_scale.py, or train without -d")
    return params, float(np.median(positive))


def reliable(scale: float, median: float) -> bool:
    """graphdeco's test of a map's alignment: its scale within RELIABLE_SCALE multiples of the median."""
    return RELIABLE_SCALE[0] * median <= scale <= RELIABLE_SCALE[1] * median


def _check_aspect(path: Path, cam: CameraInfo) -> None:
    """A map may have another size than its image (it is resized), not another aspect ratio."""
    w, h = image_size(path)  # also refuses unreadable, truncated or undecodable files
    if not same_aspect((w, h), (cam.width, cam.height)):
        raise UserError(f"{shown_path(path)}: inverse-depth map is {w}x{h}, another aspect ratio than its image "
                        f"{cam.image_name} ({cam.width}x{cam.height}); is it the map of another image? Remake it from "
                        "that image")


def attach_invdepth(cams: list[CameraInfo], names: list[str], folder: Path, depths: str, divisor: float,
                    params_dir: Path | None = None) -> None:
    """Give each camera its map ``folder/<name>.png`` (checked: present, readable header, the image's aspect).

    ``names``: per camera, the image name without extension that names its map (and its params entry).
    ``params_dir``: the COLMAP model folder holding depth_params.json, or None (maps used as stored).
    Cameras whose map is unreliable keep ``invdepth=None``, with one warning listing them.
    """
    params, median = read_depth_params(params_dir) if params_dir is not None else (None, 0.0)
    owner: dict[Path, str] = {}
    unreliable = []
    for cam, name in zip(cams, names):
        path = folder / f"{name}{MAP_SUFFIX}"
        if path in owner:
            raise UserError(f"{shown_path(path)}: would be the inverse-depth map of two images ({owner[path]} and "
                            f"{cam.image_name}); give the images distinct file names")
        owner[path] = cam.image_name
        if not path.is_file():
            raise UserError(f"{shown_path(path)}: inverse-depth map of image {cam.image_name} not found "
                            f"(-d/--depths {depths}); write {HOW_TO_MAKE}, or drop -d")
        _check_aspect(path, cam)
        scale, offset = 1.0, 0.0
        if params is not None:
            if name not in params:
                raise UserError(f"{shown_path(params_dir / PARAMS_FILE)}: no entry for image {name}; re-run "
                                "make_depth_scale.py with every map in place")
            scale, offset = params[name]
            if not reliable(scale, median):
                unreliable.append(name)
                continue
        cam.invdepth = InvDepthMap(str(path), divisor, scale, offset)
    if unreliable:
        warnings.warn(f"{shown_path(params_dir / PARAMS_FILE)}: {len(unreliable)} inverse-depth map(s) have a scale "
                      f"outside {RELIABLE_SCALE[0]:g}-{RELIABLE_SCALE[1]:g}x the median {median:.4g} and are not used: "
                      f"{short_list(unreliable)}", stacklevel=2)


def load_invdepth(m: InvDepthMap, width: int, height: int) -> np.ndarray:
    """[height, width] float32 inverse depth of a map at the training resolution (graphdeco's order:
    decode, resize, scale and offset)."""
    raw = read_raw_depth(m.path).astype(np.float32) / np.float32(m.divisor)
    return resize_image(raw, width, height) * np.float32(m.scale) + np.float32(m.offset)
