"""EndoNeRF reader: poses_bounds parsing, frame matching, protocol split, depth/mask conventions, point init."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from arguments import ModelParams
from scipy.stats import spearmanr

from scene.endonerf_reader import (
    drb_to_world_to_cam,
    frame_numbers,
    is_test_frame,
    load_endonerf_depth,
    load_mask,
    parse_poses_bounds,
    read_endonerf_scene,
)
from scene.endonerf_depth import resolve_depth_mode
from scene.synthetic_endonerf import DEPTH_UNITS_PER_MM, TOOL_DEPTH_MM, make_synthetic_endonerf, render_synthetic_frame
from tests.conftest import shared_scene
from utils.errors import UserError
from utils.io_utils import save_npy

N_SYN, W_SYN, H_SYN = 24, 80, 64
OFFICIAL_FOCAL = 569.4682


def _args(**kw) -> ModelParams:
    return ModelParams.defaults().replace(**kw)


def _all_cams(info):
    return sorted(info.train_cameras + info.test_cameras, key=lambda c: c.uid)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture(scope="module")
def synthetic_master(tmp_path_factory):
    return make_synthetic_endonerf(tmp_path_factory.mktemp("syn") / "scene", N_SYN, W_SYN, H_SYN, seed=0)


@pytest.fixture
def scene(synthetic_master, tmp_path):
    """A private copy of the synthetic scene that a test may edit."""
    return shutil.copytree(synthetic_master, tmp_path / "scene")


# ----------------------------------------------------------------------------- official poses


@pytest.mark.parametrize("name,frames", [("pulling_soft_tissues", 63), ("cutting_tissues_twice", 156)])
def test_official_poses_are_identity_640x512(name, frames):
    path = shared_scene("endonerf_official_poses") / f"{name}_poses_bounds.npy"
    pb = parse_poses_bounds(path)
    assert pb.world_to_cam.shape == (frames, 4, 4)
    assert np.array_equal(pb.world_to_cam, np.repeat(np.eye(4)[None], frames, axis=0))
    assert np.allclose(pb.hwf[:, 0], 512) and np.allclose(pb.hwf[:, 1], 640)
    assert np.allclose(pb.hwf[:, 2], OFFICIAL_FOCAL, atol=1e-4)
    assert pb.bounds.shape == (frames, 2) and (pb.bounds[:, 1] > pb.bounds[:, 0]).all()


def _write_placeholder_scene(root, n, width, height, name="{:06d}.png"):
    """Tiny official-like frames: random images, 8-bit plain depth 40..110, a tool block in the masks."""
    rng = np.random.default_rng(0)
    for sub in ("images", "depth", "masks", "gt_masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / name.format(i)), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "depth" / name.format(i)), rng.integers(40, 111, (height, width), dtype=np.uint8))
        mask = np.zeros((height, width), np.uint8)
        mask[: height // 4, (i % 4) * width // 4: (i % 4 + 1) * width // 4] = 255
        cv2.imwrite(str(root / "masks" / name.format(i)), mask)
        cv2.imwrite(str(root / "gt_masks" / name.format(i)), mask)


def test_official_poses_full_scene_with_small_images(tmp_path, capsys):
    src = shared_scene("endonerf_official_poses") / "pulling_soft_tissues_poses_bounds.npy"
    root = tmp_path / "pulling"
    _write_placeholder_scene(root, 63, 80, 64)
    shutil.copy(src, root / "poses_bounds.npy")
    info = read_endonerf_scene(root, _args(num_init_points=500))
    cams = _all_cams(info)
    assert info.kind == "endonerf" and len(cams) == 63
    assert [c.uid for c in info.test_cameras] == [1, 9, 17, 25, 33, 41, 49, 57]
    assert all(np.array_equal(c.world_to_cam, np.eye(4)) for c in cams)
    assert cams[0].fx == pytest.approx(OFFICIAL_FOCAL * 80 / 640, abs=1e-3)
    assert (cams[0].cx, cams[0].cy) == (40.0, 32.0)
    assert [c.time for c in cams[:3]] == [0.0, 1 / 63, 2 / 63]
    assert info.extras["depth_mode"] == "depth"  # 8-bit with raw far bounds (96..120): plain depth
    assert info.extras["gt_mask_paths"]["000005"].endswith("gt_masks/000005.png")
    assert cams[5].mask_path.endswith("masks/000005.png")
    assert capsys.readouterr().out.count("focal scaled") == 1
    assert len(info.point_cloud.points) == 500 and np.isfinite(info.extent) and info.extent > 0


# ----------------------------------------------------------------------------- poses validation


def test_c3vd_non_rotation_is_a_clear_error():
    root = shared_scene("endonerf_c3vd_first20")
    with pytest.raises(UserError) as exc:
        read_endonerf_scene(root, _args())
    msg = _one_line(exc)
    assert "poses_bounds.npy" in msg and "row 0" in msg and "det -26.88" in msg
    assert "pass --identity_poses to treat every pose as the identity" in msg


def test_non_rotation_error_without_shared_data(scene):
    pb = np.load(scene / "poses_bounds.npy")
    pb[3, :15] = (pb[3, :15].reshape(3, 5) * np.array([2.0, 2.0, 2.0, 1.0, 1.0])).reshape(-1)
    save_npy(scene / "poses_bounds.npy", pb)
    with pytest.raises(UserError, match=r"poses_bounds\.npy: .*row 3 .*det 8"):
        read_endonerf_scene(scene, _args())
    info = read_endonerf_scene(scene, _args(identity_poses=True, num_init_points=100))
    assert all(np.array_equal(c.world_to_cam, np.eye(4)) for c in _all_cams(info))


def test_drb_conversion_is_a_proper_world_relabelling():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    c2w = np.concatenate([q, rng.normal(size=(3, 1))], axis=1)
    w2c = drb_to_world_to_cam(c2w)
    R = w2c[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0)
    # an LLFF camera moved along world x (its "down" at the identity) moves down in OpenCV terms
    moved = drb_to_world_to_cam(np.concatenate([np.eye(3), [[1.0], [0.0], [0.0]]], axis=1))
    assert np.allclose(-moved[:3, :3].T @ moved[:3, 3], [0.0, 1.0, 0.0])


def test_bad_poses_shape_is_a_one_line_error(scene):
    save_npy(scene / "poses_bounds.npy", np.zeros((N_SYN, 15)))
    with pytest.raises(UserError) as exc:
        read_endonerf_scene(scene, _args())
    msg = _one_line(exc)
    assert "poses_bounds.npy" in msg and f"({N_SYN}, 15)" in msg


# ----------------------------------------------------------------------------- the C3VD sample


def test_c3vd_loads_with_identity_poses_in_numeric_order():
    root = shared_scene("endonerf_c3vd_first20")
    info = read_endonerf_scene(root, _args(identity_poses=True, num_init_points=2000))
    cams = _all_cams(info)
    assert [c.image_name for c in cams] == [f"{i}_color" for i in range(20)]
    assert [c.uid for c in info.test_cameras] == [1, 9, 17]
    assert cams[0].width == 1350 and cams[0].height == 1080 and cams[0].fx == pytest.approx(767.446, abs=1e-3)
    assert info.extras["depth_mode"] == "inverse"
    cam = cams[0]
    valid = load_mask(cam.mask_path, cam.width, cam.height)
    assert not valid[0, 0] and not valid[-1, -1] and valid[cam.height // 2, cam.width // 2]  # outside the FOV excluded
    depth = load_endonerf_depth(cam.depth_path, cam.depth_mode, cam.depth_scale, valid)
    assert depth.dtype == np.float32 and depth.shape == (1080, 1350)
    assert (depth[~valid] == 0).all() and (depth[valid] > 0).mean() > 0.95
    raw = cv2.imread(cam.depth_path, cv2.IMREAD_UNCHANGED)[..., 0].astype(float)
    both = depth > 0
    assert spearmanr(raw[both], depth[both]).statistic < -0.99  # bright = near (monotone decreasing)
    assert depth[both].min() >= 1.0  # the brightest possible value is depth 1
    pts = info.point_cloud.points
    assert pts.shape == (2000, 3) and np.isfinite(pts).all() and (pts[:, 2] > 0).all()


# ----------------------------------------------------------------------------- frame names


def test_frame_numbers_sort_numerically_and_refuse_ambiguity():
    assert frame_numbers(["10_color.png", "2_color.png", "1_color.png"], "d") == [10, 2, 1]
    assert frame_numbers(["frame-000012.color.png", "frame-000003.color.png"], "d") == [12, 3]
    assert frame_numbers(["cam2_000004.png", "cam2_000011.png"], "d") == [4, 11]
    assert frame_numbers(["000007.png"], "d") == [7]
    with pytest.raises(UserError, match="different patterns"):
        frame_numbers(["1_color.png", "notes.png"], "d")
    with pytest.raises(UserError, match="no frame number"):
        frame_numbers(["color.png"], "d")


def _rename_all(scene, image_fmt, depth_fmt, mask_fmt):
    for sub, fmt in (("images", image_fmt), ("depth", depth_fmt), ("masks", mask_fmt)):
        for p in sorted((scene / sub).iterdir()):
            num = int(p.name.split(".")[0].split("-")[1])
            p.rename(p.with_name(fmt.format(num)))


@pytest.mark.parametrize("fmts", [
    ("{}_color.png", "{}_color_depth.png", "{}_color.png"),
    ("{:06d}.png", "{:06d}.png", "{:06d}.png"),
])
def test_name_variants_match_by_frame_number(scene, fmts):
    _rename_all(scene, *fmts)
    info = read_endonerf_scene(scene, _args(num_init_points=100))
    cams = _all_cams(info)
    assert [c.image_name for c in cams] == [fmts[0].format(i)[:-4] for i in range(N_SYN)]
    gt = render_synthetic_frame(10, N_SYN, W_SYN, H_SYN)
    img = cv2.cvtColor(cv2.imread(cams[10].image_path), cv2.COLOR_BGR2RGB)
    assert np.abs(img / 255.0 - gt.image).max() < 0.01
    assert cams[10].depth_path.endswith(fmts[1].format(10)) and cams[10].mask_path.endswith(fmts[2].format(10))


def test_duplicate_frame_numbers_are_refused(scene):
    shutil.copy(scene / "images" / "frame-000003.color.png", scene / "images" / "frame-03.color.png")
    with pytest.raises(UserError, match="frame number 3|different patterns"):
        read_endonerf_scene(scene, _args())


# ----------------------------------------------------------------------------- count / missing files


def test_image_count_must_match_pose_rows(scene):
    (scene / "images" / "frame-000023.color.png").unlink()
    with pytest.raises(UserError) as exc:
        read_endonerf_scene(scene, _args())
    msg = _one_line(exc)
    assert f"{N_SYN - 1} images" in msg and f"{N_SYN} pose rows" in msg


@pytest.mark.parametrize("sub,name,what", [("depth", "frame-000005.depth.png", "depth map"),
                                           ("masks", "frame-000005.mask.png", "mask")])
def test_missing_depth_or_mask_names_the_frame(scene, sub, name, what):
    (scene / sub / name).unlink()
    with pytest.raises(UserError) as exc:
        read_endonerf_scene(scene, _args())
    msg = _one_line(exc)
    assert f"no {what} for frame 5" in msg and "frame-000005.color.png" in msg


def test_scene_without_masks_counts_every_pixel(scene, capsys):
    shutil.rmtree(scene / "masks")
    info = read_endonerf_scene(scene, _args(num_init_points=0))
    assert all(c.mask_path is None for c in _all_cams(info))
    assert "every pixel counts as tissue" in capsys.readouterr().out
    assert len(info.point_cloud.points) == W_SYN * H_SYN  # frame 0 alone, tool pixels included


# ----------------------------------------------------------------------------- protocol


def test_endonerf_split_and_time_ignore_eval(scene):
    assert [i for i in range(20) if is_test_frame(i)] == [1, 9, 17]
    for eval_flag in (False, True):
        info = read_endonerf_scene(scene, _args(eval=eval_flag, num_init_points=100))
        assert [c.uid for c in info.test_cameras] == [1, 9, 17]
        assert [c.time for c in _all_cams(info)] == [i / N_SYN for i in range(N_SYN)]
    info = read_endonerf_scene(scene, _args(max_frames=10, num_init_points=100))
    cams = _all_cams(info)
    assert len(cams) == 10 and [c.uid for c in info.test_cameras] == [1, 9]
    assert [c.time for c in cams] == [i / 10 for i in range(10)]


# ----------------------------------------------------------------------------- depth / mask loading


def test_depth_modes_clip_and_scale(tmp_path):
    raw = np.tile(np.arange(1, 201, dtype=np.uint16)[None], (5, 1))  # 5 x 200, values 1..200
    raw[0, 0] = 0
    cv2.imwrite(str(tmp_path / "d16.png"), raw)
    d = load_endonerf_depth(tmp_path / "d16.png", "depth", 2.0)
    lo, hi = np.percentile(raw[raw > 0].astype(float), [3.0, 99.8])
    assert d[0, 0] == 0 and d.dtype == np.float32
    assert d[1].min() == pytest.approx(2 * lo) and d[1].max() == pytest.approx(2 * hi)
    assert d[2, 100] == pytest.approx(2 * 101)
    keep = np.ones(raw.shape, bool)
    keep[:, :50] = False
    assert (load_endonerf_depth(tmp_path / "d16.png", "depth", 1.0, keep)[:, :50] == 0).all()
    grey8 = np.full((4, 4), 51, np.uint8)
    cv2.imwrite(str(tmp_path / "d8.png"), np.stack([grey8] * 3, -1))
    assert np.allclose(load_endonerf_depth(tmp_path / "d8.png", "inverse", 1.0), 5.0)  # 255 / 51
    assert resolve_depth_mode("auto", tmp_path / "d8.png") == "inverse"  # 8-bit, no poses_bounds
    assert resolve_depth_mode("auto", tmp_path / "d16.png") == "depth"
    colour = np.stack([grey8, grey8 + 1, grey8], -1)
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    with pytest.raises(UserError, match="colour-mapped"):
        load_endonerf_depth(tmp_path / "c.png", "depth", 1.0)
    with pytest.raises(UserError, match="depth_mode"):
        load_endonerf_depth(tmp_path / "d8.png", "disparity", 1.0)
    with pytest.raises(ValueError, match="resolved once"):  # 'auto' is the reader's job, never the loader's
        load_endonerf_depth(tmp_path / "d8.png", "auto", 1.0)


def test_load_mask_convention_and_resize(tmp_path):
    m = np.zeros((4, 6, 3), np.uint8)
    m[0, 0, 2] = 255  # any non-zero channel = excluded
    m[3, 5] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    valid = load_mask(tmp_path / "m.png", 6, 4)
    assert valid.dtype == bool and not valid[0, 0] and not valid[3, 5] and valid.sum() == 22
    big = load_mask(tmp_path / "m.png", 12, 8)
    assert big.shape == (8, 12) and not big[:2, :2].any() and big.sum() == 88


# ----------------------------------------------------------------------------- point initialisation


def test_point_init_fills_tool_regions_from_later_frames(synthetic_master):
    info = read_endonerf_scene(synthetic_master, _args(num_init_points=0))
    cam0 = info.train_cameras[0]
    gt0 = render_synthetic_frame(0, N_SYN, W_SYN, H_SYN)
    pts = info.point_cloud.points.astype(np.float64)
    assert gt0.tool_mask.sum() > 200
    # every pixel contributes exactly once: frame 0's tissue, then later frames fill its tool pixels
    assert len(pts) == W_SYN * H_SYN
    u = np.floor(pts[:, 0] / pts[:, 2] * cam0.fx + cam0.cx).astype(int)
    v = np.floor(pts[:, 1] / pts[:, 2] * cam0.fy + cam0.cy).astype(int)
    hit = np.zeros((H_SYN, W_SYN), bool)
    hit[v.clip(0, H_SYN - 1), u.clip(0, W_SYN - 1)] = True
    assert hit[gt0.tool_mask].all()
    # the tool's own depth (in the depth PNGs) never becomes a point: masks are respected
    assert pts[:, 2].min() > 1.2 * TOOL_DEPTH_MM * DEPTH_UNITS_PER_MM
    # frame-0 tissue points sit at the true depth (up to the percentile clipping)
    z0 = np.zeros((H_SYN, W_SYN))
    z0[v.clip(0, H_SYN - 1), u.clip(0, W_SYN - 1)] = pts[:, 2] / DEPTH_UNITS_PER_MM
    tissue = ~gt0.tool_mask
    assert np.median(np.abs(z0[tissue] - gt0.tissue_depth[tissue])) < 0.06
    assert np.isclose(info.extent, 1.1 * np.linalg.norm(pts - pts.mean(0), axis=1).max(), rtol=1e-4)


def test_point_init_subsampling_is_seeded(synthetic_master):
    a = read_endonerf_scene(synthetic_master, _args(num_init_points=700, seed=3)).point_cloud
    b = read_endonerf_scene(synthetic_master, _args(num_init_points=700, seed=3)).point_cloud
    c = read_endonerf_scene(synthetic_master, _args(num_init_points=700, seed=4)).point_cloud
    assert a.points.shape == (700, 3) and a.colors.shape == (700, 3)
    assert np.array_equal(a.points, b.points) and not np.array_equal(a.points, c.points)
    assert 0.0 <= a.colors.min() and a.colors.max() <= 1.0
