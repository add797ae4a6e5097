"""Blender / NeRF-synthetic reader and the synthetic scene generator."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from arguments import ModelParams

from scene.blender_reader import RANDOM_INIT_POINTS, read_blender_scene
from scene.dataset_readers import read_scene
from scene.synthetic_blender import make_synthetic_blender, synthetic_views
from utils.errors import UserError

W, H = 12, 8


def _args(**kw):
    return ModelParams.defaults().replace(**kw)


def _gl_look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> list:
    """Blender camera-to-world: local -z looks at the target, +y is up (written independently of the reader)."""
    eye, target, up = map(np.asarray, (eye, target, up))
    back = (eye - target) / np.linalg.norm(eye - target)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, cam_up, back, eye
    return m.tolist()


def _image(path: Path, alpha: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 4 if alpha else 3), 128, np.uint8))


def _scene(tmp_path: Path, train: dict, test: dict | None = None) -> Path:
    (tmp_path / "transforms_train.json").write_text(json.dumps(train))
    if test is not None:
        (tmp_path / "transforms_test.json").write_text(json.dumps(test))
    return tmp_path


def _frame(path: str, eye=(0.0, -4.0, 0.0), **extra) -> dict:
    return {"file_path": path, "transform_matrix": _gl_look_at(eye), **extra}


def test_file_path_with_and_without_extension(tmp_path):
    _image(tmp_path / "train" / "a.png", alpha=True)
    _image(tmp_path / "train" / "b.jpg")
    scene = _scene(tmp_path, {"camera_angle_x": 0.7, "frames": [_frame("./train/a"), _frame("train/b.jpg")]})
    info = read_scene(scene, _args())
    assert info.kind == "blender"
    assert [Path(c.image_path).name for c in info.train_cameras] == ["a.png", "b.jpg"]
    assert [c.image_name for c in info.train_cameras] == ["a", "b"]
    assert (info.train_cameras[0].width, info.train_cameras[0].height) == (W, H)  # read from the file header


def test_intrinsics_from_angle_and_from_focal(tmp_path):
    _image(tmp_path / "r.png")
    angle = 0.6911
    scene = _scene(tmp_path, {"camera_angle_x": angle, "frames": [
        _frame("r"),
        _frame("r", camera_angle_y=1.0),
        _frame("r", fl_x=20.0, fl_y=22.0, cx=5.5, cy=3.0, w=24, h=16),
        _frame("r", fl_x=20.0),
    ]})
    cams = read_blender_scene(scene, _args()).train_cameras
    fx = 0.5 * W / math.tan(0.5 * angle)
    assert (cams[0].fx, cams[0].fy, cams[0].cx, cams[0].cy) == pytest.approx((fx, fx, W / 2, H / 2))
    assert cams[1].fy == pytest.approx(0.5 * H / math.tan(0.5))
    c = cams[2]
    assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (20.0, 22.0, 5.5, 3.0, 24, 16)
    assert (cams[3].fx, cams[3].fy) == (20.0, 20.0)
    assert [c.image_name for c in cams] == ["r", "r_1", "r_2", "r_3"]  # repeats of one file stay distinct


def test_opengl_pose_becomes_opencv(tmp_path):
    """A camera at -4y looking at the origin (z up): origin at the image centre, +x world to the right,
    +z world up in the picture (smaller v)."""
    _image(tmp_path / "r.png")
    scene = _scene(tmp_path, {"camera_angle_x": 0.7, "frames": [_frame("r", eye=(0.0, -4.0, 0.0))]})
    cam = read_blender_scene(scene, _args()).train_cameras[0]
    np.testing.assert_allclose(cam.center, [0.0, -4.0, 0.0], atol=1e-12)

    def project(p):
        x = cam.world_to_cam[:3, :3] @ np.asarray(p) + cam.world_to_cam[:3, 3]
        return x[2], cam.fx * x[0] / x[2] + cam.cx, cam.fy * x[1] / x[2] + cam.cy

    depth, u, v = project([0.0, 0.0, 0.0])
    assert depth == pytest.approx(4.0) and (u, v) == pytest.approx((W / 2, H / 2))
    assert project([0.3, 0.0, 0.0])[1] > W / 2  # right of centre
    assert project([0.0, 0.0, 0.3])[2] < H / 2  # above centre
    assert project([0.0, -8.0, 0.0])[0] < 0  # behind the camera


def test_time_key_and_splits(tmp_path):
    _image(tmp_path / "r.png")
    frames = [_frame("r", time=i / 9) for i in range(10)]
    scene = _scene(tmp_path, {"camera_angle_x": 0.7, "frames": frames},
                   {"camera_angle_x": 0.7, "frames": [_frame("r", time=0.5)]})
    plain = read_blender_scene(scene, _args())
    assert len(plain.train_cameras) == 10 and plain.test_cameras == []
    assert [c.time for c in plain.train_cameras] == pytest.approx([i / 9 for i in range(10)])
    evald = read_blender_scene(scene, _args(eval=True))
    assert len(evald.train_cameras) == 10 and len(evald.test_cameras) == 1 and evald.test_cameras[0].is_test
    (tmp_path / "transforms_test.json").unlink()
    held = read_blender_scene(scene, _args(eval=True))  # no test file: every 8th training frame
    assert (len(held.train_cameras), len(held.test_cameras)) == (8, 2)


@pytest.mark.parametrize("content, match", [
    ("{not json", "transforms_train.json: invalid JSON"),
    ('{"camera_angle_x": 0.7}', "transforms_train.json: expected .*'frames'"),
    ('{"camera_angle_x": 0.7, "frames": [{"file_path": "missing"}]}', "frame 0: image .*missing not found"),
    ('{"camera_angle_x": 0.7, "frames": [{"file_path": "r", "transform_matrix": [[1, 0], [0, 1]]}]}',
     "frame 0: 'transform_matrix' must be a 4x4"),
    ('{"frames": [{"file_path": "r", "transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}',
     "no intrinsics"),
    ('{"camera_angle_x": 0.7, "k1": 0.1, "frames": [{"file_path": "r", '
     '"transform_matrix": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}]}', "distortion"),
])
def test_bad_json_is_a_user_error(tmp_path, content, match):
    _image(tmp_path / "r.png")
    (tmp_path / "transforms_train.json").write_text(content)
    with pytest.raises(UserError, match=match):
        read_blender_scene(tmp_path, _args())


def test_random_points_without_ply(tmp_path):
    _image(tmp_path / "r.png")
    eyes = [(4 * math.cos(a), 4 * math.sin(a), 1.5) for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)]
    scene = _scene(tmp_path, {"camera_angle_x": 0.7, "frames": [_frame("r", eye=e) for e in eyes]})
    a = read_blender_scene(scene, _args(seed=3))
    b = read_blender_scene(scene, _args(seed=3))
    assert a.extras["point_source"] == "random"
    assert a.point_cloud.points.shape == (RANDOM_INIT_POINTS, 3)
    np.testing.assert_array_equal(a.point_cloud.points, b.point_cloud.points)
    # a cube around the origin the cameras look at, inside the ring of cameras
    assert np.abs(a.point_cloud.points.mean(0)).max() < 0.05
    assert np.abs(a.point_cloud.points).max() < 4 * math.hypot(1, 1.5 / 4) / 2
    assert not any(p.name.endswith(".ply") for p in tmp_path.iterdir())  # nothing written into the scene


def test_synthetic_scene_is_deterministic_and_reads_back(tmp_path):
    a = make_synthetic_blender(tmp_path / "a", n_train=5, n_test=2, width=40, height=32, seed=1)
    b = make_synthetic_blender(tmp_path / "b", n_train=5, n_test=2, width=40, height=32, seed=1)
    c = make_synthetic_blender(tmp_path / "c", n_train=5, n_test=2, width=40, height=32, seed=2)
    files = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert len(files) == 7 + 3  # 7 PNGs, 2 JSON, 1 PLY
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "images" / "r_000.png").read_bytes() != (c / "images" / "r_000.png").read_bytes()

    info = read_blender_scene(a, _args(eval=True))
    views = {v.name: v for v in synthetic_views(5, 2, 40, 32)}
    assert len(info.train_cameras) == 5 and len(info.test_cameras) == 2
    for cam in info.train_cameras + info.test_cameras:
        truth = views[cam.image_name]
        assert cam.is_test == truth.is_test
        np.testing.assert_allclose(cam.world_to_cam, truth.world_to_cam, atol=1e-9)
        assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == pytest.approx(
            (truth.fx, truth.fy, truth.cx, truth.cy, 40, 32))
    assert info.extras["point_source"] == "points3d.ply"
    assert 1000 < len(info.point_cloud.points) < 10000


def test_synthetic_points_match_rendered_colours(tmp_path):
    """Surface points projected into a rendered view mostly land on pixels of their own colour."""
    scene = make_synthetic_blender(tmp_path, n_train=1, n_test=0, width=96, height=96, seed=0)
    info = read_blender_scene(scene, _args())
    cam = info.train_cameras[0]
    img = cv2.cvtColor(cv2.imread(cam.image_path), cv2.COLOR_BGR2RGB) / 255.0
    pts = info.point_cloud.points.astype(np.float64)
    x = pts @ cam.world_to_cam[:3, :3].T + cam.world_to_cam[:3, 3]
    u = np.floor(cam.fx * x[:, 0] / x[:, 2] + cam.cx).astype(int)
    v = np.floor(cam.fy * x[:, 1] / x[:, 2] + cam.cy).astype(int)
    inside = (x[:, 2] > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
    seen, colors = img[v[inside], u[inside]], info.point_cloud.colors[inside]
    err = np.abs(seen - colors).mean(1)
    shuffled = np.abs(seen - colors[np.random.default_rng(0).permutation(len(colors))]).mean(1)
    assert inside.sum() > 500
    # occluded points and sub-pixel texture detail blur the match, so compare with a wrong assignment
    assert np.median(err) < 0.6 * np.median(shuffled)
    assert np.mean(err < 0.05) > 2 * np.mean(shuffled < 0.05)


def test_synthetic_cli(tmp_path):
    from scene.synthetic_blender import main

    main([str(tmp_path / "s"), "--views", "3", "--test_views", "1", "--size", "24x16", "--seed", "4"])
    doc = json.loads((tmp_path / "s" / "transforms_train.json").read_text())
    assert len(doc["frames"]) == 3 and "camera_angle_x" in doc
    assert cv2.imread(str(tmp_path / "s" / "images" / "r_003.png")).shape == (16, 24, 3)
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        main([str(tmp_path / "t"), "--size", "big"])


def test_corrupt_points_ply_is_named(tmp_path):
    _image(tmp_path / "r.png")
    scene = _scene(tmp_path, {"camera_angle_x": 0.7, "frames": [_frame("r")]})
    (tmp_path / "points3d.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\n"
                                            b"property float x\nproperty float y\nproperty float z\nend_header\n\0\0")
    with pytest.raises(UserError, match="points3d.ply: not a readable point-cloud PLY"):
        read_blender_scene(scene, _args())
