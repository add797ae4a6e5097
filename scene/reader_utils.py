"""Small helpers shared by the scene readers: point-cloud PLY files, image naming, image files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement, PlyParseError

from scene.dataset_readers import PointCloud
from utils.errors import UserError
from utils.image_utils import IMAGE_EXTENSIONS, image_size
from utils.io_utils import atomic_path, shown_path

SIZE_ROUNDING_PX = 1.0  # a downscaled image may differ from the exact scaled size by this much (rounding)
DEFAULT_POINT_GREY = 0.5  # colour given to PLY points stored without colours
MAX_LISTED = 5  # how many names a warning/error lists before "..."


def read_points_ply(path: str | os.PathLike) -> PointCloud:
    """Read a point-cloud PLY (vertex x y z, optional red green blue 0..255) -> PointCloud [N, 3] x2.

    Points without colours get a uniform grey.
    """
    path = Path(path)
    try:
        vertex = PlyData.read(str(path))["vertex"]
        xyz = np.stack([np.asarray(vertex[k], np.float64) for k in ("x", "y", "z")], axis=1)
    except FileNotFoundError:
        raise UserError(f"{path}: point cloud file not found") from None
    except (PlyParseError, KeyError, ValueError, IndexError, OSError, EOFError, TypeError) as exc:
        raise UserError(f"{path}: not a readable point-cloud PLY with x y z vertices ({exc}); "
                        "delete or replace it") from None
    names = {p.name for p in vertex.properties}
    if {"red", "green", "blue"} <= names:
        rgb = np.stack([np.asarray(vertex[k], np.float64) for k in ("red", "green", "blue")], axis=1) / 255.0
    else:
        rgb = np.full_like(xyz, DEFAULT_POINT_GREY)
    if len(xyz) == 0:
        raise UserError(f"{path}: point cloud has no points; delete it to start from random points")
    if not np.isfinite(xyz).all():
        raise UserError(f"{path}: point cloud holds NaN/inf positions; fix or delete it")
    return PointCloud(points=xyz.astype(np.float32), colors=np.clip(rgb, 0, 1).astype(np.float32))


def write_points_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray,
                     normals: np.ndarray | None = None) -> None:
    """Write points [N, 3], colours [N, 3] in [0, 1] (and normals [N, 3]) as a PLY, atomically.

    Layout x y z nx ny nz red green blue, as the 3DGS point clouds (points3D.ply) use.
    """
    n = len(points)
    normals = np.zeros((n, 3)) if normals is None else normals
    dtype = [(k, "f4") for k in ("x", "y", "z", "nx", "ny", "nz")] + [(k, "u1") for k in ("red", "green", "blue")]
    data = np.empty(n, dtype=dtype)
    for i, k in enumerate("xyz"):
        data[k] = points[:, i]
        data["n" + k] = normals[:, i]
    rgb = np.clip(np.round(np.asarray(colors) * 255.0), 0, 255).astype(np.uint8)
    for i, k in enumerate(("red", "green", "blue")):
        data[k] = rgb[:, i]
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")]).write(tmp)


def unique_image_names(rel_paths: list[str]) -> list[str]:
    """Short names for images: the file stem; the relative path without extension (separators -> '_')
    when stems collide; plus '_<k>' for the k-th repeat of the same file."""
    names = [Path(p).stem for p in rel_paths]
    if len(set(names)) != len(names):
        names = [str(Path(p).with_suffix("")).replace(os.sep, "_").replace("/", "_") for p in rel_paths]
    seen: dict[str, int] = {}
    out = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        out.append(name if k == 0 else f"{name}_{k}")
    return out


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted '/'-separated relative paths."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def short_list(names: list[str], limit: int = MAX_LISTED) -> str:
    """'a, b, c, ... (+N more)' for messages."""
    head = ", ".join(names[:limit])
    return head + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def path_inside(folder: Path, name: str, where: str) -> Path:
    """``folder / name`` for a file name read from a scene file, refusing names that leave ``folder``
    (absolute, or climbing out with '..'). ``where`` names the scene file and entry for the message."""
    rel = os.path.normpath(name.replace("\\", "/"))
    if os.path.isabs(name) or os.path.isabs(rel) or rel == ".." or rel.startswith("../"):
        raise UserError(f"{where}: image name {name!r} points outside {shown_path(folder)}; image names must "
                        "stay inside that folder: fix the entry or move the image there")
    return folder / name


def same_aspect(size: tuple[int, int], expected: tuple[int, int], tol: float = SIZE_ROUNDING_PX) -> bool:
    """Whether an image of ``size`` (w, h) is ``expected`` (w, h) scaled uniformly, up to ``tol`` px of rounding."""
    (w, h), (ew, eh) = size, expected
    # the scale factors expected / size that each side allows overlap
    lo = max(ew / (w + tol), eh / (h + tol))
    hi = min(ew / max(w - tol, 1e-9), eh / max(h - tol, 1e-9))
    return w > 0 and h > 0 and lo <= hi


def check_image_size(path: str | os.PathLike, expected: tuple[int, int], source: str) -> tuple[int, int]:
    """(w, h) of the image file at ``path``; a UserError naming it when its aspect ratio is not that of
    ``expected`` (w, h) given by ``source`` (a uniformly downscaled copy, e.g. images_2/, is fine)."""
    size = image_size(path)
    if not same_aspect(size, expected):
        raise UserError(
            f"{shown_path(path)}: image is {size[0]}x{size[1]} but {source} says {expected[0]}x{expected[1]} "
            "(a different aspect ratio; only uniform downscaling is allowed): use the matching image or fix the "
            "camera size"
        )
    return size
