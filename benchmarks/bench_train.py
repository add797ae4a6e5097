#!/usr/bin/env python
"""Training iterations per second on the synthetic scenes, per rendering backend.

    python benchmarks/bench_train.py [--backends cpu torch] [--iterations 200] [--scene blender|endonerf]
           [--feature_dims 0 16 64] [--threads 2]

Runs train.py's training loop for a fixed number of iterations (densification on, as
in a real run) and prints iterations/s and ms/iteration per backend and feature
dimension, plus the cost of the feature channels relative to D = 0.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from scene.synthetic_blender import make_synthetic_blender  # noqa: E402
from scene.synthetic_endonerf import make_synthetic_endonerf  # noqa: E402


def make_scene(kind: str, root: Path) -> Path:
    if kind == "blender":
        return make_synthetic_blender(root / "blender", n_train=24, n_test=4, width=80, height=80, seed=0)
    return make_synthetic_endonerf(root / "endo", n_frames=24, width=80, height=64, seed=0)


def time_training(scene: Path, out: Path, backend: str, iterations: int, feature_dim: int, extra: list[str] = ()) -> float:
    """Seconds per iteration (scene loading excluded: timed from the first to the last iteration)."""
    args = ["-s", str(scene), "-m", str(out), "--backend", backend, "--iterations", str(iterations),
            "--test_iterations", "-1", "--save_iterations", str(iterations), "--densify_from_iter", "50",
            "--densification_interval", "50", "--quiet", "--eval"]
    if feature_dim:
        args += ["--feature_dim", str(feature_dim)]
    args += list(extra)
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
    return (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["cpu", "torch"])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--scene", choices=["blender", "endonerf"], default="blender")
    ap.add_argument("--feature_dims", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--perceptual", action="store_true",
                    help="also time the DINO perceptual loss (random-weight dino_vits16 at 128 px, every iteration)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(a.scene, Path(tmp))
        rows = []
        for backend in a.backends:
            base = None
            for d in a.feature_dims:
                spi = time_training(scene, Path(tmp) / f"out_{backend}_{d}", backend, a.iterations, d)
                base = spi if d == a.feature_dims[0] else base
                rows.append((backend, d, 1.0 / spi, spi * 1000, spi / base))
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
    print(f"{'backend':12s} {'D':>4s} {'it/s':>8s} {'ms/it':>8s} {'vs plain':>9s}")
    for b, d, ips, ms, rel in rows:
        print(f"{b:12s} {d:4d} {ips:8.2f} {ms:8.1f} {rel:9.2f}")


if __name__ == "__main__":
    main()
