#!/usr/bin/env python
"""Host memory of an EndoNeRF run: the cameras' images, masks and depth, and the whole process.

    python benchmarks/bench_memory.py [--frames 276] [--size 675x540] [--iterations 5] [--work DIR]
    python benchmarks/bench_memory.py --scene ../shared/data/endonerf_c3vd_first20 --train_args "--identity_poses -r 1"

Builds (once, under ``--work``) a synthetic EndoNeRF scene of ``--frames`` frames at ``--size``
(``--unique_frames`` rendered frames repeated, since rendering is slow and the content does not
change the bytes), or takes ``--scene``. Then, each in a fresh process:

* load: reads the scene and loads its cameras as train.py does (on the CPU) and prints the bytes
  the cameras hold (every distinct tensor storage reachable from them), bytes per frame and per
  pixel, the resident memory before and after loading and the peak;
* train (``--iterations`` > 0): ``train.py`` for that many iterations (C++ backend), its peak RSS.

It ends with the expected footprint of a 2,000-frame 1350x1080 video: the per-pixel camera bytes
times its pixels plus the rest of the measured training peak (``--code ROOT`` runs the children
from another checkout, e.g. the code before a change, for a before/after comparison).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from utils.errors import UserError, parse_size, run_cli  # noqa: E402

MB = 1024.0 * 1024.0  # MiB, as the README reports memory
VIDEO_FRAMES, VIDEO_SIZE = 2000, (1350, 1080)  # the long-video case
TARGET_VIDEO_GB = 24.0

# Runs in the child process (sys.argv: code root, scene, extra train.py flags as one string). Counts every
# distinct storage reachable from the cameras' attributes (tensors, or objects holding tensors).
LOAD_CHILD = r"""
import json, resource, shlex, sys, tempfile
sys.path.insert(0, sys.argv[1])
import utils.omp_policy
import torch
from scene import Scene
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel
import train

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def storages(obj, seen):
    if isinstance(obj, torch.Tensor):
        st = obj.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    elif hasattr(obj, "__dict__"):
        for v in vars(obj).values():
            storages(v, seen)

with tempfile.TemporaryDirectory() as out:
    model, opt, pipe, run, view = train.parse_args(["-s", sys.argv[2], "-m", out, "--quiet", *shlex.split(sys.argv[3])])
    info = read_scene(model.source_path, model)
    before = rss_mb()
    gaussians = GaussianModel(model.sh_degree, 0, 0, "cpu")
    scene = Scene(model, gaussians, device="cpu", info=info, quiet=True)
    cams = scene.getTrainCameras() + scene.getTestCameras()
    seen = {}
    for c in cams:
        storages(c, seen)
    w, h = cams[0].image_width, cams[0].image_height
    print(json.dumps({"frames": len(cams), "width": w, "height": h, "camera_bytes": sum(seen.values()),
                      "rss_before_mb": before, "rss_after_mb": rss_mb(),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def tiled_scene(work: Path, frames: int, size: tuple[int, int], unique: int) -> Path:
    """A synthetic EndoNeRF scene of ``frames`` frames at ``size``: ``unique`` rendered frames, repeated."""
    from scene.synthetic_endonerf import NAMES, make_synthetic_endonerf

    w, h = size
    out = work / f"endonerf_{frames}f_{w}x{h}"
    if (out / "poses_bounds.npy").exists():
        return out
    src = work / f"endonerf_{unique}f_{w}x{h}_unique"
    if not (src / "poses_bounds.npy").exists():
        print(f"rendering {unique} synthetic frames at {w}x{h} into {src} (minutes) ...", flush=True)
        make_synthetic_endonerf(src, n_frames=unique, width=w, height=h, seed=0, overwrite=True)
    tmp = work / (out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub, pattern in NAMES.items():
        (tmp / sub).mkdir(parents=True)
        for i in range(frames):
            link_or_copy(src / sub / pattern.format(i % unique), tmp / sub / pattern.format(i))
    rows = np.load(src / "poses_bounds.npy", allow_pickle=False)
    np.save(tmp / "poses_bounds.npy", rows[np.arange(frames) % unique])
    tmp.rename(out)
    return out


def child_peak_rss(cmd: list[str], label: str) -> tuple[str, float]:
    """Run ``cmd`` and read its own peak RSS from wait4 (not the maximum over all children)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise UserError(f"{label} failed (exit {proc.returncode}):\n{err.strip()[-2000:]}")
    return out, usage.ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=276)
    ap.add_argument("--size", default="675x540", help="WIDTHxHEIGHT of the synthetic scene")
    ap.add_argument("--unique_frames", type=int, default=24, help="frames actually rendered (then repeated)")
    ap.add_argument("--scene", default=None, help="an existing scene folder instead of the synthetic one")
    ap.add_argument("--train_args", default="", help="extra train.py flags, one string (e.g. \"-r 2\")")
    ap.add_argument("--iterations", type=int, default=5, help="train.py iterations (0: load only)")
    ap.add_argument("--work", default=None, help="folder for the synthetic scene (kept for the next run)")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose scene loader and train.py the children run")
    a = ap.parse_args()
    if a.frames < 2 or a.unique_frames < 2 or a.iterations < 0:
        raise UserError("--frames and --unique_frames must be >= 2 and --iterations >= 0")
    code = Path(a.code).resolve()
    if not (code / "train.py").is_file():
        raise UserError(f"--code {a.code}: no train.py there; give the root of a checkout of this project")
    if a.scene:
        scene = Path(a.scene)
    else:
        work = Path(a.work) if a.work else Path(tempfile.gettempdir()) / "bench_memory"
        work.mkdir(parents=True, exist_ok=True)
        scene = tiled_scene(work, a.frames, parse_size(a.size), min(a.unique_frames, a.frames))

    out, load_peak = child_peak_rss([sys.executable, "-c", LOAD_CHILD, str(code), str(scene), a.train_args], "loading the scene")
    r = json.loads(out.strip().splitlines()[-1])
    pixels = r["frames"] * r["width"] * r["height"]
    per_px = r["camera_bytes"] / pixels
    print(f"\nscene {scene} ({r['frames']} frames at {r['width']}x{r['height']}), code {code}")
    print(f"  cameras hold {r['camera_bytes'] / MB:.1f} MB: {r['camera_bytes'] / r['frames'] / MB:.2f} MB/frame, "
          f"{per_px:.2f} bytes/pixel")
    print(f"  load only: RSS {r['rss_before_mb']:.0f} MB before loading the cameras, {r['rss_after_mb']:.0f} MB after, "
          f"peak {load_peak:.0f} MB")
    rest = r["rss_before_mb"] * MB
    if a.iterations:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(code / "train.py"), "-s", str(scene), "-m", tmp, "--iterations", str(a.iterations),
                   "--test_iterations", "-1", "--save_iterations", str(a.iterations), "--quiet", "--backend", "cpu",
                   "--device", "cpu", *shlex.split(a.train_args)]
            _, train_peak = child_peak_rss(cmd, "train.py")
        print(f"  train.py, {a.iterations} iterations: peak RSS {train_peak:.0f} MB")
        rest = train_peak * MB - r["camera_bytes"]
    video_px = VIDEO_FRAMES * VIDEO_SIZE[0] * VIDEO_SIZE[1]
    total = per_px * video_px + rest
    print(f"  {VIDEO_FRAMES} frames at {VIDEO_SIZE[0]}x{VIDEO_SIZE[1]}: cameras {per_px * video_px / 2**30:.1f} GB "
          f"+ the rest of this run's {'training' if a.iterations else 'load'} peak {rest / 2**30:.2f} GB = "
          f"{total / 2**30:.1f} GB (target <= {TARGET_VIDEO_GB:.0f} GB; the rest grows with the image size)")


if __name__ == "__main__":
    run_cli(main)
