#!/usr/bin/env python
"""Training iterations per second on the synthetic scenes or the c3vd sample, per rendering backend.

    python benchmarks/bench_train.py [--backends cpu torch] [--iterations 200] [--scene blender|endonerf]
           [--feature_dims 0 16 64] [--threads 2]
    python benchmarks/bench_train.py --scene c3vd [--iterations 40] [--contention]

Runs train.py's training loop for a fixed number of iterations (densification on, as
in a real run) and prints iterations/s and the median ms/iteration (first iterations
skipped) per backend and feature dimension, plus the cost of the feature channels
relative to D = 0. ``--scene c3vd`` trains the real EndoNeRF sample
(``../shared/data/endonerf_c3vd_first20 --config arguments/endonerf/pulling.py
--identity_poses -r 2``, C++ backend) and also prints the peak RSS and the ratio to the
0.36 s/iteration recorded in the README before issue 12. ``--contention`` repeats each
run with one busy process per CPU (started and stopped here) and prints the slowdown.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

# the project's OpenMP waiting policy (gaussian_renderer/__init__.py); libgomp reads it when torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

C3VD_SCENE = ROOT.parent / "shared" / "data" / "endonerf_c3vd_first20"
C3VD_ARGS = ["--config", str(ROOT / "arguments" / "endonerf" / "pulling.py"), "--identity_poses", "-r", "2"]
C3VD_ITERATIONS = 40
RECORDED_C3VD_S_PER_IT = 0.36  # README, before issue 12 (median of iterations 6-40)
SKIP_ITERATIONS = 5  # medians leave out the first iterations (allocation, first-use set-up)

import train  # noqa: E402
from bench_rasterizer import start_busy_processes, stop_processes  # noqa: E402
from scene.synthetic_blender import make_synthetic_blender  # noqa: E402
from scene.synthetic_endonerf import make_synthetic_endonerf  # noqa: E402


def make_scene(kind: str, root: Path) -> Path:
    if kind == "blender":
        return make_synthetic_blender(root / "blender", n_train=24, n_test=4, width=80, height=80, seed=0)
    return make_synthetic_endonerf(root / "endo", n_frames=24, width=80, height=64, seed=0)


def time_iterations(args: list[str]) -> list[float]:
    """Seconds of each training iteration of train.main(args) (timed render call to render call)."""
    stamps = []
    orig = train.render

    def timed_render(*a, **k):
        stamps.append(time.perf_counter())
        return orig(*a, **k)

    train.render = timed_render
    try:
        train.main(args)
    finally:
        train.render = orig
    return [b - a for a, b in zip(stamps, stamps[1:])]


def median_iteration(seconds: list[float]) -> float:
    """Median seconds per iteration, leaving out the first SKIP_ITERATIONS when there are enough."""
    return statistics.median(seconds[SKIP_ITERATIONS:] if len(seconds) > 2 * SKIP_ITERATIONS else seconds)


def time_training(scene: Path, out: Path, backend: str, iterations: int, feature_dim: int, extra: list[str] = ()) -> float:
    """Median seconds per iteration on a synthetic scene (scene loading excluded)."""
    args = ["-s", str(scene), "-m", str(out), "--backend", backend, "--iterations", str(iterations),
            "--test_iterations", "-1", "--save_iterations", str(iterations), "--densify_from_iter", "50",
            "--densification_interval", "50", "--quiet", "--eval"]
    if feature_dim:
        args += ["--feature_dim", str(feature_dim)]
    args += list(extra)
    return median_iteration(time_iterations(args))


def contended(run):
    """run() with one busy process per CPU alongside."""
    busy = start_busy_processes(os.cpu_count() or 1)
    try:
        time.sleep(0.5)
        return run()
    finally:
        stop_processes(busy)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def bench_c3vd(a, tmp: Path) -> None:
    """The c3vd sample at -r 2 with the pulling config: median s/iteration, peak RSS, ratio to the README."""
    if not (C3VD_SCENE / "poses_bounds.npy").exists():
        raise SystemExit(f"c3vd sample not found at {C3VD_SCENE} (needs ../shared/data/endonerf_c3vd_first20)")
    iterations = a.iterations or C3VD_ITERATIONS

    def run(tag: str) -> float:
        args = ["-s", str(C3VD_SCENE), "-m", str(tmp / f"c3vd_{tag}"), *C3VD_ARGS, "--backend", a.backends[0],
                "--iterations", str(iterations), "--test_iterations", "-1", "--save_iterations", str(iterations),
                "--quiet"]
        return median_iteration(time_iterations(args))

    quiet = run("quiet")
    rss = peak_rss_mb()
    print(f"\nc3vd sample, -r 2, pulling config, backend {a.backends[0]}, {iterations} iterations, "
          f"{a.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"  median {quiet:.3f} s/iteration (iterations {SKIP_ITERATIONS + 1}-{iterations}), peak RSS {rss:.0f} MB")
    print(f"  vs README before issue 12 ({RECORDED_C3VD_S_PER_IT} s/iteration): {quiet / RECORDED_C3VD_S_PER_IT:.2f}x "
          f"(target <= 0.33x)")
    if a.contention:
        busy = contended(lambda: run("busy"))
        print(f"  with {os.cpu_count()} busy processes: {busy:.3f} s/iteration, {busy / quiet:.2f}x quiet (target <= 2x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=None, help="default: cpu torch (c3vd: cpu)")
    ap.add_argument("--iterations", type=int, default=None, help=f"default: 200 (c3vd: {C3VD_ITERATIONS})")
    ap.add_argument("--scene", choices=["blender", "endonerf", "c3vd"], default="blender")
    ap.add_argument("--contention", action="store_true",
                    help="repeat each run with one busy process per CPU and print the slowdown")
    ap.add_argument("--feature_dims", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--perceptual", action="store_true",
                    help="also time the DINO perceptual loss (random-weight dino_vits16 at 128 px, every iteration)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.scene == "c3vd":
        a.backends = a.backends or ["cpu"]
        with tempfile.TemporaryDirectory() as tmp:
            bench_c3vd(a, Path(tmp))
        return
    a.backends = a.backends or ["cpu", "torch"]
    a.iterations = a.iterations or 200
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(a.scene, Path(tmp))
        rows = []
        for backend in a.backends:
            base = None
            for d in a.feature_dims:
                spi = time_training(scene, Path(tmp) / f"out_{backend}_{d}", backend, a.iterations, d)
                base = spi if d == a.feature_dims[0] else base
                rows.append((backend, d, 1.0 / spi, spi * 1000, spi / base))
                if a.contention:
                    busy = contended(lambda: time_training(scene, Path(tmp) / f"busy_{backend}_{d}", backend,
                                                           a.iterations, d))
                    rows.append((backend + "+busy", d, 1.0 / busy, busy * 1000, busy / spi))
            if a.perceptual:
                feats = Path(tmp) / "dino"
                if not feats.exists():
                    import extract_dino_features

                    extract_dino_features.main(["--image_dir", str(scene / "images"), "--output_dir", str(feats),
                                                "--model", "dino_vits16", "--resolution", "128", "--random_init"])
                spi = time_training(scene, Path(tmp) / f"out_{backend}_perc", backend, a.iterations, 0,
                                    ["--dino_feature_dir", str(feats), "--dino_random_init", "--lambda_perceptual", "0.1"])
                rows.append((backend + "+perc", 0, 1.0 / spi, spi * 1000, spi / base))
    print(f"\nscene={a.scene}  iterations={a.iterations}  threads={a.threads}")
    print(f"{'backend':12s} {'D':>4s} {'it/s':>8s} {'ms/it':>8s} {'vs plain':>9s}   (+busy rows: vs quiet)")
    for b, d, ips, ms, rel in rows:
        print(f"{b:12s} {d:4d} {ips:8.2f} {ms:8.1f} {rel:9.2f}")


if __name__ == "__main__":
    main()
