#!/usr/bin/env python
"""`make demo`: the whole pipeline on a built-in synthetic EndoNeRF scene, on the CPU.

Steps (each printed as the shell command a user would type):
  1. make the synthetic deforming-tissue scene (images, depth, tool masks, poses_bounds.npy)
  2. extract_dino_features.py  (random-weight ViT: no download; real runs use pretrained weights)
  3. train.py with depth, DINO perceptual loss and per-Gaussian feature distillation
  4. render.py (RGB, depth, feature PCA, video)   5. metrics.py   6. cluster.py
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(step: str, args: list[str]) -> float:
    cmd = [sys.executable, *args]
    shown = " ".join(shlex.quote(a) for a in ["python", *args])
    print(f"\n=== {step}\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"demo failed at: {step}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_output")
    ap.add_argument("--iterations", type=int, default=1500)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    scene, feats, model = out / "scene", out / "dino_features", out / "model"
    times = {}
    times["scene"] = run("1/6 synthetic EndoNeRF scene", ["-m", "scene.synthetic_endonerf", str(scene), "--overwrite"])
    times["features"] = run("2/6 DINO features", [
        "extract_dino_features.py", "--image_dir", str(scene / "images"), "--output_dir", str(feats),
        "--model", "dino_vits16", "--resolution", "128", "--random_init", "--preview", "--pca_dim", "32"])
    times["train"] = run("3/6 training", [
        "train.py", "-s", str(scene), "-m", str(model), "--iterations", str(args.iterations),
        "--test_iterations", str(args.iterations), "--save_iterations", str(args.iterations),
        "--densify_until_iter", str(args.iterations // 2), "--densify_from_iter", "200", "--opacity_reset_interval", "100000",
        "--lambda_depth", "0.1", "--dino_feature_dir", str(feats), "--dino_random_init",
        "--lambda_perceptual", "0.05", "--perceptual_every", "10",
        "--feature_dim", "16", "--lambda_feature", "0.5", "--overwrite"])  # the demo may be run again
    times["render"] = run("4/6 render", ["render.py", "-m", str(model), "--video"])
    times["metrics"] = run("5/6 metrics", ["metrics.py", "-m", str(model)])
    times["cluster"] = run("6/6 cluster", ["cluster.py", "-m", str(model), "--method", "kmeans", "--k", "4"])

    results = json.loads((model / "results.json").read_text())
    it_key = sorted(results)[-1]
    r, info = results[it_key], json.loads((model / "results_info.json").read_text())[it_key]
    print("\n=== Demo finished")
    print(f"test PSNR {r['PSNR']:.2f} dB, SSIM {r['SSIM']:.4f} (mask: {info['mask']})")
    print(f"time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    print("Results:")
    for label, path in [
        ("scene", scene), ("DINO features + previews", feats), ("trained model", model / "point_cloud"),
        ("test renders / depth / features", model / "test" / it_key), ("video", model / "video" / it_key / "renders.mp4"),
        ("metrics", model / "results.json"), ("clusters", model / "clusters"),
    ]:
        print(f"  {label:32s} {path}")
    print("Explore the model in a web browser (open the address it prints; Ctrl-C stops it):")
    print(f"  python view.py -m {shlex.quote(str(model))}")


if __name__ == "__main__":
    main()
