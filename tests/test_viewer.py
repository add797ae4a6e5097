"""Web viewer without a browser: camera conversions, render modes, bad input, the training hooks."""
from __future__ import annotations

import math
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from tests.cli_helpers import assert_one_line_error, run_script
from utils.errors import UserError
from viewer.camera import camera_pose, fitted_K, pose_viewmat, render_size, same_pose, view_camera
from viewer.modes import CLUSTERS, DEPTH, PCA, RGB, ClusterColours, DisplayModel, load_cluster_labels, render_mode
from viewer.params import ServeParams
from viewer.server import check_port_free
from viewer.training import TrainingViewer, snapshot, stats_text

PIPE = SimpleNamespace(backend="cpu", debug=False, antialiasing=False)


def random_camera(seed: int, w: int = 40, h: int = 30) -> Camera:
    """A camera at a random pose looking at the origin, with an off-centre principal point."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=3)
    centre = 3.0 * centre / np.linalg.norm(centre)
    z = -centre / np.linalg.norm(centre)
    x = np.cross(z, rng.normal(size=3))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], 1)  # camera-to-world
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R.T, -R.T @ centre
    K = torch.tensor([[35.0, 0, 21.5], [0, 35.0, 14.0], [0, 0, 1]])
    return Camera(0, "cam", w, h, K, torch.tensor(w2c, dtype=torch.float32), torch.zeros(3, h, w), time=0.25)


def tiny_model(n: int = 300, feature_dim: int = 4, deform: int = 0, seed: int = 0) -> GaussianModel:
    rng = np.random.default_rng(seed)
    g = GaussianModel(sh_degree=1, feature_dim=feature_dim, deform_basis=deform)
    g.create_from_pcd(rng.uniform(-1, 1, (n, 3)), rng.uniform(0, 1, (n, 3)), 1.0)
    with torch.no_grad():
        if feature_dim:
            g.params["semantic"].copy_(torch.from_numpy(rng.normal(size=(n, feature_dim)).astype(np.float32)))
        if deform:
            g.params["deform"].copy_(torch.from_numpy(rng.normal(0, 0.3, g.params["deform"].shape).astype(np.float32)))
        g.params["opacity"].fill_(2.0)
    return g


def test_snapped_pose_round_trip():
    """The browser pose of a camera converts back to the same world-to-camera matrix and intrinsics."""
    for seed in range(5):
        cam = random_camera(seed)
        pose = camera_pose(cam)
        assert torch.allclose(pose_viewmat(pose), cam.viewmat, atol=1e-5)
        assert math.isclose(pose.fov, 2 * math.atan(15.0 / 35.0), rel_tol=1e-6)
        assert torch.allclose(fitted_K(cam, 40, 30), cam.K)
        free = view_camera(pose, 40, 30, 0.5)
        assert torch.allclose(free.viewmat, cam.viewmat, atol=1e-5) and free.K[1, 1] == pytest.approx(35.0)
        assert free.time == 0.5


def test_fitted_K_keeps_vertical_fov_and_centres_the_camera():
    cam = random_camera(0)  # 40x30, cx 21.5
    K = fitted_K(cam, 80, 30)  # wider canvas, same height
    assert K[1, 1] == pytest.approx(35.0) and K[0, 2] == pytest.approx(41.5) and K[1, 2] == pytest.approx(14.0)
    K2 = fitted_K(cam, 80, 60)
    assert K2[0, 0] == pytest.approx(70.0) and K2[0, 2] == pytest.approx(43.0)


def test_same_pose_tolerances():
    a = camera_pose(random_camera(1))
    moved = a.__class__(a.wxyz, tuple(np.add(a.position, [0.01, 0, 0])), a.fov)
    assert same_pose(a, a, 1e-3) and not same_pose(a, moved, 1e-3) and same_pose(a, moved, 0.02)
    turned = a.__class__(tuple(np.add(a.wxyz, [0, 0.01, 0, 0])), a.position, a.fov)
    assert not same_pose(a, turned, 1e-3)


@pytest.mark.parametrize("canvas,max_side,scale,expected", [
    ((800, 600), 400, 1.0, (400, 300)), ((800, 600), 2048, 1.0, (800, 600)), ((800, 600), 400, 0.5, (200, 150)),
    ((600, 800), 400, 1.0, (300, 400)), ((1000, 10), 1000, 0.1, (1600, 16)),
])
def test_render_size(canvas, max_side, scale, expected):
    assert render_size(*canvas, max_side, scale) == expected


def test_render_modes_differ_and_match_render():
    """RGB equals render() quantised; depth, PCA and cluster colours give other images; hiding a cluster changes it."""
    from gaussian_renderer import render
    from utils.feature_pca import feature_colorizer
    from utils.image_utils import to_uint8

    g = tiny_model()
    cam = random_camera(2, 48, 36)
    bg = torch.zeros(3)
    rgb = render_mode(RGB, cam, g, PIPE, bg, 0.0)
    assert np.array_equal(rgb, to_uint8(render(cam, g, PIPE, bg)["render"]))
    labels = (np.arange(g.num_points) % 3).astype(np.int64)
    labels[:10] = -1
    clusters = ClusterColours(labels)
    images = {RGB: rgb, DEPTH: render_mode(DEPTH, cam, g, PIPE, bg, 0.0),
              PCA: render_mode(PCA, cam, g, PIPE, bg, 0.0, feature_colorizer(g.get_semantic)),
              CLUSTERS: render_mode(CLUSTERS, cam, g, PIPE, bg, 0.0, clusters=clusters)}
    for mode, img in images.items():
        assert img.shape == (36, 48, 3) and img.dtype == np.uint8
        if mode != RGB:
            assert np.abs(img.astype(int) - rgb).mean() > 5, mode
    clusters.visible[1] = False
    hidden = render_mode(CLUSTERS, cam, g, PIPE, bg, 0.0, clusters=clusters)
    assert np.abs(hidden.astype(int) - images[CLUSTERS]).mean() > 1
    with pytest.raises(ValueError, match="no per-Gaussian features"):
        render_mode(PCA, cam, tiny_model(feature_dim=0), PIPE, bg, 0.0, None)


def test_display_model_renders_like_the_model_and_sets_sh_degree():
    g = tiny_model()
    with torch.no_grad():
        g.params["f_rest"].normal_(0, 0.5)
    g.active_sh_degree = 1
    cam = random_camera(3)
    full = render_mode(RGB, cam, g, PIPE, torch.zeros(3), 0.0)
    shown = DisplayModel(g)
    dc = render_mode(RGB, cam, shown.with_sh_degree(0), PIPE, torch.zeros(3), 0.0)
    assert g.active_sh_degree == 1 and np.abs(full.astype(int) - dc).mean() > 1
    assert np.array_equal(render_mode(RGB, cam, shown, PIPE, torch.zeros(3), 0.0), full)


def test_time_changes_deformable_render():
    g = tiny_model(deform=3)
    cam = random_camera(4)
    a, b = (render_mode(RGB, cam, g, PIPE, torch.zeros(3), t) for t in (0.1, 0.9))
    assert np.abs(a.astype(int) - b).mean() > 1
    assert np.array_equal(render_mode(RGB, cam, DisplayModel(g), PIPE, torch.zeros(3), 0.9), b)


def test_cluster_labels_checked(tmp_path):
    assert load_cluster_labels(tmp_path, 5)[0] is None
    (tmp_path / "clusters").mkdir()
    np.save(tmp_path / "clusters" / "labels.npy", np.zeros(4, np.int64))
    labels, why = load_cluster_labels(tmp_path, 5)
    assert labels is None and "labels.npy" in why and "rerun cluster.py" in why
    np.save(tmp_path / "clusters" / "labels.npy", np.array([0, 1, -1, 1, 0]))
    labels, _ = load_cluster_labels(tmp_path, 5)
    keep, colours = ClusterColours(labels).per_gaussian()
    assert keep.all() and np.allclose(colours[2], 0.5) and np.allclose(colours[0], colours[4])


def busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


def test_port_in_use_is_a_user_error():
    s, port = busy_port()
    with s, pytest.raises(UserError, match=f"--port {port}.*in use"):
        check_port_free("127.0.0.1", port)


def test_view_without_model_is_one_line(tmp_path):
    assert_one_line_error(run_script("view.py", "-m", tmp_path / "missing"), "missing", "-m")


def test_training_viewer_disabled_and_idle_cost_nothing():
    """A disabled viewer and one with no browser connected neither copy the Gaussians nor block."""
    g = tiny_model()
    off = TrainingViewer()
    off.update(g, 1, {"loss": 0.5})
    off.wait_while_paused()
    off.close()
    viewer = start_training_viewer(g)
    try:
        content = viewer.server.content
        for it in range(1, 50):
            with torch.no_grad():
                g.params["xyz"] += 0.01
            viewer.update(g, it, {"loss": 1.0 / it, "psnr": 20.0})
            viewer.wait_while_paused()
        assert content.version == 0 and viewer.iteration == 49
        assert not torch.equal(content.gaussians.get_xyz, g.get_xyz)  # the shown copy is not the live tensor
    finally:
        viewer.close()


def start_training_viewer(g: GaussianModel) -> TrainingViewer:
    s, port = busy_port()
    s.close()
    return TrainingViewer.start(g, PIPE, torch.zeros(3), [random_camera(0)], [], 1.0, ServeParams.defaults().replace(port=port))


def test_training_viewer_pause_blocks_until_resumed():
    viewer = start_training_viewer(tiny_model())
    viewer.set_paused(True)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (viewer.wait_while_paused(poll_s=0.01), done.set()))
    worker.start()
    time.sleep(0.1)
    assert not done.is_set()
    viewer.set_paused(False)
    worker.join(timeout=5)
    assert done.is_set()
    viewer.close()


def test_snapshot_is_detached_copy_and_stats_text():
    g = tiny_model()
    g.active_sh_degree = 1
    copy = snapshot(g)
    assert copy.active_sh_degree == 1 and torch.equal(copy.get_xyz, g.get_xyz)
    with torch.no_grad():
        g.params["xyz"] += 1.0
    assert not torch.equal(copy.get_xyz, g.get_xyz)
    text = stats_text(120, {"loss": 0.01234, "psnr": 25.5}, 12345, paused=True)
    assert "iteration 120" in text and "0.0123" in text and "25.50 dB" in text and "12,345" in text and "paused" in text


def test_moving_budgeteeps_the_most_visible_gaussians():
    g = tiny_model(n=200)
    with torch.no_grad():
        g.params["opacity"].copy_(torch.linspace(-3, 3, 200)[:, None])
        g.params["scaling"].fill_(-3.0)
    shown = DisplayModel(g)
    part = shown.most_visible(50)
    assert part.num_points == 50 and shown.most_visible(0) is shown and shown.most_visible(500) is shown
    assert torch.equal(part.get_xyz, g.get_xyz[150:])  # highest opacity, equal sizes


def test_training_viewer_flags():
    from viewer.training import TrainingViewerParams

    assert not TrainingViewerParams.defaults().enabled
    assert TrainingViewerParams.defaults().replace(viewer=True).enabled
    assert not TrainingViewerParams.defaults().replace(viewer=True, disable_viewer=True).enabled
    off = TrainingViewer.for_training(TrainingViewerParams.defaults(), tiny_model(), PIPE, torch.zeros(3), None)
    assert off.server is None
