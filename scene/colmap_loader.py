"""Parse COLMAP sparse models (binary ``.bin`` and text ``.txt``) into small dataclasses.

Only what scene loading needs is kept: cameras (model + parameters), registered
images (pose + camera + file name; their 2D keypoints are skipped) and the 3D
points (position + colour). Binary files are read with :mod:`struct` through a
bounds-checked cursor, so a truncated or corrupt file is a :class:`UserError`
naming it rather than a crash or a silently short model.

Layouts (COLMAP's documented output format):

* ``cameras``: id, model id, width, height, then the model's parameters.
* ``images``: id, qvec (w x y z), tvec, camera id, name, then the image's 2D points.
  The pose maps world to camera: ``x_cam = R(q) @ x_world + t``.
* ``points3D``: id, xyz, rgb (uint8), reprojection error, then the track.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.io_utils import write_text

# model id -> (name, number of parameters), from COLMAP's camera model list
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
# models whose parameters start with fx, fy (the others start with one focal f)
TWO_FOCAL_MODELS = frozenset({"PINHOLE", "OPENCV", "OPENCV_FISHEYE", "FULL_OPENCV", "FOV", "THIN_PRISM_FISHEYE",
                              "RAD_TAN_THIN_PRISM_FISHEYE"})
MODEL_IDS = {name: (mid, n) for mid, (name, n) in CAMERA_MODELS.items()}
MODEL_FILES = ("cameras", "images", "points3D")
POINT2D_BYTES = 24  # x, y (double) + point3D id (int64)
TRACK_ELEM_BYTES = 8  # image id + point2D index (int32 each)
MIN_QUATERNION_NORM = 1e-8  # below this a qvec has no rotation to normalise


@dataclass
class ColmapCamera:
    id: int
    model: str
    width: int
    height: int
    params: np.ndarray  # [P] float64, in the model's own order


@dataclass
class ColmapImage:
    id: int
    qvec: np.ndarray  # [4] world-to-camera rotation, w x y z
    tvec: np.ndarray  # [3] world-to-camera translation
    camera_id: int
    name: str


@dataclass
class ColmapPoints:
    ids: np.ndarray  # [N] int64
    xyz: np.ndarray  # [N, 3] float64
    rgb: np.ndarray  # [N, 3] uint8
    error: np.ndarray  # [N] float64 mean reprojection error (px)


@dataclass
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints


def qvec_to_rotmat(qvec: np.ndarray) -> np.ndarray:
    """Unit quaternion [4] (w x y z) -> rotation matrix [3, 3]."""
    w, x, y, z = np.asarray(qvec, dtype=np.float64) / np.linalg.norm(qvec)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def image_world_to_cam(image: ColmapImage) -> np.ndarray:
    """[4, 4] OpenCV world-to-camera matrix of a COLMAP image."""
    m = np.eye(4)
    m[:3, :3] = qvec_to_rotmat(image.qvec)
    m[:3, 3] = image.tvec
    return m


# ---------------------------------------------------------------- binary


class _Cursor:
    """Bounds-checked reader over a file's bytes; overruns become a UserError naming the file."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"{path}: cannot read COLMAP file ({exc.strerror})") from None
        self.pos = 0

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise UserError(
                f"{self.path}: truncated or corrupt COLMAP file (needs {n} bytes at offset {self.pos}, "
                f"size {len(self.data)}); re-export the model (colmap model_converter) or re-run convert.py"
            )

    def unpack(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self._need(size)
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def skip(self, n: int) -> None:
        self._need(n)
        self.pos += n

    def cstring(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            self._need(len(self.data) + 1 - self.pos)
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: corrupt image name at offset {self.pos}") from None

    def check_count(self, count: int, min_record: int) -> None:
        """A header count that cannot fit in the remaining bytes means a corrupt file."""
        self._need(count * min_record)

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise UserError(f"{self.path}: {len(self.data) - self.pos} unexpected trailing bytes; corrupt COLMAP file")


def _model_params(path: Path, model_id: int) -> tuple[str, int]:
    if model_id not in CAMERA_MODELS:
        raise UserError(f"{path}: unknown COLMAP camera model id {model_id} (corrupt file or newer COLMAP)")
    return CAMERA_MODELS[model_id]


def read_cameras_binary(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    cur = _Cursor(Path(path))
    (count,) = cur.unpack("Q")
    cur.check_count(count, 24)
    cams = {}
    for _ in range(count):
        cam_id, model_id, width, height = cur.unpack("iiQQ")
        name, n_params = _model_params(cur.path, model_id)
        params = np.array(cur.unpack("d" * n_params), dtype=np.float64)
        cams[cam_id] = ColmapCamera(cam_id, name, int(width), int(height), params)
    cur.finish()
    return cams


def read_images_binary(path: str | os.PathLike) -> dict[int, ColmapImage]:
    cur = _Cursor(Path(path))
    (count,) = cur.unpack("Q")
    cur.check_count(count, 4 + 7 * 8 + 4 + 1 + 8)
    images = {}
    for _ in range(count):
        img_id, qw, qx, qy, qz, tx, ty, tz, cam_id = cur.unpack("i7di")
        name = cur.cstring()
        (n_points2d,) = cur.unpack("Q")
        cur.skip(n_points2d * POINT2D_BYTES)
        images[img_id] = ColmapImage(img_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), cam_id, name)
    cur.finish()
    return images


def read_points3d_binary(path: str | os.PathLike) -> ColmapPoints:
    cur = _Cursor(Path(path))
    (count,) = cur.unpack("Q")
    cur.check_count(count, 8 + 24 + 3 + 8 + 8)
    ids = np.empty(count, np.int64)
    xyz = np.empty((count, 3), np.float64)
    rgb = np.empty((count, 3), np.uint8)
    err = np.empty(count, np.float64)
    for i in range(count):
        pid, x, y, z, r, g, b, e, track_len = cur.unpack("Q3d3BdQ")
        cur.skip(track_len * TRACK_ELEM_BYTES)
        ids[i], xyz[i], rgb[i], err[i] = pid, (x, y, z), (r, g, b), e
    cur.finish()
    return ColmapPoints(ids, xyz, rgb, err)


# ---------------------------------------------------------------- text


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of every line that is not a comment, empty lines kept."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read COLMAP file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (corrupt COLMAP .txt model?)") from None
    return [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines()) if not ln.lstrip().startswith("#")]


def _bad_line(path: Path, lineno: int, what: str) -> UserError:
    return UserError(f"{path}:{lineno}: malformed COLMAP line ({what}); re-export the model")


def read_cameras_text(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    path = Path(path)
    cams = {}
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 4 or parts[1] not in MODEL_IDS:
            raise _bad_line(path, lineno, "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
        n_params = MODEL_IDS[parts[1]][1]
        if len(parts) != 4 + n_params:
            raise _bad_line(path, lineno, f"{parts[1]} needs {n_params} parameters")
        try:
            cam = ColmapCamera(int(parts[0]), parts[1], int(parts[2]), int(parts[3]),
                               np.array([float(p) for p in parts[4:]]))
        except ValueError:
            raise _bad_line(path, lineno, "non-numeric value") from None
        cams[cam.id] = cam
    return cams


def read_images_text(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """Two lines per image: the pose line, then its 2D points (possibly an empty line)."""
    path = Path(path)
    lines = _text_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        i += 1
        if not line:
            continue
        parts = line.split(maxsplit=9)
        if len(parts) != 10:
            raise _bad_line(path, lineno, "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME")
        try:
            vals = [float(p) for p in parts[1:8]]
            img = ColmapImage(int(parts[0]), np.array(vals[:4]), np.array(vals[4:]), int(parts[8]), parts[9])
        except ValueError:
            raise _bad_line(path, lineno, "non-numeric value") from None
        images[img.id] = img
        i += 1  # the POINTS2D line
    return images


def read_points3d_text(path: str | os.PathLike) -> ColmapPoints:
    path = Path(path)
    ids, xyz, rgb, err = [], [], [], []
    for lineno, line in _text_lines(path):
        if not line:
            continue
        parts = line.split()
        if len(parts) < 8 or (len(parts) - 8) % 2:
            raise _bad_line(path, lineno, "expected POINT3D_ID X Y Z R G B ERROR TRACK...")
        try:
            ids.append(int(parts[0]))
            xyz.append([float(p) for p in parts[1:4]])
            rgb.append([int(p) for p in parts[4:7]])
            err.append(float(parts[7]))
        except ValueError:
            raise _bad_line(path, lineno, "non-numeric value") from None
    rgb_arr = np.array(rgb, dtype=np.int64).reshape(-1, 3)
    if rgb_arr.size and (rgb_arr.min() < 0 or rgb_arr.max() > 255):
        raise UserError(f"{path}: point colours outside 0..255; corrupt COLMAP file")
    return ColmapPoints(np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                        rgb_arr.astype(np.uint8), np.array(err, np.float64))


# ---------------------------------------------------------------- model folder

_READERS = {
    ".bin": (read_cameras_binary, read_images_binary, read_points3d_binary),
    ".txt": (read_cameras_text, read_images_text, read_points3d_text),
}


def model_extension(folder: str | os.PathLike) -> str | None:
    """'.bin' if all three binary files are in ``folder``, else '.txt' if all text files are, else None."""
    folder = Path(folder)
    for ext in (".bin", ".txt"):
        if all((folder / f"{name}{ext}").is_file() for name in MODEL_FILES):
            return ext
    return None


def read_colmap_model(folder: str | os.PathLike) -> ColmapModel:
    """Read cameras, images and points3D from ``folder`` (binary preferred, text otherwise)."""
    folder = Path(folder)
    ext = model_extension(folder)
    if ext is None:
        raise UserError(
            f"{folder}: no complete COLMAP model (needs cameras, images and points3D as .bin or .txt); "
            "run convert.py on the photos in input/"
        )
    read_cams, read_imgs, read_pts = _READERS[ext]
    model = ColmapModel(read_cams(folder / f"cameras{ext}"), read_imgs(folder / f"images{ext}"),
                        read_pts(folder / f"points3D{ext}"))
    check_model(model, folder, ext)
    return model


def _bad_entry(path: Path, entry: str, what: str) -> UserError:
    return UserError(f"{path}: {entry} {what}; fix or remove it (or re-run convert.py)")


def check_cameras(cams: dict[int, ColmapCamera], path: Path) -> None:
    """Every camera has a positive size and finite parameters with a positive focal length (the first)."""
    for cam in cams.values():
        entry = f"camera {cam.id}"
        if cam.width <= 0 or cam.height <= 0:
            raise _bad_entry(path, entry, f"has size {cam.width}x{cam.height} (must be positive)")
        if not np.isfinite(cam.params).all():
            raise _bad_entry(path, entry, f"has non-finite parameters {_fmt(cam.params)}")
        focals = cam.params[:2] if cam.model in TWO_FOCAL_MODELS else cam.params[:1]
        if (focals <= 0).any():
            raise _bad_entry(path, entry, f"has a focal length <= 0 ({_fmt(focals)})")


def check_images(images: dict[int, ColmapImage], cams: dict[int, ColmapCamera], path: Path, ext: str) -> None:
    """Every image pose is finite with a non-zero quaternion, and uses a known camera."""
    for img in images.values():
        entry = f"image {img.id} ({img.name})"
        if not (np.isfinite(img.qvec).all() and np.isfinite(img.tvec).all()):
            raise _bad_entry(path, entry, f"has a non-finite pose (q {_fmt(img.qvec)}, t {_fmt(img.tvec)})")
        if np.linalg.norm(img.qvec) < MIN_QUATERNION_NORM:
            raise _bad_entry(path, entry, "has a zero rotation quaternion")
        if img.camera_id not in cams:
            raise _bad_entry(path, entry, f"uses camera {img.camera_id}, which is not in cameras{ext}")


def check_model(model: ColmapModel, folder: Path, ext: str) -> None:
    """UserError naming the file and entry of the first camera, image or 3D point that cannot be used."""
    check_cameras(model.cameras, folder / f"cameras{ext}")
    check_images(model.images, model.cameras, folder / f"images{ext}", ext)
    bad = np.nonzero(~np.isfinite(model.points.xyz).all(axis=1))[0]
    if bad.size:
        i = int(bad[0])
        raise _bad_entry(folder / f"points3D{ext}", f"point {int(model.points.ids[i])}",
                         f"has a non-finite position ({_fmt(model.points.xyz[i])}; {bad.size} of "
                         f"{len(model.points.ids)} points are non-finite)")


def _fmt(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def write_colmap_text(model: ColmapModel, folder: str | os.PathLike) -> None:
    """Write ``model`` as cameras.txt / images.txt / points3D.txt (no 2D points or tracks), atomically."""
    folder = Path(folder)
    cams = ["# CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]"]
    cams += [f"{c.id} {c.model} {c.width} {c.height} {_fmt(c.params)}" for c in model.cameras.values()]
    imgs = ["# IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", "# POINTS2D[] as (X, Y, POINT3D_ID)"]
    for im in model.images.values():
        imgs += [f"{im.id} {_fmt(im.qvec)} {_fmt(im.tvec)} {im.camera_id} {im.name}", ""]
    pts = ["# POINT3D_ID X Y Z R G B ERROR TRACK[]"]
    p = model.points
    pts += [f"{int(i)} {_fmt(x)} {' '.join(str(int(c)) for c in rgb)} {float(e)!r}"
            for i, x, rgb, e in zip(p.ids, p.xyz, p.rgb, p.error)]
    for name, lines in zip(MODEL_FILES, (cams, imgs, pts)):
        write_text(folder / f"{name}.txt", "\n".join(lines) + "\n")
