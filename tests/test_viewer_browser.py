"""The web viewer in a real browser (headless Chromium via playwright) on a tiny trained deformable model.

Checks that (1) snapped to a test camera the frame shown in the page matches render.py's
render of that camera, (2) depth, feature PCA and cluster modes change the image, (3) the
time slider changes it. Screenshots go to ``<tmp>/viewer_screenshots/``. Skipped, with the
reason, when Chromium or playwright is missing (``make test`` installs both).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCENE_W, SCENE_H = 160, 120  # trained at this size (cheap) ...
W, H = 400, 300  # ... viewed and rendered by render.py at this one (-r 400): the canvas must be this size, and the
# browser puts its control panel beside (not over) the canvas only in windows wider than about 700 px
ITERATIONS = 20
BIG_VIEWPORT = {"width": 1000, "height": 700}
GIZMO_PX = 80  # the browser draws its orientation gizmo into the canvas' bottom-left corner: not compared
FRAME_TIMEOUT_S = 40.0
MIN_PSNR_DB = 30.0
MOTION_MM = 6.0  # sideways motion given to the model over the time range (tissue is ~60 mm away)
CHANGED_LEVELS = 8  # a pixel "changed" when a channel moved by more than this (frames are PNG: identical renders match exactly)
MIN_CHANGED_FRACTION = 0.02

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make test installs it)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium; make test does this where apt-get exists)",
                allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    return out


@pytest.fixture(scope="module")
def viewer_url(model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "view.py"), "-m", str(model), "-r", str(W), "--port", str(port),
                             "--image_format", "png", "--quiet"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Viewer at "):
                break
        assert proc.poll() is None, "view.py exited:\n" + "".join(lines)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def page(viewer_url, tmp_path_factory):
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport=BIG_VIEWPORT, device_scale_factor=1)
        pg = context.new_page()
        pg.goto(viewer_url)
        wait_frame(pg, r"full")
        close_notifications(pg)
        yield pg
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viewer_screenshots")
    print(f"viewer screenshots: {out}")
    return out


def close_notifications(pg) -> None:
    """Dismiss toasts (e.g. Chromium's 'software WebGL' notice) that would cover the canvas."""
    for button in pg.locator(".mantine-Notification-closeButton").all():
        button.click()
    pg.wait_for_timeout(300)


def frame_info(pg) -> str:
    return pg.get_by_text(re.compile(r"^frame \d+ ·")).first.inner_text()


def frame_number(info: str) -> int:
    return int(re.match(r"frame (\d+)", info).group(1))


def wait_frame(pg, pattern: str, after: int = 0) -> str:
    """Wait for a frame numbered above ``after`` whose info line matches ``pattern``; return the info line."""
    deadline = time.monotonic() + FRAME_TIMEOUT_S
    info = ""
    while time.monotonic() < deadline:
        try:
            info = frame_info(pg)
        except playwright_api.Error:
            info = ""
        if info and frame_number(info) > after and re.search(pattern, info):
            # let the browser draw the image it received before the info line
            pg.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            return info
        pg.wait_for_timeout(100)
    raise AssertionError(f"no frame matching {pattern!r} after frame {after} within {FRAME_TIMEOUT_S} s; last: {info!r}")


def screenshot(pg, path: Path, width: int, height: int) -> np.ndarray:
    """[H,W,3] uint8 RGB of the canvas' top-left width x height pixels, also written to ``path``."""
    pg.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": height})
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def choose(pg, label: str, option: str) -> None:
    pg.get_by_label(label).click()
    pg.get_by_role("option", name=option).first.click()


def canvas_size(pg) -> tuple[int, int]:
    box = pg.locator("canvas").first.bounding_box()
    return int(box["width"]), int(box["height"])


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
    time_thumb = page.get_by_role("slider").nth(3)  # Max resolution, Moving scale, SH degree, Time
    time_thumb.focus()
    time_thumb.press("End")
    info = wait_frame(page, r"full · RGB · t=1\.000", frame_number(info))
    after = screenshot(page, shots / "time_after.png", w, h)
    changed = (np.abs(after.astype(int) - before).max(axis=2) > CHANGED_LEVELS).mean()
    print(f"time slider: {changed:.1%} of the pixels changed by more than {CHANGED_LEVELS} levels")
    assert changed > MIN_CHANGED_FRACTION, f"time 1.0 looks like the test camera's time; see {shots}"
