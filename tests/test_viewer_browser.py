"""The web viewer in a real browser (headless Chromium via playwright) on a tiny trained deformable model.

Checks that (1) snapped to a test camera the frame shown in the page matches render.py's
render of that camera, (2) depth, feature PCA and cluster modes change the image, (3) the
time slider changes it. Screenshots go to ``<tmp>/viewer_screenshots/``. Skipped, with the
reason, when Chromium or playwright is missing (``make test`` installs both).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from viewer.headless import (CHROMIUM, browser_page, canvas_size, choose, frame_number, open_viewer, screenshot, serve, slider_thumb,
                             wait_frame)

SCENE_W, SCENE_H = 160, 120  # trained at this size (cheap) ...
W, H = 400, 300  # ... viewed and rendered by render.py at this one (-r 400): the canvas must be this size, and the
# browser puts its control panel beside (not over) the canvas only in windows wider than about 700 px
ITERATIONS = 20
BIG_VIEWPORT = {"width": 1000, "height": 700}
GIZMO_PX = 80  # the browser draws its orientation gizmo into the canvas' bottom-left corner: not compared
MIN_PSNR_DB = 30.0
MOTION_MM = 6.0  # sideways motion given to the model over the time range (tissue is ~60 mm away)
CHANGED_LEVELS = 8  # a pixel "changed" when a channel moved by more than this (frames are PNG: identical renders match exactly)
MIN_CHANGED_FRACTION = 0.02

pytestmark = pytest.mark.slow  # about a minute: trains a model, starts view.py and Chromium

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test installs it)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; make test does this where apt-get exists)",
                allow_module_level=True)


def exaggerate_motion(ply: Path, shift_mm: float = MOTION_MM) -> None:
    """Make the saved model's Gaussians slide sideways over time (20 iterations learn almost no motion)."""
    import torch

    from scene.gaussian_model import GaussianModel

    g = GaussianModel()
    g.load_ply(ply)
    with torch.no_grad():
        ramp = torch.linspace(0.0, shift_mm, g.deform_basis)
        g.params["deform"][:, :, 0] = ramp
    g.save_ply(ply)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 20-iteration deformable EndoNeRF model with 8-d features, k-means clusters and render.py's test renders."""
    import cluster
    import extract_dino_features
    import render
    import train
    from scene.synthetic_endonerf import make_synthetic_endonerf

    root = tmp_path_factory.mktemp("viewer")
    scene = make_synthetic_endonerf(root / "scene", n_frames=8, width=SCENE_W, height=SCENE_H)
    extract_dino_features.main(["--image_dir", str(scene / "images"), "--output_dir", str(root / "dino"), "--model",
                                "dino_vits16", "--resolution", "64", "--random_init", "--pca_dim", "8"])
    out = root / "model"
    train.main(["-s", str(scene), "-m", str(out), "--eval", "--iterations", str(ITERATIONS), "--test_iterations",
                str(ITERATIONS), "--save_iterations", str(ITERATIONS), "--num_init_points", "3000", "--densify_from_iter",
                "1000", "--dino_feature_dir", str(root / "dino"), "--dino_random_init", "--feature_dim", "8",
                "--lambda_feature", "1", "--quiet"])
    exaggerate_motion(next(out.glob("point_cloud/iteration_*/point_cloud.ply")))
    cluster.main(["-m", str(out), "--k", "3", "--no_render", "--quiet"])
    render.main(["-m", str(out), "--skip_train", "-r", str(W), "--quiet"])
    train.main(["-s", str(scene), "-m", str(root / "plain"), "--iterations", "2", "--save_iterations", "2",
                "--test_iterations", "2", "--num_init_points", "500", "--quiet"])
    return out


@pytest.fixture(scope="module")
def page(model, tmp_path_factory):
    log = tmp_path_factory.mktemp("view_log") / "view.log"
    with serve(model, log, "-r", str(W), "--image_format", "png", "--quiet") as url, \
            browser_page(url, tmp_path_factory.mktemp("chromium_profile"), BIG_VIEWPORT) as pg:
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viewer_screenshots")
    print(f"viewer screenshots: {out}")
    return out


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b) ** 2)[mask].mean()
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_snapped_frame_matches_render_py(page, model, shots):
    """Snapped to test camera 0 with the canvas at the camera's size, the page shows render.py's image."""
    choose(page, "Snap to camera", "test 0")
    info = wait_frame(page, r"full · RGB .*test 0")
    sidebar = BIG_VIEWPORT["width"] - canvas_size(page)[0]
    page.set_viewport_size({"width": W + sidebar, "height": H})
    info = wait_frame(page, rf"{W}x{H} · full · RGB .*test 0", frame_number(info))
    assert canvas_size(page) == (W, H)
    shown = screenshot(page, shots / "snapped_test0.png", W, H)
    expected = cv2.cvtColor(cv2.imread(str(next(model.glob("test/ours_*/renders/00000.png")))), cv2.COLOR_BGR2RGB)
    mask = np.ones((H, W), bool)
    mask[H - GIZMO_PX:, :GIZMO_PX] = False
    value = psnr(shown, expected, mask)
    page.set_viewport_size(BIG_VIEWPORT)
    print(f"viewer vs render.py, test camera 0 at {W}x{H}: {value:.2f} dB")
    assert value >= MIN_PSNR_DB, f"viewer vs render.py: {value:.2f} dB (screenshot {shots / 'snapped_test0.png'})"


def test_modes_change_the_image(page, shots):
    choose(page, "Snap to camera", "train 2")
    info = wait_frame(page, r"full · RGB .*train 2")
    w, h = canvas_size(page)
    images = {"RGB": screenshot(page, shots / "mode_rgb.png", w, h)}
    for mode in ("Depth", "Feature PCA", "Clusters"):
        choose(page, "Render mode", mode)
        info = wait_frame(page, rf"full · {mode} ", frame_number(info))
        images[mode] = screenshot(page, shots / f"mode_{mode.lower().replace(' ', '_')}.png", w, h)
    choose(page, "Render mode", "RGB")
    wait_frame(page, r"full · RGB ", frame_number(info))
    for mode, img in images.items():
        if mode != "RGB":
            diff = np.abs(img.astype(int) - images["RGB"]).mean()
            assert diff > 5.0, f"{mode} looks like RGB (mean difference {diff:.2f}); see {shots}"


def test_time_slider_changes_the_image(page, shots):
    choose(page, "Snap to camera", "test 0")
    info = wait_frame(page, r"full · RGB · t=0\.\d+ .*test 0")
    w, h = canvas_size(page)
    before = screenshot(page, shots / "time_before.png", w, h)
    time_thumb = slider_thumb(page, "Time")
    time_thumb.focus()
    time_thumb.press("End")
    info = wait_frame(page, r"full · RGB · t=1\.000", frame_number(info))
    after = screenshot(page, shots / "time_after.png", w, h)
    changed = (np.abs(after.astype(int) - before).max(axis=2) > CHANGED_LEVELS).mean()
    print(f"time slider: {changed:.1%} of the pixels changed by more than {CHANGED_LEVELS} levels")
    assert changed > MIN_CHANGED_FRACTION, f"time 1.0 looks like the test camera's time; see {shots}"


def test_pca_without_features_is_one_line_and_the_viewer_stays_up(page, model, tmp_path):
    """A model without features asked for feature PCA: one warning line, a notice in the page, back to RGB frames."""
    log = tmp_path / "view.log"
    with serve(model.parent / "plain", log, "--quiet") as url:
        pg = open_viewer(page.context.new_page(), url)
        info = wait_frame(pg, r"full · RGB")
        choose(pg, "Render mode", "Feature PCA")
        pg.get_by_text("has no per-Gaussian features").first.wait_for(timeout=20_000)
        choose(pg, "Render mode", "Depth")  # the viewer still answers
        wait_frame(pg, r"full · Depth ", frame_number(info))
        pg.close()
    lines = [ln for ln in log.read_text().splitlines() if "per-Gaussian features" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: feature PCA:") and "--feature_dim" in lines[0], lines
    assert "Traceback" not in log.read_text()


def training_iteration(pg) -> int:
    return int(re.search(r"iteration (\d+)", pg.get_by_text(re.compile(r"^iteration \d+")).first.inner_text()).group(1))


def test_train_viewer_shows_live_stats_and_pauses(page, model, tmp_path):
    """train.py --viewer: the panel shows iteration, loss, PSNR and Gaussian count; pause stops the iterations."""
    scene = model.parent / "scene"
    with serve(tmp_path / "live", tmp_path / "train.log", "-s", scene, "--viewer", "--iterations", "100000",
               "--num_init_points", "500", "--quiet", script="train.py") as url:
        pg = open_viewer(page.context.new_page(), url, first_frame=r"·")
        stats = pg.get_by_text(re.compile(r"^iteration \d+ · loss [0-9.]+ · PSNR [0-9.]+ dB · [0-9,]+ Gaussians"))
        stats.first.wait_for(timeout=30_000)
        pg.get_by_role("button", name="Pause training").click()
        pg.get_by_text("paused").first.wait_for(timeout=10_000)
        pg.wait_for_timeout(1000)  # an iteration under way when the button was pressed may still finish
        held = training_iteration(pg)
        pg.wait_for_timeout(2000)
        assert training_iteration(pg) == held
        pg.get_by_role("button", name="Resume training").click()
        deadline = time.monotonic() + 30
        while training_iteration(pg) <= held and time.monotonic() < deadline:
            pg.wait_for_timeout(200)
        assert training_iteration(pg) > held
        pg.close()
