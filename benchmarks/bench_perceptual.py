#!/usr/bin/env python
"""Cost of the DINO perceptual loss machinery.

    python benchmarks/bench_perceptual.py [--sections extraction] [--models dinov2_vits14 dino_vits16 ...]
        [--resolutions 224 518] [--batch_sizes 1 4] [--device cpu] [--json OUT.json]

Sections (run in the order given; each prints its own table):

* ``extraction``: DINO feature extraction throughput (images/s) per model, ViT-input long
  side and batch size, random weights (speed does not depend on the weight values).

Adding a section: write ``add_<name>_args(parser)`` and ``run_<name>(args) -> list[dict]``
and register them in ``SECTIONS``.
"""
from __future__ import annotations

import os
import platform
import sys
import time
import warnings
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import Callable, NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.dino_utils import DinoExtractor, resolve_device  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.io_utils import write_json  # noqa: E402

IMAGE_SIZE = (512, 640)  # EndoNeRF frame (H, W); the ViT input keeps this 4:5 aspect
MIN_SECONDS = 2.0  # time each configuration for at least this long ...
MAX_REPEATS = 20  # ... but never more than this many batches
WARMUP = 1


class Section(NamedTuple):
    add_args: Callable[[ArgumentParser], None]
    run: Callable[[Namespace], list[dict]]


def add_extraction_args(parser: ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["dinov2_vits14", "dino_vits16", "dinov2_vitb14"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[224, 518])
    parser.add_argument("--batch_sizes", nargs="+", type=int, default=[1, 4])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(fn: Callable[[], object], device: torch.device) -> tuple[float, float, int]:
    """(mean wall seconds per call, mean process CPU seconds per call, calls timed) after WARMUP calls.

    CPU seconds stay meaningful when other jobs share the cores (wall time then inflates).
    """
    for _ in range(WARMUP):
        fn()
    sync(device)
    start, cpu_start, calls = time.perf_counter(), time.process_time(), 0
    while calls < MAX_REPEATS and (calls == 0 or time.perf_counter() - start < MIN_SECONDS):
        fn()
        sync(device)
        calls += 1
    return (time.perf_counter() - start) / calls, (time.process_time() - cpu_start) / calls, calls


def run_extraction(args: Namespace) -> list[dict]:
    """Images/s of extractor.features() under no_grad for every model x resolution x batch."""
    device = resolve_device(args.device)
    rows = []
    for model in args.models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ext = DinoExtractor(model, random_init=True, device=device)
        for res in args.resolutions:
            ext.resolution = res
            for batch in args.batch_sizes:
                images = torch.rand(batch, 3, *IMAGE_SIZE, device=device)
                with torch.no_grad():
                    sec, cpu_sec, calls = time_batches(lambda: ext.features(images), device)
                h_in, w_in = ext.input_size(*IMAGE_SIZE)
                rows.append({"section": "extraction", "model": model, "input": f"{h_in}x{w_in}",
                             "tokens": (h_in // ext.patch_size) * (w_in // ext.patch_size), "batch": batch,
                             "ms_per_batch": 1000 * sec, "images_per_s": batch / sec,
                             "cpu_ms_per_image": 1000 * cpu_sec / batch, "repeats": calls})
                print(f"  {model} {h_in}x{w_in} batch {batch}: {batch / sec:.2f} img/s", flush=True)
    return rows


SECTIONS: dict[str, Section] = {
    "extraction": Section(add_extraction_args, run_extraction),
}


def print_table(rows: list[dict]) -> None:
    """Fixed-width table of rows sharing the same keys (section column dropped)."""
    if not rows:
        return
    keys = [k for k in rows[0] if k != "section"]
    cells = [[f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Benchmark DINO feature extraction / perceptual loss cost")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write all rows to this JSON file")
    for section in SECTIONS.values():
        section.add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores, device {args.device}")
    all_rows = []
    for name in args.sections:
        print(f"== {name} ==", flush=True)
        rows = SECTIONS[name].run(args)
        print_table(rows)
        all_rows += rows
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": all_rows})


if __name__ == "__main__":
    run_cli(main)
