"""Bad scenes: every defect in a scene folder is one ``error:`` line naming the file (and entry), read
before training starts.

Families (issue 11): A geometry (non-finite / degenerate poses, intrinsics, points), C sizes (aspect
ratio vs the camera, EndoNeRF frames vs frame 0, truncated or corrupt images), E filesystem
(unreadable file, folder instead of file, non-UTF-8 paths, which used to crash OpenCV), I security
(image names leaving the scene folder). Each bad scene is a small edit of a tiny synthetic scene; the
representative cases run the real ``train.py``, the variants run the reader (cheaper).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from arguments import ModelParams
from scipy.spatial.transform import Rotation

from scene.blender_reader import read_blender_scene
from scene.cameras import load_camera
from scene.colmap_loader import (CAMERA_MODELS, ColmapCamera, ColmapImage, ColmapModel, ColmapPoints,
                                 read_colmap_model, write_colmap_text)
from scene.colmap_reader import read_colmap_scene
from scene.endonerf_reader import read_endonerf_scene
from scene.reader_utils import read_points_ply, same_aspect
from scene.synthetic_blender import make_synthetic_blender, synthetic_views
from scene.synthetic_endonerf import NAMES, make_synthetic_endonerf
from tests.cli_helpers import assert_one_line_error, run_script
from utils import io_utils
from utils.errors import UserError
from utils.image_utils import read_image
from utils.io_utils import load_npy, save_npy

SIZE = 16  # px, square synthetic views
N_VIEWS = 4
N_POINTS = 200
MODEL_IDS = {name: mid for mid, (name, _) in CAMERA_MODELS.items()}
ENDO_FRAMES, ENDO_W, ENDO_H = 4, 20, 16


# ----------------------------------------------------------------------------- builders


def _write_colmap_binary(model: ColmapModel, folder: Path) -> None:
    """cameras.bin / images.bin / points3D.bin in COLMAP's layout (no 2D points, empty tracks)."""
    folder.mkdir(parents=True, exist_ok=True)
    cams = struct.pack("<Q", len(model.cameras))
    for c in model.cameras.values():
        cams += struct.pack(f"<iiQQ{len(c.params)}d", c.id, MODEL_IDS[c.model], c.width, c.height, *c.params)
    imgs = struct.pack("<Q", len(model.images))
    for im in model.images.values():
        imgs += struct.pack("<i7di", im.id, *im.qvec, *im.tvec, im.camera_id) + im.name.encode() + b"\0"
        imgs += struct.pack("<Q", 0)
    p = model.points
    pts = struct.pack("<Q", len(p.ids))
    for i in range(len(p.ids)):
        pts += struct.pack("<Q3d3BdQ", int(p.ids[i]), *p.xyz[i], *map(int, p.rgb[i]), float(p.error[i]), 0)
    for name, data in (("cameras", cams), ("images", imgs), ("points3D", pts)):
        (folder / f"{name}.bin").write_bytes(data)


def _write_model(model: ColmapModel, scene: Path, ext: str) -> None:
    folder = scene / "sparse" / "0"
    shutil.rmtree(folder, ignore_errors=True)
    (_write_colmap_binary if ext == ".bin" else write_colmap_text)(model, folder)


@pytest.fixture(scope="module")
def blender_master(tmp_path_factory) -> Path:
    return make_synthetic_blender(tmp_path_factory.mktemp("bad") / "blender", n_train=N_VIEWS, n_test=1,
                                  width=SIZE, height=SIZE, seed=0)


@pytest.fixture(scope="module")
def colmap_master(blender_master, tmp_path_factory) -> Path:
    """The synthetic views as a COLMAP scene: one PINHOLE camera, JPEG images, text model."""
    scene = tmp_path_factory.mktemp("bad") / "colmap"
    (scene / "images").mkdir(parents=True)
    views = synthetic_views(N_VIEWS, 0, SIZE, SIZE)
    images = {}
    for i, v in enumerate(views, start=1):
        bgr = cv2.imread(str(blender_master / "images" / f"{v.name}.png"))
        cv2.imwrite(str(scene / "images" / f"{v.name}.jpg"), bgr)
        x, y, z, w = Rotation.from_matrix(v.world_to_cam[:3, :3]).as_quat()
        images[i] = ColmapImage(i, np.array([w, x, y, z]), v.world_to_cam[:3, 3].copy(), 1, f"{v.name}.jpg")
    cam = ColmapCamera(1, "PINHOLE", SIZE, SIZE, np.array([views[0].fx, views[0].fy, SIZE / 2, SIZE / 2]))
    cloud = read_points_ply(blender_master / "points3d.ply")
    pts = ColmapPoints(np.arange(1, N_POINTS + 1, dtype=np.int64), cloud.points[:N_POINTS].astype(np.float64),
                       np.round(cloud.colors[:N_POINTS] * 255).astype(np.uint8), np.zeros(N_POINTS))
    _write_model(ColmapModel({1: cam}, images, pts), scene, ".txt")
    return scene


@pytest.fixture(scope="module")
def endonerf_master(tmp_path_factory) -> Path:
    return make_synthetic_endonerf(tmp_path_factory.mktemp("bad") / "endonerf", ENDO_FRAMES, ENDO_W, ENDO_H, seed=0)


@pytest.fixture
def scenes(blender_master, colmap_master, endonerf_master, tmp_path):
    """kind -> a private copy of that master scene (made on first use)."""
    masters = {"colmap": colmap_master, "blender": blender_master, "endonerf": endonerf_master}

    def copy_of(kind: str) -> Path:
        return Path(shutil.copytree(masters[kind], tmp_path / kind))
    return copy_of


def _args(**kw) -> ModelParams:
    return ModelParams.defaults().replace(**{"num_init_points": 500, **kw})


# ----------------------------------------------------------------------------- edits


def _edit_model(scene: Path, ext: str, edit) -> None:
    model = read_colmap_model(scene / "sparse" / "0")
    edit(model)
    _write_model(model, scene, ext)


def _edit_transforms(scene: Path, edit) -> None:
    path = scene / "transforms_train.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _write_image(path: Path, width: int, height: int) -> None:
    ok, data = cv2.imencode(path.suffix, np.full((height, width, 3), 100, np.uint8))
    path.write_bytes(data.tobytes())


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _folder_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _secret(scene: Path) -> Path:
    """An image outside the scene folder that a bad entry points at (readable, so only the check stops it)."""
    secret = scene.parent / "secret.jpg"
    _write_image(secret, SIZE, SIZE)
    return secret


def _set(obj, **kw):
    for k, v in kw.items():
        setattr(obj, k, v)


def _frame_file(scene: Path, sub: str, i: int) -> Path:
    return scene / sub / NAMES[sub].format(i)


# (case id, scene kind, edit(scene), needles of the one error line). The first needle is the named file.
CLI_CASES = [
    ("A-colmap-txt-zero-focal", "colmap",
     lambda s: _edit_model(s, ".txt", lambda m: _set(m.cameras[1], params=np.array([0.0, 20.0, 8.0, 8.0]))),
     ("cameras.txt", "camera 1", "focal length <= 0")),
    ("A-colmap-bin-zero-quaternion", "colmap",
     lambda s: _edit_model(s, ".bin", lambda m: _set(m.images[2], qvec=np.zeros(4))),
     ("images.bin", "image 2 (r_001.jpg)", "zero rotation quaternion")),
    ("A-colmap-bin-nan-point", "colmap",
     lambda s: _edit_model(s, ".bin", lambda m: m.points.xyz.__setitem__((4, 1), np.nan)),
     ("points3D.bin", "point 5", "non-finite position")),
    ("A-blender-fov-out-of-range", "blender",
     lambda s: _edit_transforms(s, lambda d: d.__setitem__("camera_angle_x", 3.5)),
     ("transforms_train.json frame 0", "'camera_angle_x' is 3.5", "between 0 and pi")),
    ("A-blender-nan-pose", "blender",
     lambda s: _edit_transforms(s, lambda d: d["frames"][1]["transform_matrix"][0].__setitem__(3, float("nan"))),
     ("transforms_train.json frame 1", "NaN")),
    ("A-blender-singular-pose", "blender",
     lambda s: _edit_transforms(s, lambda d: d["frames"][2].__setitem__(
         "transform_matrix", [[0.0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]])),
     ("transforms_train.json frame 2", "not a rotation")),
    ("C-colmap-aspect", "colmap", lambda s: _write_image(s / "images" / "r_001.jpg", SIZE, SIZE // 2),
     ("r_001.jpg", "16x8", "camera 1", "aspect ratio")),
    ("C-blender-wh-aspect", "blender",
     lambda s: _edit_transforms(s, lambda d: d.update(w=SIZE, h=SIZE * 2)),
     ("r_000.png", "16x32", "aspect ratio")),
    ("C-endonerf-mask-size", "endonerf", lambda s: _write_image(_frame_file(s, "masks", 2), ENDO_W // 2, ENDO_H // 2),
     ("frame-000002.mask.png", "10x8", "frame 0")),
    ("C-truncated-jpeg", "colmap", lambda s: _truncate(s / "images" / "r_002.jpg"),
     ("r_002.jpg", "truncated JPEG")),
    ("C-truncated-png", "blender", lambda s: _truncate(s / "images" / "r_003.png"),
     ("r_003.png", "truncated PNG")),
    ("E-folder-instead-of-image", "colmap", lambda s: _folder_instead(s / "images" / "r_003.jpg"),
     ("r_003.jpg", "is a folder")),
    ("I-colmap-dotdot", "colmap",
     lambda s: _edit_model(s, ".txt", lambda m: _set(m.images[1], name=f"../../{_secret(s).name}")),
     ("images.txt: image 1", "'../../secret.jpg'", "outside")),
    ("I-colmap-absolute", "colmap",
     lambda s: _edit_model(s, ".bin", lambda m: _set(m.images[3], name=str(_secret(s)))),
     ("images.bin: image 3", "secret.jpg", "outside")),
    ("I-blender-dotdot", "blender",
     lambda s: _edit_transforms(s, lambda d: d["frames"][0].__setitem__("file_path", f"../{_secret(s).stem}")),
     ("transforms_train.json frame 0", "'../secret'", "outside")),
]


@pytest.mark.parametrize("case, kind, edit, needles", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_train_names_the_bad_file(scenes, tmp_path, case, kind, edit, needles):
    scene = scenes(kind)
    edit(scene)
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out", "--iterations", "1", "--quiet")
    assert_one_line_error(proc, *needles)


def test_permission_denied_image(scenes, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files without read permission (the reader-level test covers the message)")
    scene = scenes("colmap")
    (scene / "images" / "r_000.jpg").chmod(0)
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out", "--iterations", "1", "--quiet")
    assert_one_line_error(proc, "r_000.jpg", "permission denied")


def test_non_utf8_scene_path_trains_and_names_bad_files(blender_master, tmp_path):
    """OpenCV used to segfault on such paths; now the scene trains, and a bad file there is named (escaped)."""
    scene = Path(os.fsdecode(bytes(tmp_path) + b"/sc\xe8ne"))
    shutil.copytree(blender_master, scene)
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out", "--iterations", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    _truncate(scene / "images" / "r_001.png")
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out2", "--iterations", "1", "--quiet")
    assert_one_line_error(proc, "sc\\xe8ne/images/r_001.png", "truncated PNG")


# ----------------------------------------------------------------------------- reader-level variants


@pytest.mark.parametrize("ext, edit, needles", [
    (".txt", lambda m: _set(m.cameras[1], width=0), ("cameras.txt", "camera 1", "size 0x16")),
    (".bin", lambda m: _set(m.cameras[1], params=np.array([20.0, np.inf, 8.0, 8.0])),
     ("cameras.bin", "camera 1", "non-finite")),
    (".txt", lambda m: m.images[4].tvec.__setitem__(0, np.inf),
     ("images.txt", "image 4 (r_003.jpg)", "non-finite pose")),
    (".txt", lambda m: m.points.xyz.__setitem__((0, 0), -np.inf), ("points3D.txt", "point 1", "non-finite")),
], ids=["txt-zero-width", "bin-inf-focal", "txt-inf-translation", "txt-inf-point"])
def test_colmap_geometry_variants(scenes, ext, edit, needles):
    scene = scenes("colmap")
    _edit_model(scene, ext, edit)
    with pytest.raises(UserError) as exc:
        read_colmap_scene(scene, _args())
    assert all(n in str(exc.value) for n in needles), str(exc.value)


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d.update(fl_x=0), ("frame 0", "'fl_x' is 0")),
    (lambda d: d.update(camera_angle_x=0.0), ("frame 0", "'camera_angle_x' is 0")),
    (lambda d: d.update(w=-16, h=16), ("frame 0", "'w' is -16")),
    (lambda d: d["frames"][3].__setitem__("file_path", "/etc/passwd"), ("frame 3", "'/etc/passwd'", "outside")),
    (lambda d: d["frames"][1]["transform_matrix"][3].__setitem__(0, 0.5), ("frame 1", "last row")),
], ids=["zero-fl_x", "zero-fov", "negative-w", "absolute-file_path", "projective-row"])
def test_blender_variants(scenes, edit, needles):
    scene = scenes("blender")
    _edit_transforms(scene, edit)
    with pytest.raises(UserError) as exc:
        read_blender_scene(scene, _args())
    assert all(n in str(exc.value) for n in needles), str(exc.value)


def test_blender_folder_at_file_path(scenes):
    scene = scenes("blender")
    _folder_instead(scene / "images" / "r_002.png")
    _edit_transforms(scene, lambda d: d["frames"][2].__setitem__("file_path", "./images/r_002.png"))
    with pytest.raises(UserError, match=r"frame 2: 'file_path' .*r_002.png is a folder"):
        read_blender_scene(scene, _args())


@pytest.mark.parametrize("sub, frame, size", [("depth", 1, (ENDO_W, ENDO_H + 2)),
                                              ("images", 3, (ENDO_W * 2, ENDO_H * 2))])
def test_endonerf_frame_size_variants(scenes, sub, frame, size):
    scene = scenes("endonerf")
    path = _frame_file(scene, sub, frame)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), cv2.resize(raw, size, interpolation=cv2.INTER_NEAREST))
    with pytest.raises(UserError, match=rf"{path.name}: is {size[0]}x{size[1]} but frame 0 .* is {ENDO_W}x{ENDO_H}"):
        read_endonerf_scene(scene, _args())


def test_endonerf_hwf_aspect_must_match_images(scenes):
    scene = scenes("endonerf")
    pb = load_npy(scene / "poses_bounds.npy")
    pb[2, 9] *= 2  # hwf of frame 2 (the 3x5 block's last column: H, W, focal) says twice as wide
    save_npy(scene / "poses_bounds.npy", pb)
    with pytest.raises(UserError, match=r"frame-000002.color.png: frames are 20x16 but poses_bounds.npy row 2 "
                                        r"says 40x16"):
        read_endonerf_scene(scene, _args())


def test_downscaled_colmap_images_are_fine(scenes):
    """images_2/ (same aspect, rounded) is the COLMAP convention, not a size error; intrinsics follow."""
    scene = scenes("colmap")
    (scene / "images_2").mkdir()
    for name in os.listdir(scene / "images"):
        _write_image(scene / "images_2" / name, SIZE // 2 - 1, SIZE // 2)  # 7x8: one pixel of rounding
    info = read_colmap_scene(scene, _args(images="images_2"))
    cam = load_camera(info.train_cameras[0], 1, np.zeros(3))
    assert (cam.image_width, cam.image_height) == (SIZE // 2 - 1, SIZE // 2)
    assert same_aspect((3000, 1999), (6000, 4000)) and not same_aspect((SIZE, SIZE - 3), (SIZE, SIZE))


def test_unreadable_image_message(tmp_path, monkeypatch):
    """The permission-denied line, simulated where the tests run as root."""
    path = tmp_path / "r_000.png"
    _write_image(path, 4, 4)

    def denied(*args, **kw):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(io_utils, "open", denied, raising=False)
    with pytest.raises(UserError, match=r"r_000.png: permission denied reading the image file; fix its permissions"):
        read_image(path)


def test_corrupt_jpeg_is_an_error_and_the_decoder_stays_quiet(tmp_path, capfd):
    """libjpeg warns about bad data on stderr and returns a damaged picture; that is an error naming the file."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8), (9, 9), 3)
    data = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    sos = data.rfind(b"\xff\xda")
    mid = (sos + len(data)) // 2
    data[mid:mid + 2] = b"\xff\xd3"  # a stray restart marker inside the entropy-coded data
    path = tmp_path / "bad.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"bad.jpg: corrupt image data \(Corrupt JPEG data"):
        read_image(path)
    out, err = capfd.readouterr()
    assert "JPEG" not in out + err


def test_depth_mode_resolved_once_with_symlinked_depth_folder(scenes, tmp_path):
    """8-bit depth PNGs with raw-unit bounds read as plain depth; with depth/ a symlink to a folder outside
    the scene the camera loader used to re-resolve (no poses_bounds.npy beside the link's target) and read
    them as inverse depth. Now the initial points and the depth targets agree."""
    scene = scenes("endonerf")
    elsewhere = tmp_path / "elsewhere" / "depth8"
    elsewhere.mkdir(parents=True)
    for i in range(ENDO_FRAMES):
        raw = cv2.imread(str(_frame_file(scene, "depth", i)), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(elsewhere / NAMES["depth"].format(i)), np.clip(raw // 4, 0, 255).astype(np.uint8))
    pb = load_npy(scene / "poses_bounds.npy")
    pb[:, 15:17] = np.clip(pb[:, 15:17] / 4, 1, 255)  # bounds in the 8-bit units: far in (1, 255]
    save_npy(scene / "poses_bounds.npy", pb)
    shutil.rmtree(scene / "depth")
    os.symlink(elsewhere, scene / "depth")
    info = read_endonerf_scene(scene, _args(num_init_points=0, identity_poses=True))
    assert info.extras["depth_mode"] == "depth"
    first = info.train_cameras[0]
    assert (first.depth_mode, first.depth_scale) == ("depth", 1.0)
    cam = load_camera(first, 1, np.zeros(3))
    valid = cam.depth[0].numpy() > 0
    rows, cols = np.nonzero(valid)  # frame 0's points come first, in this order (identity pose: z = depth)
    np.testing.assert_allclose(info.point_cloud.points[: rows.size, 2], cam.depth[0].numpy()[rows, cols], rtol=1e-6)
