"""Benchmark the compositing backends on fixed-seed screen-space scenes.

For each available backend and scene: median forward time (no autograd graph),
median forward+backward time (wall clock, and process CPU time summed over
threads, which stays meaningful when other jobs share the machine), the peak
extra resident memory of one forward+backward and the throughput in (pixel,
Gaussian) pairs per second. Pairs = sum over tiles of (tile pixels inside the
image x Gaussians binned to the tile), i.e. the work of a tiled rasterizer
before early termination; the 3-sigma-square binning used before the support
cut-off (backends/common.py) is printed alongside for comparison.

``--contention`` times the C++ backend's forward+backward (C=3) on a quiet machine,
then again with one busy process per CPU that it starts (and stops) itself, and
prints the ratio. The OpenMP waiting policy in effect is printed with it.

    .venv/bin/python benchmarks/bench_rasterizer.py --threads 2
    .venv/bin/python benchmarks/bench_rasterizer.py --backends cpu --repeats 10
    .venv/bin/python benchmarks/bench_rasterizer.py --contention
    python benchmarks/bench_rasterizer.py --device cuda --backends gsplat,torch --gaussians 50000,1000000 \
        --channels 3,19 --json rasterizer.json

``--device`` places the torch backend's tensors (cpu always runs on the CPU, gsplat on
CUDA); on CUDA the peak memory is torch.cuda.max_memory_allocated above the start.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import utils.omp_policy  # noqa: E402,F401  (before torch)

import torch  # noqa: E402


from gaussian_renderer.backends.common import TILE_SIZE, bin_gaussians  # noqa: E402
from gaussian_renderer.backends.cpu_backend import omp_wait_policy  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.io_utils import write_json  # noqa: E402
from utils.system_utils import pick_device  # noqa: E402

SEED = 0
DEFAULT_GAUSSIANS = 50_000
DEFAULT_WIDTH, DEFAULT_HEIGHT = 320, 256
CHANNEL_SETS = (3, 3 + 16)  # default: RGB, RGB + 16 feature channels
SIGMA_RANGE_PX = (1.0, 10.0)  # major-axis std-dev: radii (3 sigma) of 3 to 30 px
ASPECT_RANGE = (0.3, 1.0)  # minor / major std-dev
OPACITY_RANGE = (0.05, 0.95)
DEPTH_RANGE = (1.0, 10.0)
SCREEN_MARGIN = 0.05  # means may lie this fraction of the image size off screen
SIGMA_EXTENT = 3.0  # radius = 3 standard deviations (as in projection.py)
MB = 1024.0 * 1024.0


def make_scene(n: int, width: int, height: int, channels: int, seed: int = SEED):
    """Plausible projected Gaussians: (means2d [N,2], conics [N,3], opacities [N], colors [N,C], depths [N], radii [N])."""
    g = torch.Generator().manual_seed(seed)

    def uniform(lo, hi, size=(n,)):
        return lo + (hi - lo) * torch.rand(size, generator=g, dtype=torch.float64)

    means = torch.stack(
        [uniform(-SCREEN_MARGIN * width, (1 + SCREEN_MARGIN) * width),
         uniform(-SCREEN_MARGIN * height, (1 + SCREEN_MARGIN) * height)], -1
    )
    log_lo, log_hi = math.log(SIGMA_RANGE_PX[0]), math.log(SIGMA_RANGE_PX[1])
    s_major = torch.exp(uniform(log_lo, log_hi))
    s_minor = s_major * uniform(*ASPECT_RANGE)
    theta = uniform(0.0, math.pi)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # covariance R diag(s^2) R^T and its inverse (the conic)
    var_a, var_b = s_major**2, s_minor**2
    cxx = cos**2 * var_a + sin**2 * var_b
    cxy = cos * sin * (var_a - var_b)
    cyy = sin**2 * var_a + cos**2 * var_b
    det = cxx * cyy - cxy**2
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], -1)
    radii = torch.ceil(SIGMA_EXTENT * s_major).to(torch.int32)
    opacities = uniform(*OPACITY_RANGE)
    depths = uniform(*DEPTH_RANGE)
    colors = torch.rand(n, channels, generator=g, dtype=torch.float64)
    f32 = lambda t: t.float().contiguous()  # noqa: E731
    return f32(means), f32(conics), f32(opacities), f32(colors), f32(depths), radii


def tile_pairs(scene, width: int, height: int, box: bool = False) -> int:
    """(pixel, Gaussian) pairs of a tiled rasterizer without early termination.

    box: count the tiles of each Gaussian's 3-sigma bounding square (the binning before
    the support cut-off) rather than those its support ellipse meets.
    """
    means2d, conics, opacities, _, depths, radii = scene
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    tiles_y = (height + TILE_SIZE - 1) // TILE_SIZE
    if box:
        r = radii.double()
        x0, x1, y0, y1 = [torch.floor((means2d[:, i].double() + sign * r) / TILE_SIZE).clamp(0, n - 1)
                          for i, sign, n in ((0, -1, tiles_x), (0, 1, tiles_x), (1, -1, tiles_y), (1, 1, tiles_y))]
        tx, ty = torch.arange(tiles_x), torch.arange(tiles_y)
        inside = ((ty[None, :, None] >= y0[:, None, None]) & (ty[None, :, None] <= y1[:, None, None])
                  & (tx[None, None, :] >= x0[:, None, None]) & (tx[None, None, :] <= x1[:, None, None]))
        counts = inside.sum(0).flatten().double()
    else:
        _, offsets = bin_gaussians(means2d, conics, opacities, radii, depths, width, height, TILE_SIZE)
        counts = (offsets[1:] - offsets[:-1]).double()
    tid = torch.arange(counts.numel())
    cols = (width - (tid % tiles_x) * TILE_SIZE).clamp_max(TILE_SIZE)
    rows = (height - (tid // tiles_x) * TILE_SIZE).clamp_max(TILE_SIZE)
    return int((counts * cols * rows).sum())


def load_backends(names):
    """{name: rasterize} for the requested backends that can run here (with a note for the others)."""
    out = {}
    for name in names:
        if name == "torch":
            from gaussian_renderer.backends.torch_backend import rasterize
            out[name] = rasterize
        elif name == "cpu":
            from gaussian_renderer.backends.cpu_backend import extension_available, rasterize
            if extension_available():
                out[name] = rasterize
            else:
                print("[skip] cpu: the C++ extension is not available")
        elif name == "gsplat":
            from gaussian_renderer.backends.gsplat_backend import gsplat_available, rasterize
            if gsplat_available():
                out[name] = rasterize
            else:
                print("[skip] gsplat: needs CUDA and the gsplat package")
        else:
            raise UserError(f"--backends: unknown backend '{name}' (choose from torch, cpu, gsplat)")
    return out


def backend_device(name: str, torch_device: str) -> str:
    """Where a backend's tensors live: gsplat on CUDA, cpu on the CPU, torch on ``torch_device``."""
    return {"gsplat": "cuda", "cpu": "cpu"}.get(name, torch_device)


def fresh_leaves(scene):
    """The scene with new leaf tensors (sharing storage) for the 4 differentiable inputs."""
    return [t.detach().requires_grad_(True) for t in scene[:4]] + list(scene[4:])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run, device: str, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of run() over `repeats` calls after one warm-up call."""
    walls, cpus = [], []
    for _ in range(repeats + 1):
        sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        sync(device)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls[1:]), statistics.median(cpus[1:])


def time_forward(fn, scene, size, device, repeats: int) -> tuple[float, float]:
    def run():
        with torch.no_grad():
            fn(*scene, *size)

    return timed(run, device, repeats)


def forward_backward(fn, scene, size, device, weights) -> None:
    image, alpha = fn(*fresh_leaves(scene), *size)
    ((image * weights[0]).sum() + (alpha * weights[1]).sum()).backward()


def time_forward_backward(fn, scene, size, device, repeats: int, weights) -> tuple[float, float]:
    return timed(lambda: forward_backward(fn, scene, size, device, weights), device, repeats)


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_extra_mb(fn, scene, size, device, weights) -> float | None:
    """Peak resident memory above the starting point during one forward+backward (Linux /proc)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward(fn, scene, size, device, weights)
        return (torch.cuda.max_memory_allocated() - base) / MB
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter (VmHWM)
    except OSError:
        return None
    base = _proc_status_kb("VmRSS")
    forward_backward(fn, scene, size, device, weights)
    peak = _proc_status_kb("VmHWM")
    if base is None or peak is None:
        return None
    return max(0, peak - base) / 1024.0


def bench_scene(backends, n: int, channels: int, args) -> dict:
    size = (args.width, args.height)
    scene = make_scene(n, args.width, args.height, channels)
    pairs = tile_pairs(scene, args.width, args.height)
    box_pairs = tile_pairs(scene, args.width, args.height, box=True)
    g = torch.Generator().manual_seed(SEED + 1)
    results = {}
    for name, fn in backends.items():
        device = backend_device(name, args.device)
        weights = (torch.randn(channels, args.height, args.width, generator=g).to(device),
                   torch.randn(1, args.height, args.width, generator=g).to(device))
        on_device = [t.to(device) for t in scene]
        fwd, fwd_cpu = time_forward(fn, on_device, size, device, args.repeats)
        fb, fb_cpu = time_forward_backward(fn, on_device, size, device, args.repeats, weights)
        mem = peak_extra_mb(fn, on_device, size, device, weights)
        results[name] = {"fwd": fwd * 1e3, "fb": fb * 1e3, "fwd_cpu": fwd_cpu * 1e3, "fb_cpu": fb_cpu * 1e3,
                         "mem": mem, "pairs_per_s": pairs / fwd, "device": device, "tile_pairs": pairs}
        del on_device, weights
        if device == "cuda":
            torch.cuda.empty_cache()
    out_mb = (channels + 1) * args.width * args.height * 4 / MB
    print(f"\nscene: {n} Gaussians, {args.width}x{args.height} (WxH), C={channels}, "
          f"{pairs / 1e6:.1f} M tile pairs ({box_pairs / 1e6:.1f} M with 3-sigma squares), output image {out_mb:.1f} MB")
    print(f"{'backend':<8} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd cpu ms':>11} {'f+b cpu ms':>11} "
          f"{'peak extra MB':>14} {'G pairs/s fwd':>14}")
    for name, r in results.items():
        mem = "n/a" if r["mem"] is None else f"{r['mem']:.1f}"
        print(f"{name:<8} {r['fwd']:>9.1f} {r['fb']:>11.1f} {r['fwd_cpu']:>11.1f} {r['fb_cpu']:>11.1f} "
              f"{mem:>14} {r['pairs_per_s'] / 1e9:>14.3f}")
    return results


BUSY_LOOP = "while True: pass"


def start_busy_processes(n: int) -> list[subprocess.Popen]:
    """n Python processes spinning on a CPU each (they inherit this process's niceness)."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


def stop_processes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def bench_contention(args) -> None:
    """Forward+backward of the C++ backend (C=3) quiet, then with one busy process per CPU."""
    fn = load_backends(["cpu"]).get("cpu")
    if fn is None:
        raise UserError("--contention needs the C++ backend (it could not be built or loaded here)")
    size = (args.width, args.height)
    n = int_list(args.gaussians, "--gaussians")[0]
    scene = make_scene(n, args.width, args.height, 3)
    g = torch.Generator().manual_seed(SEED + 1)
    weights = (torch.randn(3, args.height, args.width, generator=g), torch.randn(1, args.height, args.width, generator=g))
    quiet, quiet_cpu = time_forward_backward(fn, scene, size, "cpu", args.repeats, weights)
    n_busy = os.cpu_count() or 1
    busy = start_busy_processes(n_busy)
    try:
        time.sleep(0.5)  # let them get going
        loaded, loaded_cpu = time_forward_backward(fn, scene, size, "cpu", args.repeats, weights)
    finally:
        stop_processes(busy)
    print(f"\ncontention: C++ backend forward+backward, {n} Gaussians, C=3, {args.threads} threads, OpenMP wait policy "
          f"{omp_wait_policy()}")
    print(f"  quiet:               {quiet * 1e3:8.1f} ms wall  {quiet_cpu * 1e3:8.1f} ms cpu")
    print(f"  {n_busy} busy processes:    {loaded * 1e3:8.1f} ms wall  {loaded_cpu * 1e3:8.1f} ms cpu")
    print(f"  contended / quiet:   {loaded / quiet:8.2f}x (target <= 2x)")


def int_list(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers (e.g. ``50000,1000000``), or a one-line error."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers, e.g. 3,19") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} {text!r}: expected one or more integers >= 1")
    return values


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="torch,cpu,gsplat", help="comma-separated subset of torch,cpu,gsplat")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto: where the torch backend runs")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (torch and OpenMP)")
    ap.add_argument("--gaussians", default=str(DEFAULT_GAUSSIANS),
                    help="comma-separated scene sizes, e.g. 50000,1000000")
    ap.add_argument("--channels", default=",".join(map(str, CHANNEL_SETS)),
                    help="comma-separated channel counts C (3 = RGB, 19 = RGB + 16 features)")
    ap.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    ap.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    ap.add_argument("--contention", action="store_true",
                    help="time the C++ backend quiet and with one busy process per CPU (started here)")
    ap.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    return ap


def print_summary(backends, per_scene: dict, sizes: list[int], channel_sets: list[int]) -> None:
    """C ratios per backend and torch / cpu speed-ups, for each scene size."""
    c_lo, c_hi = channel_sets[0], channel_sets[-1]
    print("\nsummary (forward+backward):")
    for n in sizes:
        for name in backends:
            if c_hi != c_lo:
                ratio = per_scene[n, c_hi][name]["fb"] / per_scene[n, c_lo][name]["fb"]
                print(f"  N={n} {name}: C={c_hi} / C={c_lo} cost ratio {ratio:.2f}")
        if "torch" in backends and "cpu" in backends:
            for c in channel_sets:
                r = per_scene[n, c]
                print(f"  N={n} C={c}: torch / cpu speed-up: forward {r['torch']['fwd'] / r['cpu']['fwd']:.1f}x, "
                      f"forward+backward {r['torch']['fb'] / r['cpu']['fb']:.1f}x")


def json_rows(per_scene: dict) -> list[dict]:
    """One flat record per (scene size, channel count, backend)."""
    rows = []
    for (n, c), results in per_scene.items():
        for name, r in results.items():
            rows.append({"backend": name, "device": r["device"], "gaussians": n, "channels": c,
                         "fwd_ms": r["fwd"], "fb_ms": r["fb"], "fwd_cpu_ms": r["fwd_cpu"], "fb_cpu_ms": r["fb_cpu"],
                         "peak_extra_mb": r["mem"], "tile_pairs": r["tile_pairs"], "pairs_per_s": r["pairs_per_s"]})
    return rows


def main() -> None:
    args = build_parser().parse_args()
    if args.repeats < 1 or args.threads < 1:
        raise UserError("--repeats and --threads must be >= 1")
    args.device = pick_device(args.device).type
    sizes = int_list(args.gaussians, "--gaussians")
    channel_sets = int_list(args.channels, "--channels")
    torch.set_num_threads(args.threads)
    if args.contention:
        bench_contention(args)
        return
    backends = load_backends([b.strip() for b in args.backends.split(",") if b.strip()])
    if not backends:
        raise UserError(f"--backends {args.backends}: none of them is available here")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"threads: {torch.get_num_threads()}, repeats: {args.repeats} (+1 warm-up), medians reported; "
          f"load average at start: {load} on {os.cpu_count()} CPUs (other jobs inflate wall times); GPU: {gpu}")
    per_scene = {(n, c): bench_scene(backends, n, c, args) for n in sizes for c in channel_sets}
    print_summary(backends, per_scene, sizes, channel_sets)
    if args.json:
        write_json(args.json, {"gpu": gpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "width": args.width, "height": args.height, "repeats": args.repeats,
                               "rows": json_rows(per_scene)})


if __name__ == "__main__":
    run_cli(main)
