"""COLMAP model parsing (binary and text) and the COLMAP scene reader."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from arguments import ModelParams

from scene.colmap_loader import ColmapCamera, read_colmap_model, write_colmap_text
from scene.colmap_reader import read_colmap_scene
from scene.dataset_readers import read_scene
from tests.conftest import shared_scene
from utils.errors import UserError

N_CAMERAS, N_POINTS = 23, 1443  # colmap_bartoszek (see its PROVENANCE.txt)


def _args(**kw):
    return ModelParams.defaults().replace(**kw)


def _link_images(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.name not in skip:
            os.symlink(f.resolve(), dst / f.name)


def _scene_with_model(tmp_path: Path, model, skip_images: set[str] = frozenset()) -> Path:
    """A scene in tmp_path: text model in sparse/0, bartoszek images linked into images/."""
    scene = tmp_path / "scene"
    write_colmap_text(model, scene / "sparse" / "0")
    _link_images(shared_scene("colmap_bartoszek") / "images", scene / "images", skip_images)
    return scene


@pytest.fixture(scope="module")
def bartoszek_model():
    return read_colmap_model(shared_scene("colmap_bartoszek") / "sparse" / "0")


def test_bartoszek_loads():
    info = read_scene(shared_scene("colmap_bartoszek"), _args())
    assert info.kind == "colmap"
    assert len(info.train_cameras) == N_CAMERAS and not info.test_cameras
    assert info.point_cloud.points.shape == (N_POINTS, 3)
    assert 0.0 <= info.point_cloud.colors.min() and info.point_cloud.colors.max() <= 1.0
    names = [c.image_name for c in info.train_cameras]
    assert names == sorted(names)
    for cam in info.train_cameras:
        assert Path(cam.image_path).is_file()
        rot = cam.world_to_cam[:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
        assert cam.fx > 0 and cam.fy > 0 and 0 < cam.cx < cam.width and 0 < cam.cy < cam.height
    # most SfM points lie in front of most cameras
    pts = info.point_cloud.points.astype(np.float64)
    in_front = [np.mean((pts @ c.world_to_cam[:3, :3].T + c.world_to_cam[:3, 3])[:, 2] > 0) for c in info.train_cameras]
    assert np.median(in_front) > 0.9


def test_eval_split_every_8th():
    info = read_scene(shared_scene("colmap_bartoszek"), _args(eval=True))
    assert [c.image_name for c in info.test_cameras] == ["DSC_5283", "DSC_5291", "DSC_5299"]
    assert len(info.train_cameras) == N_CAMERAS - 3
    assert all(c.is_test for c in info.test_cameras) and not any(c.is_test for c in info.train_cameras)


def _assert_models_equal(a, b):
    assert a.cameras.keys() == b.cameras.keys() and a.images.keys() == b.images.keys()
    for k, cam in a.cameras.items():
        assert (cam.model, cam.width, cam.height) == (b.cameras[k].model, b.cameras[k].width, b.cameras[k].height)
        np.testing.assert_allclose(cam.params, b.cameras[k].params, rtol=1e-12)
    for k, img in a.images.items():
        other = b.images[k]
        assert (img.name, img.camera_id) == (other.name, other.camera_id)
        np.testing.assert_allclose(img.qvec, other.qvec, atol=1e-12)
        np.testing.assert_allclose(img.tvec, other.tvec, atol=1e-9)
    oa, ob = np.argsort(a.points.ids), np.argsort(b.points.ids)  # writers may order points differently
    np.testing.assert_array_equal(a.points.ids[oa], b.points.ids[ob])
    np.testing.assert_allclose(a.points.xyz[oa], b.points.xyz[ob], atol=1e-9)
    np.testing.assert_array_equal(a.points.rgb[oa], b.points.rgb[ob])


def test_binary_equals_text_from_our_writer(tmp_path, bartoszek_model):
    write_colmap_text(bartoszek_model, tmp_path)
    _assert_models_equal(bartoszek_model, read_colmap_model(tmp_path))


def test_binary_equals_text_from_pycolmap(tmp_path, bartoszek_model):
    """An independent writer: pycolmap's text export (with 2D points and tracks) parses to the same model."""
    pycolmap = pytest.importorskip("pycolmap")
    pycolmap.Reconstruction(str(shared_scene("colmap_bartoszek") / "sparse" / "0")).write_text(str(tmp_path))
    assert (tmp_path / "images.txt").stat().st_size > 10_000  # the 2D-point lines are really there
    _assert_models_equal(bartoszek_model, read_colmap_model(tmp_path))


def test_text_scene_reads_like_binary(tmp_path, bartoszek_model):
    scene = _scene_with_model(tmp_path, bartoszek_model)
    a = read_colmap_scene(scene, _args())
    b = read_colmap_scene(shared_scene("colmap_bartoszek"), _args())
    assert [c.image_name for c in a.train_cameras] == [c.image_name for c in b.train_cameras]
    for ca, cb in zip(a.train_cameras, b.train_cameras):
        np.testing.assert_allclose(ca.world_to_cam, cb.world_to_cam, atol=1e-9)
        assert (ca.fx, ca.fy, ca.cx, ca.cy, ca.width, ca.height) == (cb.fx, cb.fy, cb.cx, cb.cy, cb.width, cb.height)
    assert a.extent == pytest.approx(b.extent)


def test_distorted_camera_model_is_refused(tmp_path, bartoszek_model):
    cam = next(iter(bartoszek_model.cameras.values()))
    bad = ColmapCamera(cam.id, "SIMPLE_RADIAL", cam.width, cam.height, np.array([cam.params[0], 500.0, 329.0, 0.01]))
    model = replace(bartoszek_model, cameras={**bartoszek_model.cameras, cam.id: bad})
    with pytest.raises(UserError, match="SIMPLE_RADIAL.*convert.py"):
        read_colmap_scene(_scene_with_model(tmp_path, model), _args())


def test_missing_image_is_named(tmp_path, bartoszek_model):
    scene = _scene_with_model(tmp_path, bartoszek_model, skip_images={"DSC_5290.jpg"})
    with pytest.raises(UserError, match="DSC_5290.jpg.*missing"):
        read_colmap_scene(scene, _args())


def test_empty_images_folder(tmp_path, bartoszek_model):
    scene = tmp_path / "scene"
    write_colmap_text(bartoszek_model, scene / "sparse" / "0")
    (scene / "images").mkdir()
    with pytest.raises(UserError, match="empty"):
        read_colmap_scene(scene, _args())
    with pytest.raises(UserError, match="not found"):
        read_colmap_scene(scene, _args(images="images_4"))


def test_unregistered_images_warn_once(tmp_path, bartoszek_model):
    scene = _scene_with_model(tmp_path, bartoszek_model)
    for name in ("extra_a.jpg", "extra_b.png"):
        (scene / "images" / name).write_bytes(b"not used")
    with pytest.warns(UserWarning, match="2 image.*not registered.*extra_a.jpg, extra_b.png") as rec:
        info = read_colmap_scene(scene, _args())
    assert len(rec) == 1
    assert len(info.train_cameras) == N_CAMERAS
    assert info.extras["unregistered_images"] == ["extra_a.jpg", "extra_b.png"]


def test_model_without_points(tmp_path, bartoszek_model):
    empty = replace(bartoszek_model.points, ids=np.zeros(0, np.int64), xyz=np.zeros((0, 3)),
                    rgb=np.zeros((0, 3), np.uint8), error=np.zeros(0))
    scene = _scene_with_model(tmp_path, replace(bartoszek_model, points=empty))
    with pytest.raises(UserError, match="no 3D points"):
        read_colmap_scene(scene, _args())


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_truncated_binary_is_named(tmp_path, name):
    src = shared_scene("colmap_bartoszek") / "sparse" / "0"
    for f in src.iterdir():
        data = f.read_bytes()
        (tmp_path / f.name).write_bytes(data[: len(data) - 7] if f.name == name else data)
    with pytest.raises(UserError, match=rf"{name}: truncated or corrupt"):
        read_colmap_model(tmp_path)


def test_malformed_text_line_is_named(tmp_path, bartoszek_model):
    write_colmap_text(bartoszek_model, tmp_path)
    (tmp_path / "cameras.txt").write_text("1 PINHOLE 100 100 50 50\n")  # 2 of 4 parameters
    with pytest.raises(UserError, match=r"cameras.txt:1: malformed"):
        read_colmap_model(tmp_path)


def test_missing_model_points_to_convert(tmp_path):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    with pytest.raises(UserError, match="convert.py"):
        read_colmap_scene(tmp_path, _args())
