#!/usr/bin/env python
"""Colour-loss (L1 + D-SSIM) forward+backward time at a training image size (the c3vd sample at -r 2 by default).

    python benchmarks/bench_ssim.py [--size 675x540] [--rounds 15] [--threads 2] [--code ROOT [ROOT ...]]

Times the colour loss as training computes it (a tool mask, lambda_dssim 0.2, gradient for the
render only): the torch composition ``(1 - lambda) * l1_loss + lambda * (1 - ssim(masked images))``
built from the ``utils/loss_utils.py`` of each ``--code`` checkout (e.g. the code before a change
and after it: loaded side by side into this one process), and this checkout's fused C++ kernel
(``l1_dssim_loss``, when the extension is available). They are called in turn, round after round,
so that a shared machine's load falls on all of them alike. Prints the median wall and
process-CPU milliseconds of each, the ratio to the first, and the load average.
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

LAMBDA_DSSIM = 0.2  # the default --lambda_dssim


def load_composition(code: Path, index: int):
    """The torch colour loss built from ``code``/utils/loss_utils.py (loaded under a module name of its own)."""
    path = code / "utils" / "loss_utils.py"
    if not path.is_file():
        raise UserError(f"--code {code}: no utils/loss_utils.py there; give the root of a checkout")
    spec = importlib.util.spec_from_file_location(f"loss_utils_{index}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def color_loss(render, gt, mask):
        l1 = module.l1_loss(render, gt, mask)
        return (1.0 - LAMBDA_DSSIM) * l1 + LAMBDA_DSSIM * (1.0 - module.ssim(render * mask, gt * mask, mask))

    return color_loss


def fused_loss():
    """This checkout's fused kernel, or None (with the reason printed) when the extension is unavailable."""
    from gaussian_renderer.backends import cpu_backend
    from utils.loss_utils import l1_dssim_loss

    if not cpu_backend.extension_available():
        print("fused C++ kernel: the extension is not available here (see the warning); not timed")
        return None
    return lambda render, gt, mask: l1_dssim_loss(render, gt, mask, LAMBDA_DSSIM)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="675x540", help="WIDTHxHEIGHT (c3vd sample at -r 2: 675x540)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--code", nargs="+", default=[str(ROOT)],
                    help="checkouts whose utils/loss_utils.py torch composition is timed")
    a = ap.parse_args()
    if a.rounds < 3 or a.threads < 1:
        raise UserError("--rounds must be >= 3 and --threads >= 1")
    w, h = parse_size(a.size)
    torch.set_num_threads(a.threads)
    codes = [Path(c).resolve() for c in a.code]
    losses = [(f"torch composition  {c}", load_composition(c, i)) for i, c in enumerate(codes)]
    fused = fused_loss()
    if fused is not None:
        losses.append((f"fused C++ kernel   {ROOT}", fused))
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(3, h, w, generator=gen)
    render = (gt + 0.1 * torch.randn(3, h, w, generator=gen)).clamp(0, 1).requires_grad_(True)
    mask = (torch.rand(1, h, w, generator=gen) > 0.1).float()

    def forward_backward(loss_fn) -> None:
        loss_fn(render, gt, mask).backward()
        render.grad = None

    wall = [[] for _ in losses]
    cpu = [[] for _ in losses]
    loads = []
    for r in range(a.rounds + 1):  # round 0 warms up
        for i, (_, loss_fn) in enumerate(losses):
            w0, c0 = time.perf_counter(), time.process_time()
            forward_backward(loss_fn)
            if r:
                wall[i].append(time.perf_counter() - w0)
                cpu[i].append(time.process_time() - c0)
        loads.append(os.getloadavg()[0])
    print(f"colour loss (L1 + D-SSIM, lambda {LAMBDA_DSSIM}, masked) forward+backward, {w}x{h}x3, {a.threads} "
          f"threads, {a.rounds} rounds (medians), load average {min(loads):.1f}-{max(loads):.1f}")
    base = statistics.median(wall[0])
    for (name, _), ws, cs in zip(losses, wall, cpu):
        print(f"  {statistics.median(ws) * 1e3:7.1f} ms (CPU {statistics.median(cs) * 1e3:6.1f} ms)  "
              f"{statistics.median(ws) / base:5.2f}x the first  {name}")


if __name__ == "__main__":
    run_cli(main)
