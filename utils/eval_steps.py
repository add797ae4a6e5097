"""full_eval.py's steps for one run: the real scripts as subprocesses, each step resumable.

Steps, in order: ``extract`` (extract_dino_features.py, when the run uses DINO features),
``train`` (train.py), ``render`` (render.py --skip_train), ``metrics`` (metrics.py). A step
that finished writes ``MODEL/full_eval/STEP.json`` (its command, wall time and the child's
peak resident memory); it is skipped next time if that stamp exists, names the same command
and its outputs are present. Running a step again removes the stamps of the steps after it. Each child's output
goes to ``MODEL/full_eval/STEP.log``.

Runs on the driver and in Ray workers; the scripts do the heavy work.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from utils.errors import UserError
from utils.eval_suite import ROOT, Run
from scene.model_folder import RENDER_TIMING_FILE, ModelFolder
from utils.io_utils import read_json, write_json

STEPS = ("extract", "train", "render", "metrics")
STEP_DIR = "full_eval"  # MODEL/full_eval/{STEP.json, STEP.log}
SCRIPTS = {"extract": "extract_dino_features.py", "train": "train.py", "render": "render.py", "metrics": "metrics.py"}
FEATURE_META = "features_meta.json"  # written last by extract_dino_features.py ("complete": true)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
KIB_PER_MIB = 1024  # Linux reports ru_maxrss in KiB


class StepFailed(UserError):
    """A step's script exited with an error (one line: run, step, exit code, the script's error, the log)."""


def child_env(threads: int) -> dict[str, str]:
    """Environment of the scripts: unbuffered output; ``threads`` > 0 pins the CPU thread count."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads > 0:
        env.update({var: str(threads) for var in THREAD_VARS})
    return env


def step_command(run: Run, step: str) -> list[str]:
    """Arguments after the interpreter for ``step`` of ``run``."""
    script = str(ROOT / SCRIPTS[step])
    if step == "extract":
        return [script, *run.extract_args]
    if step == "train":  # only run when not done: replaces what an interrupted run left
        return [script, *run.train_args, "--overwrite"]
    if step == "render":
        return [script, "-m", run.model_path, "--skip_train", "--quiet"]
    return [script, "-m", run.model_path, "--quiet"]


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_child(args: list[str], log: Path, env: dict[str, str], what: str) -> tuple[float, float]:
    """Run ``python args`` with output to ``log``; returns (wall seconds, the child's peak RSS in MiB).

    Peak memory is the kernel's ru_maxrss of that child (os.wait4), not an estimate.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if code != 0:
        raise StepFailed(f"{what} failed (exit {code}): {_last_error(log)} (full log: {log})")
    return seconds, usage.ru_maxrss / KIB_PER_MIB


def latest_render_dir(folder: ModelFolder) -> Path | None:
    """MODEL/test/ours_N of the latest saved iteration N (what render.py renders), or None before training."""
    its = folder.saved_iterations()
    return folder.renders_dir("test", its[-1]) if its else None


def outputs_present(run: Run, step: str) -> bool:
    """Whether ``step``'s outputs exist and are complete (checked together with its stamp)."""
    folder = ModelFolder(run.model_path)
    if step == "extract":
        meta = Path(run.feature_dir) / FEATURE_META
        return meta.is_file() and bool(read_json(meta).get("complete"))
    if step == "train":
        return bool(folder.saved_iterations())
    render_dir = latest_render_dir(folder)
    if step == "render":
        return render_dir is not None and (render_dir / RENDER_TIMING_FILE).is_file()
    return render_dir is not None and folder.results_json().is_file() and render_dir.name in read_json(folder.results_json())


def stamp_path(run: Run, step: str) -> Path:
    return Path(run.model_path) / STEP_DIR / f"{step}.json"


def step_done(run: Run, step: str) -> bool:
    """Stamp present, written by the same command (a changed suite reruns the step), outputs complete."""
    stamp = stamp_path(run, step)
    return (stamp.is_file() and read_json(stamp).get("command") == ["python", *step_command(run, step)]
            and outputs_present(run, step))


def run_steps(run: Run, skip: tuple[str, ...] = (), threads: int = 0, quiet: bool = False) -> dict:
    """Run the steps of ``run`` that are not done (nor in ``skip``); returns its table row."""
    steps = [s for s in STEPS if s != "extract" or run.extract_args is not None]
    env = child_env(threads)
    for i, step in enumerate(steps):
        if step in skip:
            continue
        if step_done(run, step):
            if not quiet:
                print(f"[{run.name}] {step}: done before, skipped", flush=True)
            continue
        for later in steps[i:]:
            stamp_path(run, later).unlink(missing_ok=True)
        args = step_command(run, step)
        log = Path(run.model_path) / STEP_DIR / f"{step}.log"
        seconds, peak_mib = run_child(args, log, env, f"{run.name}: {SCRIPTS[step]}")
        write_json(stamp_path(run, step), {"command": ["python", *args], "seconds": seconds, "peak_rss_mib": peak_mib})
        if not quiet:
            print(f"[{run.name}] {step}: {seconds:.1f} s, peak memory {peak_mib:.0f} MiB", flush=True)
    return collect_row(run)


def ply_vertex_count(path: Path) -> int | None:
    """``element vertex N`` from a PLY header (read as data), or None."""
    with open(path, "rb") as f:
        for _ in range(200):
            line = f.readline()
            if not line or line.strip() == b"end_header":
                break
            parts = line.split()
            if parts[:2] == [b"element", b"vertex"] and len(parts) == 3 and parts[2].isdigit():
                return int(parts[2])
    return None


def _stamp(run: Run, step: str) -> dict:
    path = stamp_path(run, step)
    return read_json(path) if path.is_file() else {}


def collect_row(run: Run) -> dict:
    """A run's table row from its files: metrics, timings, Gaussian count, memory (None where absent)."""
    folder = ModelFolder(run.model_path)
    row: dict = {"run": run.name, "scene": run.scene, "backbone": run.backbone}
    render_dir = latest_render_dir(folder)
    results, info = ({} if not p.is_file() else read_json(p) for p in (folder.results_json(), folder.results_info_json()))
    res = results.get(render_dir.name, {}) if render_dir else {}
    how = info.get(render_dir.name, {}) if render_dir else {}  # mask and view count live beside results.json
    row.update(PSNR=res.get("PSNR"), SSIM=res.get("SSIM"), LPIPS=res.get("LPIPS"), mask=how.get("mask"),
               test_views=how.get("num_views"))
    its = folder.saved_iterations()
    row["iterations"] = its[-1] if its else None
    row["gaussians"] = ply_vertex_count(folder.ply(its[-1])) if its else None
    train = _stamp(run, "train")
    row["train_s"], row["peak_mib"] = train.get("seconds"), train.get("peak_rss_mib")
    timing = render_dir / RENDER_TIMING_FILE if render_dir else None
    row["fps"] = read_json(timing).get("fps") if timing and timing.is_file() else None
    extract = _stamp(run, "extract")
    meta = Path(run.feature_dir) / FEATURE_META if run.feature_dir else None
    if extract and meta and meta.is_file():
        row["extract_ips"] = len(read_json(meta).get("images", {})) / max(extract["seconds"], 1e-9)
    else:
        row["extract_ips"] = None
    return row
