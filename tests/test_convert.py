"""convert.py: photos -> undistorted COLMAP scene, checked against the synthetic scene's true cameras."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from arguments import ModelParams

import convert
from scene.colmap_loader import ColmapCamera, ColmapImage, ColmapModel, ColmapPoints, write_colmap_text
from scene.colmap_reader import read_colmap_scene
from scene.synthetic_blender import make_synthetic_blender, synthetic_views
from utils import colmap_utils
from utils.colmap_utils import largest_model, umeyama
from utils.errors import UserError, run_cli

pytest.importorskip("pycolmap")

N_VIEWS, SIZE, SEED = 16, 160, 0
MAX_CENTRE_ERROR = 0.02  # of the scene extent, after similarity alignment


def _photos(scene: Path) -> Path:
    """Render the synthetic scene and put its views in scene/input/ like user photos."""
    make_synthetic_blender(scene / "render", n_train=N_VIEWS, n_test=0, width=SIZE, height=SIZE, seed=SEED)
    shutil.move(str(scene / "render" / "images"), str(scene / "input"))
    shutil.rmtree(scene / "render")
    return scene


def _convert(scene: Path, *flags: str, backend: str = "pycolmap") -> None:
    with pytest.MonkeyPatch.context() as mp:
        if backend == "pycolmap":
            mp.setattr(colmap_utils.shutil, "which", lambda name: None)
        convert.main(["-s", str(scene), "--single_camera", *flags])


def centre_alignment_error(scene: Path) -> float:
    """Largest camera-centre error after a similarity alignment, as a fraction of the true extent."""
    info = read_colmap_scene(scene, ModelParams.defaults())
    truth = {v.name: v for v in synthetic_views(N_VIEWS, 0, SIZE, SIZE)}
    assert sorted(c.image_name for c in info.train_cameras) == sorted(truth)  # every image registered
    est = np.stack([c.center for c in info.train_cameras])
    ref = np.stack([truth[c.image_name].center for c in info.train_cameras])
    s, rot, t = umeyama(est, ref)
    err = np.linalg.norm(est @ (s * rot).T + t - ref, axis=1).max()
    return float(err / np.linalg.norm(ref - ref.mean(0), axis=1).max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    scene = _photos(tmp_path_factory.mktemp("convert") / "scene")
    _convert(scene, "--resize")
    return scene


def test_pycolmap_reconstruction_matches_truth(converted):
    err = centre_alignment_error(converted)
    print(f"camera-centre error after alignment: {err:.4%} of the extent")
    assert err < MAX_CENTRE_ERROR
    assert (converted / "distorted" / "database.db").is_file() and (converted / "distorted" / "convert.log").is_file()
    info = read_colmap_scene(converted, ModelParams.defaults().replace(eval=True))
    assert len(info.point_cloud.points) > 200 and info.test_cameras


def test_resize_pyramid(converted):
    names = sorted(p.name for p in (converted / "images").iterdir())
    for factor in convert.RESIZE_FACTORS:
        for name in names:
            full = cv2.imread(str(converted / "images" / name))
            small = cv2.imread(str(converted / f"images_{factor}" / name))
            assert small.shape[:2] == (round(full.shape[0] / factor), round(full.shape[1] / factor))


def test_skip_matching_reuses_the_model(converted):
    (converted / "images" / "r_000.png").unlink()
    _convert(converted, "--skip_matching")
    assert (converted / "images" / "r_000.png").is_file()
    assert centre_alignment_error(converted) < MAX_CENTRE_ERROR


@pytest.mark.slow  # COLMAP 3.8's CPU matcher takes 10-40 s here
@pytest.mark.skipif(shutil.which("colmap") is None, reason="the colmap program is not installed")
def test_colmap_binary_reconstruction(tmp_path):
    scene = _photos(tmp_path / "scene")
    _convert(scene, "--no_gpu", backend="colmap")
    err = centre_alignment_error(scene)
    print(f"colmap binary: camera-centre error after alignment: {err:.4%} of the extent")
    assert err < MAX_CENTRE_ERROR


def test_failing_step_is_named(tmp_path):
    """Unrelated images: extraction works, matching finds no pair, and the error says so."""
    rng = np.random.default_rng(0)
    (tmp_path / "input").mkdir()
    for i in range(2):
        noise = cv2.GaussianBlur(rng.integers(0, 256, (96, 96), dtype=np.uint8), (0, 0), 1.5)
        cv2.imwrite(str(tmp_path / "input" / f"n{i}.png"), cv2.normalize(noise, None, 0, 255, cv2.NORM_MINMAX))
    with pytest.raises(UserError, match=r"feature matching \(exhaustive\) failed: no image pair.*convert.log"):
        _convert(tmp_path)
    assert (tmp_path / "distorted" / "convert.log").stat().st_size > 0
    assert not (tmp_path / "images").exists()


def test_failing_mapping_is_explained(tmp_path):
    """Two copies of one view: plenty of matches, no parallax -> mapping finds no initial pair."""
    make_synthetic_blender(tmp_path / "render", n_train=1, n_test=0, width=SIZE, height=SIZE, seed=SEED)
    (tmp_path / "input").mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(tmp_path / "render" / "images" / "r_000.png", tmp_path / "input" / name)
    with pytest.raises(UserError, match=r"^mapping failed: no good initial image pair found \(1 verified pairs, best "
                                        r"\d+ inlier matches\); try .*more photos from more viewpoints .*if the "
                                        r"camera only rotated between shots, move it\), or installing colmap \(apt-get install colmap\) so that "
                                        r"convert.py tries it too; full log: .*convert.log$"):
        _convert(tmp_path)


@pytest.mark.parametrize("case, match", [
    ("empty", "found 0 image"),
    ("one", "found 1 image"),
    ("unreadable", "bad.jpg: unreadable image"),
    ("no_input", "input: folder not found"),
])
def test_bad_input(tmp_path, case, match):
    if case != "no_input":
        (tmp_path / "input").mkdir()
    good = np.full((32, 32, 3), 100, np.uint8)
    if case in ("one", "unreadable"):
        cv2.imwrite(str(tmp_path / "input" / "a.png"), good)
    if case == "unreadable":
        cv2.imwrite(str(tmp_path / "input" / "b.png"), good)
        (tmp_path / "input" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(UserError, match=match):
        _convert(tmp_path)
    assert not (tmp_path / "distorted").exists()  # nothing ran


def test_non_image_files_are_ignored_with_a_warning(tmp_path, capsys):
    (tmp_path / "input" / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.JPG"):
        cv2.imwrite(str(tmp_path / "input" / name), np.full((8, 8, 3), 50, np.uint8))
    (tmp_path / "input" / "notes.txt").write_text("hello")
    (tmp_path / "input" / ".DS_Store").write_bytes(b"\0")
    assert convert.check_input(convert.Layout(tmp_path)) == ["a.png", "sub/b.JPG"]
    assert "ignoring 1 non-image file(s)" in capsys.readouterr().out


def test_no_colmap_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(colmap_utils.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="--engine colmap: the colmap program is not on PATH"):
        colmap_utils.find_engines(first="colmap")
    assert [e.kind for e in colmap_utils.find_engines()] == ["pycolmap"]  # no fallback to announce
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # makes 'import pycolmap' fail
    with pytest.raises(UserError, match="neither the 'colmap' program.*nor the Python package pycolmap"):
        colmap_utils.find_engines()
    with pytest.raises(UserError, match="--colmap_executable /nope/colmap: not found"):
        colmap_utils.find_engines("/nope/colmap")
    with pytest.raises(UserError, match="--engine pycolmap: the Python package pycolmap is not installed"):
        colmap_utils.find_engines(first="pycolmap")


def test_skip_matching_without_model(tmp_path):
    with pytest.raises(UserError, match="no model from an earlier run"):
        _convert(tmp_path, "--skip_matching")


def test_cli_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: convert.main(["-s", str(tmp_path / "absent")]))
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and "scene folder not found" in err


def test_crashing_step_reports_its_last_error(tmp_path):
    script = ("import sys; print('I20260101 00:00:00 1 a.cc:1] fine'); "
              "print('F20260101 00:00:01 1 b.cc:2] Check failed: boom'); sys.exit(134)")
    with pytest.raises(UserError, match=r"^mapping failed: Check failed: boom; full log: .*convert.log$"):
        colmap_utils.run_logged([sys.executable, "-c", script], tmp_path / "convert.log", "mapping")
    assert "a.cc:1] fine" in (tmp_path / "convert.log").read_text()


def test_relative_scene_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel" / "input").mkdir(parents=True)
    with pytest.raises(UserError, match=f"{tmp_path}/rel/input: found 0 image"):
        _convert(Path("rel"))


def test_largest_model_is_chosen(tmp_path):
    def fake(n):
        cams = {1: ColmapCamera(1, "PINHOLE", 10, 10, np.array([5.0, 5.0, 5.0, 5.0]))}
        imgs = {i: ColmapImage(i, np.array([1.0, 0, 0, 0]), np.zeros(3), 1, f"im{i}.png") for i in range(1, n + 1)}
        pts = ColmapPoints(np.arange(2), np.zeros((2, 3)), np.zeros((2, 3), np.uint8), np.zeros(2))
        return ColmapModel(cams, imgs, pts)

    for sub, n in (("0", 3), ("1", 7), ("2", 5)):
        write_colmap_text(fake(n), tmp_path / sub)
    model_dir, names = largest_model(tmp_path)
    assert model_dir.name == "1" and len(names) == 7


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    s, r, t = umeyama(src, dst)
    assert s == pytest.approx(2.5) and np.allclose(r, rot) and np.allclose(t, [1.0, -2.0, 0.5])


def test_train_on_the_converted_scene(converted, tmp_path):
    """train.py runs on convert.py's output and improves on the initial point cloud."""
    import train

    m = train.main(["-s", str(converted), "-m", str(tmp_path / "m"), "--eval", "--iterations", "150",
                    "--test_iterations", "1", "150", "--save_iterations", "150", "--densify_from_iter", "50",
                    "--densification_interval", "50", "--quiet"])
    assert m["iteration"] == 150 and m["test"]["psnr"] > 12.0
