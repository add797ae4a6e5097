#!/usr/bin/env python
"""Viewer frame rate while the camera moves, and what the training hooks cost with no browser connected.

    python benchmarks/bench_viewer.py [--n 100000] [--size 320x240] [--frames 30] [--threads 2] [--backend cpu]

Frames: ``n`` Gaussians (SH degree 3, a cloud in front of the camera, nearest-neighbour
scales as at initialisation), a camera orbiting it with a new pose every frame, each frame
what the viewer's render thread does: render() in RGB mode, uint8 conversion, JPEG
encoding (quality 90, as sent to the browser). Prints frames/s with all Gaussians and with
the viewer's moving budget (the most visible 30k), at the full size and at the default
moving scale (0.35). Training hooks: ``TrainingViewer.update`` per call
with a running server and no browser, against the training iteration time it would add to,
the CPU the idle server threads use,
and train.py's speed on the synthetic Blender scene with ``--viewer`` (no browser) and
without, alternated ``--repeats`` times (medians).
"""
from __future__ import annotations

import argparse
import math
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils.omp_policy  # noqa: E402,F401  (before torch)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from arguments import PipelineParams  # noqa: E402
from scene.gaussian_model import GaussianModel  # noqa: E402
from utils.errors import parse_size  # noqa: E402
from viewer.camera import ViewPose, render_size, view_camera  # noqa: E402
from viewer.modes import RGB, DisplayModel, render_mode  # noqa: E402
from viewer.params import ServeParams  # noqa: E402
from viewer.training import TrainingViewer  # noqa: E402
import viser.transforms as vtf  # noqa: E402

JPEG_QUALITY = 90
DEFAULT_MOVING_SCALE = ServeParams.defaults().moving_scale
DEFAULT_BUDGET = ServeParams.defaults().moving_budget * 1000
ORBIT_RADIUS = 3.0
FOV_Y = math.radians(50)
TARGET_FPS = 10.0


def cloud_model(n: int, seed: int = 0) -> GaussianModel:
    """``n`` SH-degree-3 Gaussians filling a unit ball, opacity 0.7."""
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(n, 3))
    pts *= (rng.uniform(size=(n, 1)) ** (1 / 3)) / np.linalg.norm(pts, axis=1, keepdims=True)
    g = GaussianModel(sh_degree=3)
    g.create_from_pcd(pts.astype(np.float32), rng.uniform(0, 1, (n, 3)).astype(np.float32), 1.0)
    with torch.no_grad():
        g.params["opacity"].fill_(0.85)
        g.params["f_rest"].normal_(0, 0.05)
    g.active_sh_degree = 3
    return g


def orbit_pose(i: int) -> ViewPose:
    """Frame ``i`` of a camera circling the origin (2 degrees per frame), looking at it."""
    a = math.radians(2.0 * i)
    centre = np.array([ORBIT_RADIUS * math.sin(a), 0.3, -ORBIT_RADIUS * math.cos(a)])
    z = -centre / np.linalg.norm(centre)
    x = np.cross(np.array([0.0, -1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z], 1)
    return ViewPose(tuple(vtf.SO3.from_matrix(R).wxyz), tuple(centre), FOV_Y)


def frames_per_second(g: GaussianModel, pipe, w: int, h: int, frames: int) -> tuple[float, float]:
    """(frames/s, median ms) of render + encode at w x h with a new pose every frame (2 warm-up frames)."""
    bg = torch.zeros(3)
    times = []
    for i in range(frames + 2):
        t0 = time.perf_counter()
        img = render_mode(RGB, view_camera(orbit_pose(i), w, h, 0.0), g, pipe, bg, 0.0)
        ok, _ = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok
        times.append(time.perf_counter() - t0)
    times = times[2:]
    return len(times) / sum(times), 1000 * float(np.median(times))


def idle_viewer_costs(g: GaussianModel, pipe, calls: int = 20000, idle_s: float = 5.0) -> tuple[float, float]:
    """(microseconds per TrainingViewer.update() call, CPU milliseconds per second the idle server threads use),
    with the server running and no browser. CPU time is the whole process's while the main thread sleeps."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    viewer = TrainingViewer.start(g, pipe, torch.zeros(3), [], [], 1.0, ServeParams.defaults().replace(port=port))
    try:
        t0 = time.perf_counter()
        for it in range(calls):
            viewer.update(g, it, {"loss": 0.1, "psnr": 20.0})
            viewer.wait_while_paused()
        per_call = (time.perf_counter() - t0) / calls * 1e6
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(idle_s)
        return per_call, 1000 * (time.process_time() - c0) / (time.perf_counter() - t0)
    finally:
        viewer.close()


def training_overhead(iterations: int, repeats: int) -> tuple[float, float]:
    """(median ms/iteration without, with --viewer and no browser) of train.py on the synthetic Blender scene."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import make_scene, time_training, train_args

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scene = make_scene("blender", root)
        off, on = [], []
        for r in range(repeats):
            args = train_args(scene, root / f"off{r}", "cpu", "cpu", iterations, 0, score=False)
            off.append(time_training(args, iterations, "cpu")["s_per_it"])
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            args = train_args(scene, root / f"on{r}", "cpu", "cpu", iterations, 0, ["--viewer", "--port", str(port)], score=False)
            on.append(time_training(args, iterations, "cpu")["s_per_it"])
    return 1000 * statistics.median(off), 1000 * statistics.median(on)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="number of Gaussians")
    ap.add_argument("--size", default="320x240", help="full frame size WIDTHxHEIGHT")
    ap.add_argument("--frames", type=int, default=30, help="frames timed per size")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads")
    ap.add_argument("--backend", default="cpu", help="render backend (cpu, torch, gsplat)")
    ap.add_argument("--iteration_ms", type=float, default=22.4,
                    help="training iteration time to compare the hook cost with (README: synthetic Blender scene)")
    ap.add_argument("--train_iterations", type=int, default=200, help="train.py iterations per timing (0: skip)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating train.py timings with and without --viewer")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    w, h = parse_size(a.size)
    pipe = PipelineParams.defaults().replace(backend=a.backend)
    g = cloud_model(a.n)
    shown = DisplayModel(g)  # what the viewer renders: activated tensors cached once per model
    print(f"{a.n} Gaussians, backend {a.backend}, {torch.get_num_threads()} threads")
    for label, scale, budget in (("all, full size", 1.0, 0), (f"all, scale {DEFAULT_MOVING_SCALE}", DEFAULT_MOVING_SCALE, 0),
                                 (f"{DEFAULT_BUDGET // 1000}k, full size", 1.0, DEFAULT_BUDGET),
                                 (f"{DEFAULT_BUDGET // 1000}k, scale {DEFAULT_MOVING_SCALE} (moving default)",
                                  DEFAULT_MOVING_SCALE, DEFAULT_BUDGET)):
        fw, fh = render_size(w, h, max(w, h), scale)
        fps, ms = frames_per_second(shown.most_visible(budget), pipe, fw, fh, a.frames)
        verdict = "meets" if fps >= TARGET_FPS else "below"
        print(f"{label:36s} {fw}x{fh}: {fps:6.1f} frames/s (median {ms:.1f} ms/frame; {verdict} the {TARGET_FPS:.0f} frames/s target)")
    us, idle_ms = idle_viewer_costs(g, pipe)
    print(f"TrainingViewer.update with no browser: {us:.2f} us/call = {us / 10 / a.iteration_ms:.4f} % of a "
          f"{a.iteration_ms} ms training iteration; the idle server uses {idle_ms:.2f} ms of CPU per second "
          f"({idle_ms / 10:.3f} %)")
    if a.train_iterations:
        off, on = training_overhead(a.train_iterations, a.repeats)
        print(f"train.py, synthetic Blender 80x80, {a.train_iterations} iterations, median of {a.repeats}: "
              f"{off:.1f} ms/iteration without a viewer, {on:.1f} with --viewer and no browser "
              f"({100 * (on / off - 1):+.1f} %; target <= +5 %)")


if __name__ == "__main__":
    main()
