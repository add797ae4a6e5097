"""-d/--depths: monocular inverse-depth regularisation (graphdeco's), its maps, and what bad maps get.

The maps of the synthetic Blender scene are its exact inverse depth (scene.synthetic_blender,
depths=True); training with them must bring the trained model's depth closer to the true depth of
the test views than training without them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import render
import train
from arguments import ModelParams, PipelineParams
from gaussian_renderer import render as render_view
from scene import Scene, background_color
from scene.cameras import load_camera
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel
from scene.invdepth import BLENDER_DIVISOR, COLMAP_DIVISOR, PARAMS_FILE, InvDepthMap, load_invdepth
from scene.reader_utils import read_points_ply, write_points_ply
from scene.synthetic_blender import DEPTHS_DIR, invdepth_png, make_synthetic_blender, synthetic_views, view_invdepth
from tests.cli_helpers import assert_one_line_error, run_script
from tests.test_bad_scenes import SIZE as BAD_SIZE
from tests.test_bad_scenes import N_VIEWS, blender_master, colmap_master, endonerf_master, scenes  # noqa: F401 (fixtures)
from utils.errors import UserError
from utils.image_utils import read_image, write_stored_image

TRAIN, TEST, SIZE = 8, 4, 32  # the regularisation scene: views and pixels
ITS = 300
INIT_JITTER = 0.1  # std of the noise on the initial points (world units; cameras are 4 away), as an SfM cloud has
HALF_STEP = 0.5 / BLENDER_DIVISOR  # rounding of the 16-bit Blender encoding


@pytest.fixture(scope="module")
def depth_scene(tmp_path_factory) -> Path:
    """The synthetic Blender scene with its inverse-depth maps and jittered initial points."""
    scene = make_synthetic_blender(tmp_path_factory.mktemp("invdepth") / "scene", TRAIN, TEST, SIZE, SIZE, seed=0,
                                   depths=True)
    cloud = read_points_ply(scene / "points3d.ply")
    noise = np.random.default_rng(0).normal(0.0, INIT_JITTER, cloud.points.shape)
    write_points_ply(scene / "points3d.ply", cloud.points + noise, cloud.colors)
    return scene


def _params(scene: Path, **kw) -> ModelParams:
    return ModelParams.defaults().replace(source_path=str(scene), model_path=str(scene.parent / "m"), **kw)


# ----------------------------------------------------------------------------- rendering


BACKENDS = [("torch", "cpu"), ("cpu", "cpu"),
            pytest.param("gsplat", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("backend, device", BACKENDS)
def test_render_composites_inverse_depth_as_one_more_channel(depth_scene, backend, device):
    params = _params(depth_scene)
    info = read_scene(depth_scene, params)
    cam = load_camera(info.train_cameras[0], 1, background_color(False), device)
    g = GaussianModel(0, device=device)
    g.create_from_pcd(info.point_cloud.points, info.point_cloud.colors, info.extent)
    pipe = PipelineParams.defaults().replace(backend=backend)
    black = torch.zeros(3, device=device)
    with_inv = render_view(cam, g, pipe, black, invdepth=True)
    plain = render_view(cam, g, pipe, black)
    assert plain["invdepth"] is None
    for key in ("render", "depth", "alpha"):
        torch.testing.assert_close(with_inv[key], plain[key])
    # the same compositing of 1/z as a colour, on black: graphdeco's inverse depth (weights x 1/z, not normalised)
    z = g.get_xyz.detach() @ cam.viewmat[:3, :3].T[:, 2] + cam.viewmat[2, 3]
    as_colour = render_view(cam, g, pipe, black, override_color=(1.0 / z)[:, None].expand(-1, 3))["render"][:1]
    torch.testing.assert_close(with_inv["invdepth"], as_colour, rtol=1e-4, atol=1e-6)
    assert with_inv["invdepth"].max() > 0.2  # the objects are 2.7-5.8 units away


def test_inverse_depth_gradients_agree_between_backends(depth_scene):
    info = read_scene(depth_scene, _params(depth_scene))
    cam = load_camera(info.train_cameras[1], 1, background_color(False))
    grads = []
    for backend in ("torch", "cpu"):
        g = GaussianModel(0)
        g.create_from_pcd(info.point_cloud.points[:500], info.point_cloud.colors[:500], info.extent)
        pkg = render_view(cam, g, PipelineParams.defaults().replace(backend=backend), torch.zeros(3), invdepth=True)
        (pkg["invdepth"] * torch.linspace(0, 1, SIZE)).sum().backward()
        grads.append(torch.cat([g.params["xyz"].grad.flatten(), g.params["opacity"].grad.flatten()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)


# ----------------------------------------------------------------------------- maps


def test_synthetic_maps_hold_the_exact_inverse_depth(depth_scene):
    info = read_scene(depth_scene, _params(depth_scene, eval=True, depths=DEPTHS_DIR))
    views = synthetic_views(TRAIN, TEST, SIZE, SIZE)
    assert all(c.invdepth is not None for c in info.train_cameras)
    assert all(c.invdepth is None for c in info.test_cameras)  # never trained on: no map needed
    for cam_info, view in zip(info.train_cameras, views):
        cam = load_camera(cam_info, 1, background_color(False))
        exact = view_invdepth(view)
        np.testing.assert_allclose(cam.invdepth[0].numpy(), exact, atol=HALF_STEP + 1e-7)
        assert np.array_equal(cam.invdepth[0].numpy() > 0, exact > 0)  # 0 exactly on the background
        assert (exact[read_image(cam_info.image_path).max(axis=2) > 0] > 0).all()


def test_maps_load_as_graphdeco_reads_them(tmp_path):
    raw = (np.arange(8 * 12, dtype=np.uint16).reshape(8, 12) * 500).astype(np.uint16)
    write_stored_image(tmp_path / "m16.png", raw)
    m = InvDepthMap(str(tmp_path / "m16.png"), COLMAP_DIVISOR, scale=2.0, offset=0.1)
    full = load_invdepth(m, 12, 8)
    np.testing.assert_allclose(full, raw / COLMAP_DIVISOR * 2.0 + 0.1, rtol=1e-6)
    half = load_invdepth(m, 6, 4)  # resized first (area average when shrinking), then scale and offset
    np.testing.assert_allclose(half, raw.reshape(4, 2, 6, 2).mean(axis=(1, 3)) / COLMAP_DIVISOR * 2.0 + 0.1, rtol=1e-5)
    grey = np.repeat((raw // 256).astype(np.uint8)[..., None], 3, axis=2)  # Depth Anything's 8-bit --grayscale PNG
    write_stored_image(tmp_path / "m8.png", grey)
    np.testing.assert_allclose(load_invdepth(InvDepthMap(str(tmp_path / "m8.png"), BLENDER_DIVISOR), 12, 8),
                               grey[..., 0] / BLENDER_DIVISOR, rtol=1e-6)


def _write_maps(scene: Path, views) -> None:
    for v in views:
        write_stored_image(scene / DEPTHS_DIR / f"{v.name}.png", invdepth_png(view_invdepth(v)))


COLMAP_SCALE = COLMAP_DIVISOR / BLENDER_DIVISOR  # turns a Blender-encoded map into inverse depth under COLMAP's divisor


def _colmap_with_maps(scenes, params: dict | None = None) -> Path:
    """A copy of the bad-scene COLMAP scene (the synthetic views) with exact maps in depths/ and their
    depth_params.json (``params`` replaces the entries given)."""
    scene = scenes("colmap")
    _write_maps(scene, synthetic_views(N_VIEWS, 0, BAD_SIZE, BAD_SIZE))
    entries = {f"r_{i:03d}": {"scale": COLMAP_SCALE, "offset": 0.0} for i in range(N_VIEWS)}
    entries.update(params or {})
    (scene / "sparse" / "0" / PARAMS_FILE).write_text(json.dumps(entries))
    return scene


def test_colmap_maps_go_through_depth_params(scenes):
    scene = _colmap_with_maps(scenes, {"r_002": {"scale": COLMAP_SCALE * 10, "offset": 0.0}})  # 10x the median
    with pytest.warns(UserWarning, match=r"depth_params.json: 1 inverse-depth map\(s\) .* not used: r_002"):
        info = read_scene(scene, _params(scene, depths=DEPTHS_DIR))
    assert [c.invdepth is None for c in info.train_cameras] == [False, False, True, False]
    for cam_info, view in zip(info.train_cameras, synthetic_views(N_VIEWS, 0, BAD_SIZE, BAD_SIZE)):
        if cam_info.invdepth is not None:
            cam = load_camera(cam_info, 1, background_color(False))
            np.testing.assert_allclose(cam.invdepth[0].numpy(), view_invdepth(view), atol=HALF_STEP + 1e-6)


def test_a_map_of_another_size_is_resized(depth_scene, tmp_path):
    scene = Path(shutil.copytree(depth_scene, tmp_path / "scene"))
    big = cv2.resize(read_image(scene / DEPTHS_DIR / "r_000.png", unchanged=True), (2 * SIZE, 2 * SIZE),
                     interpolation=cv2.INTER_NEAREST)
    write_stored_image(scene / DEPTHS_DIR / "r_000.png", big)
    info = read_scene(scene, _params(scene, depths=DEPTHS_DIR))
    cam = load_camera(info.train_cameras[0], 1, background_color(False))
    assert cam.invdepth.shape == (1, SIZE, SIZE)
    np.testing.assert_allclose(cam.invdepth[0].numpy(), view_invdepth(synthetic_views(TRAIN, TEST, SIZE, SIZE)[0]),
                               atol=HALF_STEP + 1e-6)
    half = load_camera(info.train_cameras[0], 2, background_color(False))  # -r 2: the map follows the image
    assert half.invdepth.shape == (1, SIZE // 2, SIZE // 2)


# ----------------------------------------------------------------------------- training


def _depth_errors(scene: Path, model: Path) -> tuple[float, float]:
    """Mean |depth - true depth| on the test views' object pixels, and mean |inverse depth - true| on all pixels."""
    loaded = Scene(_params(scene, eval=True).replace(model_path=str(model)), GaussianModel(), load_iteration=ITS,
                   load_test_only=True, quiet=True)
    views = [v for v in synthetic_views(TRAIN, TEST, SIZE, SIZE) if v.is_test]
    z_err, inv_err = [], []
    for cam, view in zip(loaded.getTestCameras(), views):
        with torch.no_grad():
            pkg = render_view(cam, loaded.gaussians, PipelineParams.defaults(), torch.zeros(3), invdepth=True)
        centre = view_invdepth(view, ss=1)  # the true depth at the pixel centres
        hit = centre > 0
        z_err.append(np.abs(pkg["depth"][0].numpy()[hit] - 1.0 / centre[hit]).mean())
        inv_err.append(np.abs(pkg["invdepth"][0].numpy() - view_invdepth(view)).mean())
    return float(np.mean(z_err)), float(np.mean(inv_err))


def test_inverse_depth_regularisation_improves_the_depth(depth_scene, tmp_path, capsys):
    common = ["-s", str(depth_scene), "--eval", "--iterations", str(ITS), "--test_iterations", str(ITS),
              "--save_iterations", str(ITS), "--densify_from_iter", "100", "--densify_until_iter", "250",
              "--position_lr_max_steps", str(ITS), "--quiet"]  # graphdeco's depth weights: 1 -> 0.01
    runs = {}
    for name, extra in (("plain", []), ("depths", ["-d", DEPTHS_DIR])):
        psnr = train.main(common + ["-m", str(tmp_path / name), *extra])["test"]["psnr"]
        runs[name] = (psnr, *_depth_errors(depth_scene, tmp_path / name))
    with capsys.disabled():
        print("\n-d depths (test PSNR, depth error, inverse-depth error): " +
              ", ".join(f"{k} {p:.2f} dB {z:.4f} {i:.4f}" for k, (p, z, i) in runs.items()))
    (psnr0, z0, inv0), (psnr1, z1, inv1) = runs["plain"], runs["depths"]
    assert z1 < 0.95 * z0 and inv1 < 0.9 * inv0, runs
    assert psnr1 > psnr0 - 0.5, runs  # the colours do not pay for it
    # render.py accepts -d and ignores it (graphdeco's does): no map is read, even a missing folder
    render.main(["-m", str(tmp_path / "depths"), "-d", "no_such_folder", "--skip_train", "--quiet"])
    assert len(list((tmp_path / "depths" / "test" / f"ours_{ITS}" / "renders").glob("*.png"))) == TEST


# ----------------------------------------------------------------------------- bad input


def test_train_names_a_missing_map(depth_scene, tmp_path):
    scene = Path(shutil.copytree(depth_scene, tmp_path / "scene"))
    (scene / DEPTHS_DIR / "r_003.png").unlink()
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out", "-d", DEPTHS_DIR, "--quiet")
    assert_one_line_error(proc, "depths/r_003.png", "image r_003 not found", "-d/--depths depths", "drop -d")


def test_train_refuses_a_map_folder_outside_the_scene(depth_scene, tmp_path):
    outside = Path(shutil.copytree(depth_scene / DEPTHS_DIR, tmp_path / "elsewhere"))
    proc = run_script("train.py", "-s", depth_scene, "-m", tmp_path / "out", "-d", f"../../{outside.name}", "--quiet")
    assert_one_line_error(proc, "-d/--depths ../../elsewhere", "outside the scene folder", "-d depths")


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def _colour_map(path: Path) -> None:
    """What Depth Anything's run.py writes without --grayscale: a colour-mapped picture."""
    grey = read_image(path, unchanged=True).astype(np.float64)
    write_stored_image(path, cv2.applyColorMap(np.round(grey / grey.max() * 255).astype(np.uint8), cv2.COLORMAP_JET))


def _second_r_000(scene: Path) -> None:
    """Frame 1 shows images/sub/r_000.png: its map would be depths/r_000.png too (graphdeco names maps by stem)."""
    (scene / "images" / "sub").mkdir()
    shutil.copy(scene / "images" / "r_001.png", scene / "images" / "sub" / "r_000.png")
    doc = json.loads((scene / "transforms_train.json").read_text())
    doc["frames"][1]["file_path"] = "./images/sub/r_000"
    (scene / "transforms_train.json").write_text(json.dumps(doc))


def _edit_params(scene: Path, **entries) -> None:
    path = scene / "sparse" / "0" / PARAMS_FILE
    doc = json.loads(path.read_text())
    for k, v in entries.items():
        doc.pop(k) if v is None else doc.__setitem__(k, v)
    path.write_text(json.dumps(doc))


# (case, scene kind, edit(scene), -d value, needles of the error); checked through train.main (parse, read, load)
BAD = [
    ("no-folder", "blender", lambda s: None, "maps", ("-d/--depths maps", "not found", "one grey PNG per")),
    ("truncated", "blender", lambda s: _truncate(s / DEPTHS_DIR / "r_001.png"), DEPTHS_DIR,
     ("depths/r_001.png", "truncated PNG")),
    ("colour-mapped", "blender", lambda s: _colour_map(s / DEPTHS_DIR / "r_002.png"), DEPTHS_DIR,
     ("depths/r_002.png", "different R, G, B values")),
    ("aspect", "blender", lambda s: write_stored_image(s / DEPTHS_DIR / "r_000.png", np.ones((4, 8), np.uint16)),
     DEPTHS_DIR, ("depths/r_000.png", "8x4", "another aspect ratio", "r_000")),
    ("no-params", "colmap", lambda s: (s / "sparse" / "0" / PARAMS_FILE).unlink(), DEPTHS_DIR,
     ("depth_params.json", "not found", "make_depth_scale.py")),
    ("nan-scale", "colmap", lambda s: _edit_params(s, r_001={"scale": float("nan"), "offset": 0}), DEPTHS_DIR,
     ("depth_params.json: r_001", "'scale' must be a finite number")),
    ("no-entry", "colmap", lambda s: _edit_params(s, r_003=None), DEPTHS_DIR,
     ("depth_params.json", "no entry for image r_003")),
    ("no-positive-scale", "colmap", lambda s: _edit_params(s, **{f"r_{i:03d}": {"scale": 0, "offset": 0}
                                                               for i in range(N_VIEWS)}), DEPTHS_DIR,
     ("depth_params.json", "no image has a positive scale")),
    ("shared-map", "blender", _second_r_000, DEPTHS_DIR, ("depths/r_000.png", "inverse-depth map of two images")),
    ("endonerf", "endonerf", lambda s: (s / DEPTHS_DIR).mkdir(), DEPTHS_DIR, ("-d/--depths depths", "EndoNeRF", "--lambda_depth")),
]


@pytest.mark.parametrize("case, kind, edit, depths, needles", BAD, ids=[c[0] for c in BAD])
def test_bad_maps_are_one_line_errors(scenes, case, kind, edit, depths, needles, tmp_path):
    scene = _colmap_with_maps(scenes) if kind == "colmap" else scenes(kind)
    if kind == "blender":
        _write_maps(scene, synthetic_views(N_VIEWS, 1, BAD_SIZE, BAD_SIZE)[:N_VIEWS])
    edit(scene)
    with pytest.raises(UserError) as err:
        train.main(["-s", str(scene), "-m", str(tmp_path / "out"), "-d", depths, "--iterations", "1", "--quiet"])
    assert "\n" not in str(err.value)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_depth_weights_must_both_be_positive_or_both_zero(depth_scene, tmp_path):
    args = ["-s", str(depth_scene), "-m", str(tmp_path / "out"), "-d", DEPTHS_DIR, "--quiet"]
    with pytest.raises(UserError, match="--depth_l1_weight_init 0 --depth_l1_weight_final 0.01: .* both must be > 0"):
        train.parse_args(args + ["--depth_l1_weight_init", "0"])
    train.parse_args(args + ["--depth_l1_weight_init", "0", "--depth_l1_weight_final", "0"])  # the term off
    train.parse_args(["-s", str(depth_scene), "--depth_l1_weight_init", "0"])  # without -d the weights do not matter
