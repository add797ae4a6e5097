#!/usr/bin/env python
"""Training iterations per second on the synthetic scenes, per rendering backend.

    python benchmarks/bench_train.py [--backends cpu torch] [--iterations 200] [--scene blender|endonerf]
           [--feature_dims 0 16 64] [--threads 2] [--device auto|cpu|cuda] [--perceptual] [--json OUT.json]
    python benchmarks/bench_train.py --device cuda --backends gsplat torch --scene endonerf --feature_dims 0 16 \
           --perceptual --perceptual_model dinov2_vits14 --perceptual_resolution 224 --profile 30

Runs train.py's training loop for a fixed number of iterations (densification on, as
in a real run) and prints iterations/s and ms/iteration per backend and feature
dimension, the cost of the feature channels relative to D = 0, the test PSNR after
the last iteration, on CUDA the peak GPU memory (torch.cuda.max_memory_allocated), and
the process CPU time per iteration (steadier than the wall time on a shared machine).
A requested backend that cannot run here is skipped with a note, never replaced.
``--profile K`` then profiles K more iterations of the first backend (torch.profiler)
and prints the time of the render stages (projection, SH, compositing) and the top ops.

``--scene c3vd`` trains the real EndoNeRF sample (``../shared/data/endonerf_c3vd_first20
--config arguments/endonerf/pulling.py --identity_poses -r 2``, 40 iterations by default)
and prints the median s/iteration, the peak RSS and the ratio to the 0.36 s/iteration
recorded in the README before issue 12. ``--contention`` repeats every run with one busy
process per CPU (started and stopped here) and prints the slowdown against the quiet run.

    python benchmarks/bench_train.py --scene c3vd --backends cpu [--contention] [--profile 5]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))
import utils.omp_policy  # noqa: E402,F401  (before torch)

import torch  # noqa: E402

import gaussian_renderer  # noqa: E402
import train  # noqa: E402
from bench_rasterizer import load_backends, start_busy_processes, stop_processes  # noqa: E402
from scene.synthetic_blender import make_synthetic_blender  # noqa: E402
from scene.synthetic_endonerf import make_synthetic_endonerf  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.io_utils import write_json  # noqa: E402
from utils.system_utils import pick_device  # noqa: E402

MB = 1024.0 * 1024.0
TIMING_WARMUP = 10  # iterations left out of the timing (when there are more than twice as many)
PROFILE_TOP_OPS = 15
PROFILE_SKIP = 10  # --profile: iterations run before the profiled ones (allocator and kernel warm-up)
RENDER_STAGES = ("project_gaussians", "eval_sh", "get_backend")  # gaussian_renderer names wrapped by --profile
DEFAULT_ITERATIONS = {"blender": 200, "endonerf": 200, "c3vd": 40}
C3VD_SCENE = ROOT.parent / "shared" / "data" / "endonerf_c3vd_first20"
C3VD_ARGS = ["--config", str(ROOT / "arguments" / "endonerf" / "pulling.py"), "--identity_poses", "-r", "2"]
RECORDED_C3VD_S_PER_IT = 0.36  # README, before issue 12 (median of iterations 6-40, quiet machine)


DEFAULT_SIZES = {"blender": (80, 80), "endonerf": (80, 64)}  # the synthetic scenes' WxH (the demo's sizes)


def make_scene(kind: str, root: Path, size: tuple[int, int] | None = None) -> Path:
    width, height = size or DEFAULT_SIZES[kind]
    if kind == "blender":
        return make_synthetic_blender(root / "blender", n_train=24, n_test=4, width=width, height=height, seed=0)
    return make_synthetic_endonerf(root / "endo", n_frames=24, width=width, height=height, seed=0)


def train_args(scene: Path, out: Path, backend: str, device: str, iterations: int, feature_dim: int,
               extra: list[str] = (), score: bool = True) -> list[str]:
    """train.py flags of one run; ``score``: render the test views once, after the last iteration."""
    args = ["-s", str(scene), "-m", str(out), "--backend", backend, "--device", device, "--iterations", str(iterations),
            "--test_iterations", str(iterations if score else -1), "--save_iterations", str(iterations),
            "--densify_from_iter", "50", "--densification_interval", "50", "--quiet", "--eval", "--overwrite"]
    if feature_dim:
        args += ["--feature_dim", str(feature_dim)]
    return args + list(extra)


@contextlib.contextmanager
def on_each_render(hook):
    """Call ``hook()`` at the start of every render train.py makes (training and test views)."""
    orig = train.render

    def render(*a, **k):
        hook()
        return orig(*a, **k)

    train.render = render
    try:
        yield
    finally:
        train.render = orig


def untimed_iterations(iterations: int) -> int:
    """How many first iterations time_training leaves out: TIMING_WARMUP, unless the run is too short."""
    return TIMING_WARMUP if iterations > 2 * TIMING_WARMUP else 0


def time_training(args: list[str], iterations: int, device: str) -> dict:
    """Run train.main(args): seconds per iteration, test PSNR and peak GPU memory (None on the CPU).

    Scene loading, the first TIMING_WARMUP iterations (lazy CUDA / kernel loading) and the
    final test render are excluded: each training iteration renders once, so the time runs
    from the render of iteration TIMING_WARMUP + 1 to that of the last iteration.
    ``cpu_s_per_it`` is the CPU time of this process (all threads) over the same span: on a
    shared machine it varies less with the other jobs than the wall time.
    """
    stamps, cpu_stamps = [], []
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with on_each_render(lambda: (stamps.append(time.perf_counter()), cpu_stamps.append(time.process_time()))):
        metrics = train.main(args)
    first = untimed_iterations(iterations)
    spans, cpu_spans = stamps[first:iterations], cpu_stamps[first:iterations]
    steps = [b - a for a, b in zip(spans, spans[1:])] or [0.0]
    return {"s_per_it": (spans[-1] - spans[0]) / max(len(spans) - 1, 1),
            "cpu_s_per_it": (cpu_spans[-1] - cpu_spans[0]) / max(len(cpu_spans) - 1, 1),
            "median_s_per_it": statistics.median(steps),
            "test_psnr": metrics.get("test", {}).get("psnr"),
            "num_gaussians": metrics.get("num_gaussians"),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / MB if cuda else None}


def contended(run):
    """run() with one busy process per CPU alongside (they inherit this process's niceness)."""
    busy = start_busy_processes(os.cpu_count() or 1)
    try:
        time.sleep(0.5)
        return run()
    finally:
        stop_processes(busy)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_c3vd(a, backend: str, tmp: Path) -> None:
    """The c3vd sample at -r 2 with the pulling config: median s/iteration, peak RSS, ratio to the README."""
    if not (C3VD_SCENE / "poses_bounds.npy").exists():
        raise UserError(f"--scene c3vd: the sample is not at {C3VD_SCENE} (expected ../shared/data/endonerf_c3vd_first20)")

    def c3vd_args(tag: str, iterations: int) -> list[str]:
        return ["-s", str(C3VD_SCENE), "-m", str(tmp / f"c3vd_{tag}"), *C3VD_ARGS, "--backend", backend,
                "--device", a.device, "--iterations", str(iterations), "--test_iterations", "-1",
                "--save_iterations", str(iterations), "--quiet"]

    def run(tag: str) -> dict:
        return time_training(c3vd_args(tag, a.iterations), a.iterations, a.device)

    timed = run("quiet")
    quiet = timed["median_s_per_it"]
    print(f"\nc3vd sample, -r 2, pulling config, backend {backend}, {a.iterations} iterations "
          f"(first {untimed_iterations(a.iterations)} not timed), {a.threads} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"  median {quiet:.3f} s/iteration (process CPU time {timed['cpu_s_per_it']:.3f} s/iteration), "
          f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"  vs README before issue 12 ({RECORDED_C3VD_S_PER_IT} s/iteration): "
          f"{quiet / RECORDED_C3VD_S_PER_IT:.2f}x (target <= 0.33x)")
    if a.contention:
        busy = contended(lambda: run("busy"))["median_s_per_it"]
        print(f"  with {os.cpu_count()} busy processes: {busy:.3f} s/iteration, {busy / quiet:.2f}x quiet (target <= 2x)")
    if a.profile:
        print_profile(profile_training(lambda n: c3vd_args("profile", n), a.device, a.profile), a.profile, backend)


def extract_features(scene: Path, out: Path, model: str, resolution: int) -> Path:
    """Random-weight DINO features for the perceptual loss (speed does not depend on the weights)."""
    import extract_dino_features

    if not out.exists():
        extract_dino_features.main(["--image_dir", str(scene / "images"), "--output_dir", str(out), "--model", model,
                                    "--resolution", str(resolution), "--random_init"])
    return out


def profile_training(make_args, device: str, iterations: int) -> dict:
    """Profile ``iterations`` training iterations after PROFILE_SKIP warm-up ones.

    ``make_args(n)``: train.py's flags for a run of n iterations.

    Returns {"stages": {name: per-call times}, "table": top ops as text}. The forward render
    stages are labelled by wrapping gaussian_renderer's projection, SH and compositing
    functions; backward ops appear under their own names in the op table.
    """
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    originals = {name: getattr(gaussian_renderer, name) for name in RENDER_STAGES}

    def labelled(name, fn):
        def run(*a, **k):
            with record_function(f"stage/{name}"):
                return fn(*a, **k)
        return run

    def get_backend(*a, **k):  # a backend's own fused projection / SH are labelled like the torch ones
        be = originals["get_backend"](*a, **k)
        wrap = lambda name, fn: None if fn is None else labelled(name, fn)  # noqa: E731
        return dataclasses.replace(be, rasterize=labelled("composite", be.rasterize), project=wrap("project", be.project),
                                   sh_to_color=wrap("sh", be.sh_to_color))

    done = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    plan = schedule(wait=PROFILE_SKIP, warmup=1, active=iterations, repeat=1)
    args = make_args(PROFILE_SKIP + iterations + 2)
    gaussian_renderer.project_gaussians = labelled("project", originals["project_gaussians"])
    gaussian_renderer.eval_sh = labelled("sh", originals["eval_sh"])
    gaussian_renderer.get_backend = get_backend
    try:
        with profile(activities=activities, schedule=plan, on_trace_ready=lambda p: done.update(ev=p.key_averages())) as prof:
            with on_each_render(prof.step):
                train.main(args)
    finally:
        for name, fn in originals.items():
            setattr(gaussian_renderer, name, fn)
    events = done["ev"]
    stages = {}
    for ev in events:
        if ev.key.startswith("stage/"):
            dev_us = ev.device_time_total
            stages[ev.key[len("stage/"):]] = {"calls": ev.count, "cpu_ms_per_call": ev.cpu_time_total / ev.count / 1e3,
                                              "device_ms_per_call": dev_us / ev.count / 1e3}
    sort_key = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    return {"stages": stages, "table": events.table(sort_by=sort_key, row_limit=PROFILE_TOP_OPS)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=["cpu", "torch"])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (train.py --device)")
    ap.add_argument("--iterations", type=int, default=None,
                    help=f"default: {', '.join(f'{k} {v}' for k, v in DEFAULT_ITERATIONS.items())}")
    ap.add_argument("--scene", choices=list(DEFAULT_ITERATIONS), default="blender")
    ap.add_argument("--contention", action="store_true",
                    help="repeat every run with one busy process per CPU and print the slowdown")
    ap.add_argument("--size", default=None, metavar="WxH", help="image size of the synthetic scenes "
                    f"(default: {', '.join(f'{k} {w}x{h}' for k, (w, h) in DEFAULT_SIZES.items())})")
    ap.add_argument("--feature_dims", nargs="+", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--perceptual", action="store_true",
                    help="also time the DINO perceptual loss (random weights, every iteration)")
    ap.add_argument("--perceptual_model", default="dino_vits16", help="DINO model of the perceptual loss")
    ap.add_argument("--perceptual_resolution", type=int, default=128, help="its ViT input long side in pixels")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="then profile K iterations of the first backend (plain, D = first of --feature_dims)")
    ap.add_argument("--json", default=None, help="also write the rows (and the profile) to this JSON file")
    return ap


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'640x512' -> (640, 512); None stays None."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text}: expected WIDTHxHEIGHT, e.g. 640x512") from None
    if w < 8 or h < 8:
        raise UserError(f"--size {text}: both sides must be at least 8 pixels")
    return w, h


def print_header(a) -> None:
    size = "x".join(map(str, parse_size(a.size) or DEFAULT_SIZES.get(a.scene, ())))
    print(f"\nscene={a.scene} {size}  iterations={a.iterations} (first {untimed_iterations(a.iterations)} not timed)  "
          f"threads={a.threads}  device={a.device}")
    print(f"{'backend':12s} {'D':>4s} {'it/s':>8s} {'ms/it':>8s} {'vs plain':>9s} {'test PSNR':>10s} {'peak GPU MB':>12s} "
          f"{'CPU ms/it':>10s}")


def print_row(r: dict) -> None:
    mem = "n/a" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}"
    psnr = "n/a" if r["test_psnr"] is None else f"{r['test_psnr']:.2f}"
    print(f"{r['backend']:12s} {r['feature_dim']:4d} {r['it_per_s']:8.2f} {r['ms_per_it']:8.1f} "
          f"{r['vs_plain']:9.2f} {psnr:>10s} {mem:>12s} {r['cpu_s_per_it'] * 1e3:10.1f}", flush=True)


def print_profile(profiled: dict, iterations: int, backend: str) -> None:
    print(f"\nprofile: {iterations} iterations, backend {backend}; forward render stages (ms per call):")
    for name, st in profiled["stages"].items():
        print(f"  {name:10s} cpu {st['cpu_ms_per_call']:8.3f}  device {st['device_ms_per_call']:8.3f}  "
              f"({st['calls']} calls)")
    print(profiled["table"])


def main() -> None:
    a = build_parser().parse_args()
    a.iterations = a.iterations or DEFAULT_ITERATIONS[a.scene]
    if a.iterations < 2 or a.threads < 1 or a.profile < 0:
        raise UserError("--iterations must be >= 2, --threads >= 1 and --profile >= 0")
    a.device = pick_device(a.device).type
    torch.set_num_threads(a.threads)
    backends = list(load_backends(a.backends))
    if not backends:
        raise UserError(f"--backends {' '.join(a.backends)}: none of them is available here")
    size = parse_size(a.size)  # checked before any work
    report = {"scene": a.scene, "size": list(size or DEFAULT_SIZES.get(a.scene, ())), "iterations": a.iterations, "threads": a.threads, "device": a.device,
              "gpu": torch.cuda.get_device_name() if a.device == "cuda" else None, "torch": torch.__version__,
              "perceptual": f"{a.perceptual_model}@{a.perceptual_resolution}" if a.perceptual else None,
              "rows": [], "profile": None}
    if a.scene == "c3vd":
        with tempfile.TemporaryDirectory() as tmp:
            bench_c3vd(a, backends[0], Path(tmp))
        return

    def save() -> None:  # after every row: a later failure keeps what was measured
        if a.json:
            write_json(a.json, report)

    print_header(a)
    with tempfile.TemporaryDirectory() as tmp:
        scene = make_scene(a.scene, Path(tmp), parse_size(a.size))
        for backend in backends:
            base = None
            configs = [(backend, d, False) for d in a.feature_dims] + [(backend + "+perc", 0, True)] * a.perceptual
            for label, d, perceptual in configs:
                extra = []
                if perceptual:  # features made once, after the plain rows are safe
                    feats = extract_features(scene, Path(tmp) / "dino", a.perceptual_model, a.perceptual_resolution)
                    extra = ["--dino_feature_dir", str(feats), "--dino_random_init", "--lambda_perceptual", "0.1"]
                args = train_args(scene, Path(tmp) / f"out_{label}_{d}", backend, a.device, a.iterations, d, extra)
                r = time_training(args, a.iterations, a.device)
                base = base or r["s_per_it"]
                report["rows"].append({"backend": label, "feature_dim": d, "it_per_s": 1.0 / r["s_per_it"],
                                       "ms_per_it": r["s_per_it"] * 1e3, "vs_plain": r["s_per_it"] / base, **r})
                print_row(report["rows"][-1])
                save()
                if a.contention:  # vs_plain of a +busy row: slowdown against the quiet run above
                    busy = contended(lambda: time_training(args[:3] + [args[3] + "_busy"] + args[4:], a.iterations,
                                                           a.device))
                    report["rows"].append({"backend": label + "+busy", "feature_dim": d,
                                           "it_per_s": 1.0 / busy["s_per_it"], "ms_per_it": busy["s_per_it"] * 1e3,
                                           "vs_plain": busy["s_per_it"] / r["s_per_it"], **busy})
                    print_row(report["rows"][-1])
                    save()
        if a.profile:
            report["profile"] = profile_training(
                lambda n: train_args(scene, Path(tmp) / "out_profile", backends[0], a.device, n, a.feature_dims[0],
                                     score=False), a.device, a.profile)
            print_profile(report["profile"], a.profile, backends[0])
            save()


if __name__ == "__main__":
    run_cli(main)
