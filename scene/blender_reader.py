"""Blender / NeRF-synthetic scenes: ``transforms_train.json`` (+ ``transforms_test.json``) -> SceneInfo.

Conventions:

* ``frames[i].file_path`` is relative to the JSON's folder, with or without an
  extension (``./train/r_0`` -> ``./train/r_0.png``; .png, .jpg, ... are tried);
  a path leaving that folder (absolute, or ``..``) is refused.
* ``transform_matrix`` is camera-to-world in Blender/OpenGL axes (x right, y up,
  z backwards); it is converted to an OpenCV world-to-camera matrix.
* Intrinsics: ``fl_x``/``fl_y``/``cx``/``cy`` (+ ``w``/``h``) when present (top
  level or per frame, the frame wins), else ``camera_angle_x`` (and
  ``camera_angle_y``; otherwise fy = fx). The image size is read from the file
  header when ``w``/``h`` are absent; when given, the file must have their aspect
  ratio. Lens distortion (k1, p1, ...) is refused; sizes and focal lengths must be
  positive, fields of view in (0, pi), poses finite rigid transforms.
* Optional per-frame ``time`` -> CameraInfo.time. RGBA images are composited on
  the background by the camera loader, not here.
* Splits: with ``--eval`` the test cameras come from transforms_test.json (or,
  if there is none, every 8th training frame). Without ``--eval`` the test frames
  are not used at all -- training sees only transforms_train.json (graphdeco
  would merge them into training; keeping them out means a later evaluation on
  them stays honest).
* Initial points: ``points3d.ply`` in the scene folder if present, else random
  points (seeded by ``args.seed``) kept in memory -- nothing is written into the
  scene folder. They fill a cube around the point the cameras look at, of half
  size a third of the cameras' distance to it (graphdeco's fixed +-1.3 cube for
  NeRF-synthetic cameras at radius ~4), or the cameras' own bounding cube when
  their optical axes do not converge.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from scene.dataset_readers import CameraInfo, PointCloud, SceneInfo, cameras_extent, split_every_nth
from scene.invdepth import BLENDER_DIVISOR, attach_invdepth, depths_folder
from scene.reader_utils import check_image_size, path_inside, read_points_ply, unique_image_names
from utils.errors import UserError
from utils.image_utils import IMAGE_EXTENSIONS, image_size
from utils.io_utils import read_json, shown_path

# appended to a file_path without extension, in this order ("" = the path as is)
IMAGE_SUFFIXES = ("",) + IMAGE_EXTENSIONS + tuple(ext.upper() for ext in IMAGE_EXTENSIONS)
POSITIVE_KEYS = ("fl_x", "fl_y", "w", "h")
ANGLE_KEYS = ("camera_angle_x", "camera_angle_y")  # field of view in radians, in (0, pi)
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])
ROTATION_TOLERANCE = 1e-2  # max |R^T R - I| accepted in a transform_matrix
RANDOM_INIT_POINTS = 100_000
RANDOM_BOX_RATIO = 1.0 / 3.0  # half-size of the random-point cube / cameras' distance to their focus
MIN_CONVERGENCE = 0.05  # smallest eigenvalue (per camera) of the focus-point system for converging axes
PLY_NAME = "points3d.ply"


def _frames(doc, path: Path) -> list[dict]:
    frames = doc.get("frames") if isinstance(doc, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise UserError(f"{path}: expected a JSON object with a non-empty 'frames' list")
    return frames


def resolve_image(json_dir: Path, file_path, where: str) -> Path:
    """Image file of a frame: ``file_path`` as is, else with .png/.jpg/... appended."""
    if not isinstance(file_path, str) or not file_path:
        raise UserError(f"{where}: missing or invalid 'file_path'")
    base = path_inside(json_dir, file_path, where)
    for suffix in IMAGE_SUFFIXES:
        cand = Path(str(base) + suffix)
        if cand.is_file():
            return cand
    if base.is_dir():
        raise UserError(f"{where}: 'file_path' {shown_path(base)} is a folder, not an image file; "
                        "point it at the frame's image")
    raise UserError(f"{where}: image {shown_path(base)} not found (tried as is and with "
                    f"{'/'.join(IMAGE_EXTENSIONS)} appended, lower or upper case); fix 'file_path' or add the image")


def c2w_opengl_to_w2c_opencv(matrix, where: str) -> np.ndarray:
    """Blender camera-to-world [4, 4] (or [3, 4]) -> OpenCV world-to-camera [4, 4]."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape not in ((4, 4), (3, 4)):
        raise UserError(f"{where}: 'transform_matrix' must be a 4x4 array of numbers")
    if not np.isfinite(m).all():
        raise UserError(f"{where}: 'transform_matrix' holds NaN or infinite values; fix the pose")
    if m.shape == (4, 4) and np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > ROTATION_TOLERANCE:
        raise UserError(f"{where}: 'transform_matrix' last row is {m[3].tolist()}, expected [0, 0, 0, 1] "
                        "(not a rigid camera-to-world pose); fix the pose")
    c2w = np.eye(4)
    c2w[:3] = m[:3]
    rot = c2w[:3, :3]
    if np.abs(rot.T @ rot - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(rot) <= 0:
        raise UserError(f"{where}: 'transform_matrix' 3x3 block is not a rotation (det {np.linalg.det(rot):.4g}: "
                        "singular, mirrored, scaled or skewed pose); fix the pose")
    return np.linalg.inv(c2w @ OPENGL_TO_OPENCV)


def _number(meta: dict, key: str, where: str) -> float | None:
    val = meta.get(key)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise UserError(f"{where}: '{key}' must be a finite number")
    return float(val)


def _check_ranges(num: dict, where: str) -> None:
    """Sizes and focal lengths given must be positive, fields of view inside (0, pi)."""
    for key in POSITIVE_KEYS:
        if num[key] is not None and num[key] <= 0:
            raise UserError(f"{where}: '{key}' is {num[key]:g} but must be positive; fix the JSON")
    for key in ANGLE_KEYS:
        if num[key] is not None and not 0 < num[key] < math.pi:
            raise UserError(f"{where}: '{key}' is {num[key]:g} but must be a field of view in radians, "
                            "between 0 and pi; fix the JSON")


def intrinsics(meta: dict, image_path: Path, where: str) -> tuple[int, int, float, float, float, float]:
    """(width, height, fx, fy, cx, cy) from the merged top-level + frame keys.

    With ``w``/``h`` given, the image file must have that aspect ratio (it may be uniformly downscaled).
    """
    num = {k: _number(meta, k, where) for k in INTRINSIC_KEYS + DISTORTION_KEYS}
    if any(num[k] for k in DISTORTION_KEYS):
        raise UserError(f"{where}: lens distortion ({', '.join(k for k in DISTORTION_KEYS if num[k])}) is not "
                        "supported; undistort the images first (e.g. convert.py on the raw photos)")
    _check_ranges(num, where)
    if num["w"] is not None and num["h"] is not None:
        width, height = int(num["w"]), int(num["h"])
        check_image_size(image_path, (width, height), f"'w'/'h' of {where}")
    else:
        width, height = image_size(image_path)
    if num["fl_x"] is not None:
        fx = num["fl_x"]
        fy = num["fl_y"] or fx
    elif num["camera_angle_x"] is not None:
        fx = 0.5 * width / math.tan(0.5 * num["camera_angle_x"])
        fy = 0.5 * height / math.tan(0.5 * num["camera_angle_y"]) if num["camera_angle_y"] else fx
    else:
        raise UserError(f"{where}: no intrinsics: give 'camera_angle_x' or 'fl_x' (top level or per frame)")
    cx = num["cx"] if num["cx"] is not None else width / 2
    cy = num["cy"] if num["cy"] is not None else height / 2
    return width, height, fx, fy, cx, cy


def _frame_time(frame: dict, where: str) -> float:
    t = _number(frame, "time", where)
    return 0.0 if t is None else t


def read_split(json_path: Path) -> list[tuple[dict, Path]]:
    """(frame with the file's top-level keys merged in, resolved image path) per frame."""
    doc = read_json(json_path)
    frames = _frames(doc, json_path)
    top = {k: v for k, v in doc.items() if k != "frames"}
    out = []
    for i, frame in enumerate(frames):
        where = f"{json_path} frame {i}"
        out.append(({**top, **frame}, resolve_image(json_path.parent, frame.get("file_path"), where)))
    return out


def build_cameras(entries: list[tuple[dict, Path, str]], root: Path) -> list[CameraInfo]:
    """CameraInfo per (merged frame, image path, 'where' label), uids in order."""
    rel = [os.path.relpath(p, root) for _, p, _ in entries]
    names = unique_image_names(rel)
    cams = []
    for uid, ((meta, path, where), name) in enumerate(zip(entries, names)):
        w, h, fx, fy, cx, cy = intrinsics(meta, path, where)
        cams.append(CameraInfo(
            uid=uid, image_name=name, image_path=str(path), width=w, height=h, fx=fx, fy=fy, cx=cx, cy=cy,
            world_to_cam=c2w_opengl_to_w2c_opencv(meta.get("transform_matrix"), where),
            time=_frame_time(meta, where),
        ))
    return cams


def camera_focus(cams: list[CameraInfo]) -> tuple[np.ndarray, float] | None:
    """Least-squares point nearest to all optical axes and the median camera distance to it; None if the
    axes do not converge (e.g. a forward-facing capture)."""
    a, b = np.zeros((3, 3)), np.zeros(3)
    for c in cams:
        d = c.world_to_cam[2, :3]  # optical axis (camera +z) in world coordinates
        proj = np.eye(3) - np.outer(d, d)
        a += proj
        b += proj @ c.center
    if np.linalg.eigvalsh(a).min() < MIN_CONVERGENCE * len(cams):
        return None
    focus = np.linalg.solve(a, b)
    dist = float(np.median([np.linalg.norm(c.center - focus) for c in cams]))
    return focus, dist


def random_point_cloud(cams: list[CameraInfo], seed: int, n: int = RANDOM_INIT_POINTS) -> PointCloud:
    """``n`` uniform random points [n, 3] with random colours in the volume the cameras surround."""
    focus = camera_focus(cams)
    if focus is not None:
        center, half = focus[0], RANDOM_BOX_RATIO * focus[1]
    else:
        center, half = cameras_extent(cams)
    rng = np.random.default_rng(seed)
    pts = center + rng.uniform(-half, half, (n, 3))
    return PointCloud(points=pts.astype(np.float32), colors=rng.random((n, 3)).astype(np.float32))


def read_blender_scene(path: str | os.PathLike, args) -> SceneInfo:
    """Read a NeRF-synthetic style folder; ``args`` supplies ``eval``, ``seed`` and ``depths`` (inverse-depth
    maps of the training views, scene.invdepth)."""
    root = Path(path)
    eval_mode = args.eval
    train = [(m, p, f"{root / 'transforms_train.json'} frame {i}")
             for i, (m, p) in enumerate(read_split(root / "transforms_train.json"))]
    test_json = root / "transforms_test.json"
    test = []
    if eval_mode and test_json.is_file():
        test = [(m, p, f"{test_json} frame {i}") for i, (m, p) in enumerate(read_split(test_json))]
    cams = build_cameras(train + test, root)
    train_cams, test_cams = cams[: len(train)], cams[len(train):]
    if eval_mode and not test:
        held = split_every_nth([c.image_name for c in train_cams], True)
        test_cams = [c for c in train_cams if c.image_name in held]
        train_cams = [c for c in train_cams if c.image_name not in held]
    if not train_cams:
        raise UserError(f"{root / 'transforms_train.json'}: no training frames left after the --eval split")
    for c in test_cams:
        c.is_test = True
    depths = getattr(args, "depths", "")
    if depths:  # graphdeco names a Blender frame's map by its image file's stem
        attach_invdepth(train_cams, [Path(c.image_path).stem for c in train_cams], depths_folder(root, depths), depths,
                        BLENDER_DIVISOR)
    ply = root / PLY_NAME
    if ply.is_file():
        cloud, source = read_points_ply(ply), PLY_NAME
    else:
        cloud, source = random_point_cloud(train_cams, args.seed), "random"
    return SceneInfo(kind="blender", point_cloud=cloud, train_cameras=train_cams, test_cameras=test_cams,
                     extent=cameras_extent(train_cams)[1], extras={"point_source": source})
