#!/usr/bin/env python
"""SSIM forward+backward time at a training image size (the c3vd sample at -r 2 by default).

    python benchmarks/bench_ssim.py [--size 675x540] [--rounds 15] [--threads 2] [--code ROOT [ROOT ...]]

Times ``ssim`` of ``utils/loss_utils.py`` as training calls it (masked images, masked mean,
gradient for the render only). ``--code`` takes several checkouts (e.g. the code before a change
and after it): their losses are loaded side by side into this one process and called in turn,
round after round, so that a shared machine's load falls on all of them alike. Prints the median
wall and process-CPU milliseconds per checkout, and the load average.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import utils.omp_policy  # noqa: E402,F401  (before torch)

import torch  # noqa: E402

from utils.errors import UserError, parse_size, run_cli  # noqa: E402


def load_ssim(code: Path, index: int):
    """``ssim`` of ``code``/utils/loss_utils.py, loaded under a module name of its own."""
    path = code / "utils" / "loss_utils.py"
    if not path.is_file():
        raise UserError(f"--code {code}: no utils/loss_utils.py there; give the root of a checkout")
    spec = importlib.util.spec_from_file_location(f"loss_utils_{index}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ssim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="675x540", help="WIDTHxHEIGHT (c3vd sample at -r 2: 675x540)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--code", nargs="+", default=[str(ROOT)], help="checkouts whose utils/loss_utils.py are timed")
    a = ap.parse_args()
    if a.rounds < 3 or a.threads < 1:
        raise UserError("--rounds must be >= 3 and --threads >= 1")
    w, h = parse_size(a.size)
    torch.set_num_threads(a.threads)
    codes = [Path(c).resolve() for c in a.code]
    losses = [load_ssim(c, i) for i, c in enumerate(codes)]
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(3, h, w, generator=gen)
    render = (gt + 0.1 * torch.randn(3, h, w, generator=gen)).clamp(0, 1).requires_grad_(True)
    mask = (torch.rand(1, h, w, generator=gen) > 0.1).float()

    def forward_backward(ssim) -> None:
        (1.0 - ssim(render * mask, gt * mask, mask)).backward()
        render.grad = None

    wall = [[] for _ in losses]
    cpu = [[] for _ in losses]
    loads = []
    for r in range(a.rounds + 1):  # round 0 warms up
        for i, ssim in enumerate(losses):
            w0, c0 = time.perf_counter(), time.process_time()
            forward_backward(ssim)
            if r:
                wall[i].append(time.perf_counter() - w0)
                cpu[i].append(time.process_time() - c0)
        loads.append(os.getloadavg()[0])
    print(f"SSIM forward+backward, {w}x{h}x3, {a.threads} threads, {a.rounds} rounds (medians), "
          f"load average {min(loads):.1f}-{max(loads):.1f}")
    base = statistics.median(wall[0])
    for code, ws, cs in zip(codes, wall, cpu):
        print(f"  {statistics.median(ws) * 1e3:7.1f} ms (CPU {statistics.median(cs) * 1e3:6.1f} ms)  "
              f"{statistics.median(ws) / base:5.2f}x the first  {code}")


if __name__ == "__main__":
    run_cli(main)
