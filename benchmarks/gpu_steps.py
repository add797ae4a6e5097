"""The steps of benchmarks/gpu_check.py: each runs the project's own tests or benchmark scripts.

A step body takes its time limit in seconds and returns (status, note); status is one of
ok / failed / timeout / skipped. Results land in ``runner.data`` under the step's name.
"""
from __future__ import annotations

import re
import sys

STEPS = ("build", "tests", "train_endonerf", "raster", "raster_1m", "train_blender", "cpu_baseline", "extraction")
BUDGET_S = {  # per step, in order of priority; the whole run is also capped by --budget_s
    "build": 330, "tests": 90, "train_endonerf": 150, "raster": 60, "raster_1m": 60,
    "train_blender": 60, "cpu_baseline": 60, "extraction": 45,
}
GPU_TESTS = ("tests/test_gsplat_backend.py", "tests/test_antialiasing.py", "tests/test_invdepth.py")  # with CUDA cases
CPU_BASELINE_THREADS = 2  # the reference: "2 CPU cores"


def load_check(label: str, module: str, check: str) -> str:
    """Python code that loads (JIT-building on first use) a backend's kernels and prints how long it took."""
    return (f"import time; t = time.perf_counter()\n"
            f"from {module} import {check}\n"
            f"ok = {check}()\n"
            f"print(f'{label}: {{\"ok\" if ok else \"FAILED\"}} after {{time.perf_counter() - t:.0f}} s', flush=True)\n"
            f"raise SystemExit(0 if ok else 1)\n")


BUILD_GSPLAT = load_check("gsplat kernels", "gaussian_renderer.backends.gsplat_backend", "gsplat_available")
BUILD_CPU = load_check("cpu rasterizer", "gaussian_renderer.backends.cpu_backend", "extension_available")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def sizes(smoke: bool) -> dict:
    """Problem sizes of every step: the GPU run, or the --smoke run on the CPU (toy sizes, no torch training)."""
    if smoke:
        return dict(iterations=5, train_reference=False, gaussians="300", gaussians_big="1000", width=64, height=48,
                    repeats=1, profile=2, perc_model="dino_vits16", perc_res=64,
                    models=["dino_vits16"], resolutions=["64"], batches=["1"])
    return dict(iterations=300, train_reference=True, gaussians="50000", gaussians_big="1000000", width=320, height=256,
                repeats=5, profile=30, perc_model="dinov2_vits14", perc_res=224,
                models=["dinov2_vits14"], resolutions=["224", "518"], batches=["1", "4"])


def last_line(text: str) -> str:
    """The last non-blank line of a command's output (at most 300 characters)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def pytest_counts(output: str) -> dict:
    """{"passed": n, "failed": n, ...} from pytest's last summary line."""
    tail = next((ln for ln in reversed(output.splitlines()) if PYTEST_COUNT.search(ln)), "")
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for n, kind in PYTEST_COUNT.findall(tail):
        counts["errors" if kind.startswith("error") else kind] = int(n)
    return counts


def run_steps(runner, sz: dict, args) -> None:
    """Run every step in order (each inside its own limit and the overall deadline)."""
    py = sys.executable
    gpu = not args.smoke
    device = "cuda" if gpu else "cpu"
    iterations = str(args.iterations or sz["iterations"])
    threads = str(runner.env.get("MAX_JOBS", CPU_BASELINE_THREADS)) if gpu else str(CPU_BASELINE_THREADS)
    state = {"fast": "gsplat" if gpu else "cpu"}  # the fast backend; dropped when its build fails

    def backends() -> list[str]:
        return [state["fast"], "torch"] if state["fast"] else ["torch"]

    def build(limit):
        cmds = [[py, "-c", BUILD_CPU]] + ([[py, "-c", BUILD_GSPLAT]] if gpu else [])
        (rc_c, out_c), *gsplat = runner.run_together(cmds, limit)
        notes = [last_line(out_c) if rc_c is not None else "cpu rasterizer: build timed out"]
        runner.data["build"] = {"cpu": notes[0]}
        if not gpu:  # --smoke: the cpu backend is the fast one
            return ("ok" if rc_c == 0 else "failed"), notes[0]
        rc_g, out_g = gsplat[0]
        runner.data["build"]["gsplat"] = last_line(out_g)
        if rc_g != 0:
            state["fast"] = None
            why = "timed out" if rc_g is None else last_line(out_g)
            return "failed", f"gsplat kernels did not build ({why}); later steps use the torch backend only"
        return "ok", "; ".join([last_line(out_g), *notes])

    def tests(limit):
        rc, out = runner.run([py, "-m", "pytest", *GPU_TESTS, "-q", "-rs", "-p", "no:cacheprovider"],
                             limit)
        counts = runner.data["tests"] = pytest_counts(out)
        note = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        if rc is None:
            return "timeout", note
        if rc != 0:
            return "failed", note
        if gpu and counts["skipped"]:
            return "failed", note + " (on a GPU every test must run; see the skip reasons above)"
        return "ok", note

    def train(scene: str, extra: list[str]):
        def body(limit):
            names = backends() if sz["train_reference"] else backends()[:1]
            flags = ["--device", device, "--scene", scene, "--iterations", iterations, "--threads", threads,
                     "--backends", *names, *extra]
            return runner.bench(f"train_{scene}", "bench_train.py", flags, limit)
        return body

    def raster(key: str, gaussians: str, fast_only: bool):
        def body(limit):
            if fast_only and not state["fast"]:
                return "skipped", "no fast backend (the torch reference is not run at this size)"
            names = backends()[:1] if fast_only else backends()
            flags = ["--device", device, "--backends", ",".join(names), "--gaussians", gaussians, "--channels", "3,19",
                     "--width", str(sz["width"]), "--height", str(sz["height"]), "--repeats", str(sz["repeats"]),
                     "--threads", threads]
            return runner.bench(key, "bench_rasterizer.py", flags, limit)
        return body

    def cpu_baseline(limit):
        flags = ["--device", "cpu", "--backends", "cpu", "--scene", "endonerf", "--iterations", iterations,
                 "--threads", str(CPU_BASELINE_THREADS)]
        return runner.bench("cpu_baseline", "bench_train.py", flags, limit)

    def extraction(limit):
        flags = ["--device", device, "--models", *sz["models"], "--resolutions", *sz["resolutions"],
                 "--batch_sizes", *sz["batches"]]
        return runner.bench("extraction", "bench_perceptual.py", flags, limit)

    runner.step("build", BUDGET_S["build"], build)
    runner.step("tests", BUDGET_S["tests"], tests)
    runner.step("train_endonerf", BUDGET_S["train_endonerf"], train("endonerf", [
        "--feature_dims", "0", "16", "--perceptual", "--perceptual_model", sz["perc_model"],
        "--perceptual_resolution", str(sz["perc_res"]), "--profile", str(sz["profile"])]))
    runner.step("raster", BUDGET_S["raster"], raster("raster", sz["gaussians"], fast_only=False))
    runner.step("raster_1m", BUDGET_S["raster_1m"], raster("raster_1m", sz["gaussians_big"], fast_only=True))
    runner.step("train_blender", BUDGET_S["train_blender"], train("blender", []))
    runner.step("cpu_baseline", BUDGET_S["cpu_baseline"], cpu_baseline)
    runner.step("extraction", BUDGET_S["extraction"], extraction)
    runner.data["fast_backend"] = state["fast"]
