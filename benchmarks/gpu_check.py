#!/usr/bin/env python
"""One-command check of the GPU path: gsplat backend tests, training and compositing timings.

    bash benchmarks/gpu_check.sh                       # on a CUDA machine (<= ~8 minutes)
    WHEEL_DIR=.whl bash benchmarks/gpu_check.sh        # install missing packages from local wheels first
    bash benchmarks/gpu_check.sh --fetch_wheels .whl   # on a machine with network: download those wheels
    bash benchmarks/gpu_check.sh --smoke --out /tmp/x  # CPU, tiny sizes: checks this script's plumbing only

Steps (each a subprocess with its own time limit, all inside --budget_s): build gsplat's
CUDA kernels (and, beside it, the C++ CPU rasterizer for the CPU baseline), run
tests/test_gsplat_backend.py, then benchmarks/bench_train.py and bench_rasterizer.py
on the GPU, the CPU baseline (2 threads) and bench_perceptual.py. It prints a summary
and writes summary.md, summary.json and gpu_check.log to --out ($OUT if set, else
benchmarks/gpu_results/). Figures measured in --smoke mode are CPU figures at toy sizes.

Exit status: 0 = every step ran and passed, or no CUDA GPU is visible (one line
"skipped: no CUDA GPU ..."); 1 = a step failed or ran out of time (the summary is still
written); 2 = a bad flag or a setup problem (one "error:" line).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

from gpu_steps import STEPS, last_line, run_steps, sizes  # noqa: E402
from gpu_summary import render_summary  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.io_utils import write_json, write_text  # noqa: E402

SKIP_LINE = "skipped: no CUDA GPU"
DEFAULT_CUDA_HOME = "/usr/local/cuda"
DEFAULT_BUDGET_S = 480  # the whole check, issue 16: <= 8 minutes on one GPU
MIN_STEP_S = 20  # a step that would get less than this is not started ('no time')
WHEEL_PACKAGES = ("gsplat", "plyfile")  # what the GPU image lacks (versions: this environment's)
REQUIRED_MODULES = ("gsplat", "plyfile", "timm", "scipy", "sklearn", "cv2", "tqdm")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


class Runner:
    """Runs the steps' subprocesses inside one deadline, teeing their output to the log."""

    def __init__(self, args, env: dict, log_path: Path, json_dir: Path):
        self.args, self.env, self.log_path, self.json_dir = args, env, log_path, json_dir
        self.deadline = time.monotonic() + args.budget_s
        self.steps: list[dict] = []
        self.data: dict = {}
        self.log = open(log_path, "a", buffering=1)

    def emit(self, text: str, always: bool = False) -> None:
        self.log.write(text)
        if always or not self.args.quiet:
            sys.stdout.write(text)
            sys.stdout.flush()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, cmd: list[str], limit_s: float) -> tuple[int | None, str]:
        """Run ``cmd`` in ROOT for at most ``limit_s`` seconds; (exit code, or None on timeout; its output)."""
        return self.run_together([cmd], limit_s)[0]

    def run_together(self, cmds: list[list[str]], limit_s: float) -> list[tuple[int | None, str]]:
        """Run ``cmds`` side by side in ROOT, all stopped at ``limit_s`` seconds; one (code, output) each.

        Output lines are teed to the log (prefixed ``[k]`` when several run).
        """
        deadline = time.monotonic() + max(1.0, limit_s)
        procs, outputs, readers = [], [], []
        for k, cmd in enumerate(cmds):
            tag = f"[{k}] " if len(cmds) > 1 else ""
            self.emit(f"{tag}$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", start_new_session=True)
            chunks: list[str] = []

            def pump(proc=proc, chunks=chunks, tag=tag):
                for line in proc.stdout:
                    chunks.append(line)
                    self.emit(tag + line)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            procs.append(proc), outputs.append(chunks), readers.append(reader)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                codes.append(None)
        for reader in readers:
            reader.join(timeout=10)
        return [(code, "".join(chunks)) for code, chunks in zip(codes, outputs)]

    def step(self, name: str, budget_s: float, body) -> None:
        """Run ``body(limit_s) -> (status, note)`` unless deselected or out of time; record the outcome."""
        record = {"step": name, "status": "skipped", "seconds": 0.0, "note": ""}
        limit = min(budget_s, self.remaining())
        if name not in self.args.steps:
            record["note"] = "not selected (--steps)"
        elif limit < MIN_STEP_S:
            record["status"], record["note"] = "no time", f"out of time (--budget_s {self.args.budget_s:.0f})"
        else:
            self.emit(f"\n=== {name} (limit {limit:.0f} s, {self.remaining():.0f} s left)\n", always=True)
            t0 = time.monotonic()
            try:
                record["status"], record["note"] = body(limit)
            except Exception as exc:  # a broken step must not lose the other steps' figures
                record["status"], record["note"] = "failed", f"{type(exc).__name__}: {exc}"
            record["seconds"] = round(time.monotonic() - t0, 1)
        self.steps.append(record)
        self.emit(f"--- {name}: {record['status']} {record['note']}\n", always=True)

    def bench(self, key: str, script: str, flags: list[str], limit_s: float) -> tuple[str, str]:
        """Run a benchmark script with ``--json``; keep its JSON under ``key``."""
        path = self.json_dir / f"{key}.json"
        rc, out = self.run([sys.executable, f"benchmarks/{script}", *flags, "--json", str(path)], limit_s)
        if path.exists():  # also after a failure: the scripts save what they measured as they go
            self.data[key] = json.loads(path.read_text())
        if rc is None:
            return "timeout", f"stopped after {limit_s:.0f} s"
        if rc != 0 or not path.exists():
            return "failed", f"exit {rc}: {last_line(out)}"
        return "ok", ""


def cuda_env(env: dict) -> dict:
    """CUDA_HOME, TORCH_CUDA_ARCH_LIST and MAX_JOBS for gsplat's JIT build, unless already set."""
    import torch

    env = dict(env)
    if "CUDA_HOME" not in env:  # torch guesses it from nvcc's folder, which can miss the headers
        nvcc = shutil.which("nvcc")
        if Path(DEFAULT_CUDA_HOME, "bin", "nvcc").exists():
            env["CUDA_HOME"] = DEFAULT_CUDA_HOME
        elif nvcc:
            env["CUDA_HOME"] = str(Path(nvcc).resolve().parents[1])
    if "TORCH_CUDA_ARCH_LIST" not in env:
        major, minor = torch.cuda.get_device_capability()
        env["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    return env


def install_wheels(wheel_dir: Path, env: dict, site: Path) -> dict:
    """pip-install every wheel of ``wheel_dir`` (no index, no dependencies) into ``site``; prepend it to PYTHONPATH."""
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        raise UserError(f"--wheel_dir / WHEEL_DIR {wheel_dir}: no .whl files there; "
                        f"make them with: bash benchmarks/gpu_check.sh --fetch_wheels {wheel_dir}")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--upgrade", "--target", str(site), *map(str, wheels)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise UserError(f"--wheel_dir {wheel_dir}: pip could not install its wheels ({last_line(res.stderr)})")
    sys.path.insert(0, str(site))
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


def check_modules(env: dict, smoke: bool) -> None:
    """Every module the steps import must load in the children's environment."""
    modules = [m for m in REQUIRED_MODULES if not (smoke and m == "gsplat")]
    code = ("import importlib, sys\nmissing = []\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n"
            "    except Exception:\n        missing.append(m)\nprint(' '.join(missing))")
    res = subprocess.run([sys.executable, "-c", code, *modules], cwd=ROOT, env=env, capture_output=True, text=True)
    missing = res.stdout.split()
    if res.returncode != 0 or missing:
        raise UserError(f"python {sys.executable} cannot import {', '.join(missing) or 'its modules'}; carry them as "
                        f"wheels: bash benchmarks/gpu_check.sh --fetch_wheels .whl (where pip can download), "
                        f"then WHEEL_DIR=.whl bash benchmarks/gpu_check.sh")


def fetch_wheels(dest: Path, python_version: str) -> None:
    """Download this environment's versions of WHEEL_PACKAGES for the GPU machine (x86-64 Linux)."""
    pins = []
    for name in WHEEL_PACKAGES:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"--fetch_wheels: {name} is not installed here, so its version is unknown; "
                            f"pip install -r requirements.txt first") from None
    platforms = [f for p in WHEEL_PLATFORMS for f in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", *platforms, "-d", str(dest), *pins]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"--fetch_wheels {dest}: pip download failed (see above); it needs network access")
    print(f"wheels in {dest}: {', '.join(sorted(p.name for p in dest.glob('*.whl')))}")


def gpu_facts(smoke: bool) -> dict:
    """What the figures were measured on."""
    import torch

    facts = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "smoke": smoke, "cpus": os.cpu_count(),
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    for name in WHEEL_PACKAGES:
        try:
            facts[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            facts[name] = None
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name()
        facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        if shutil.which("nvidia-smi"):
            res = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True)
            facts["driver"] = res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else None
    else:
        facts["gpu"] = None
    return facts


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default: $OUT if set, else benchmarks/gpu_results)")
    ap.add_argument("--wheel_dir", default=os.environ.get("WHEEL_DIR"),
                    help="install the wheels of this folder first (default: $WHEEL_DIR)")
    ap.add_argument("--budget_s", type=float, default=DEFAULT_BUDGET_S, help="time for all steps together")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--iterations", type=int, default=None, help="training iterations per run (default 300)")
    ap.add_argument("--smoke", action="store_true", help="no GPU needed: every step on the CPU at toy sizes")
    ap.add_argument("--fetch_wheels", default=None, metavar="DIR", help="only download the wheels into DIR, then exit")
    ap.add_argument("--python_version", default="3.12", help="--fetch_wheels: Python version of the GPU machine")
    ap.add_argument("--quiet", action="store_true", help="print only step headers and the summary")
    return ap


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise UserError(f"--steps {args.steps}: unknown step(s) {', '.join(unknown) or '(none given)'}; "
                        f"choose from {','.join(STEPS)}")
    args.steps = steps
    if args.budget_s <= 0 or (args.iterations is not None and args.iterations < 2):
        raise UserError("--budget_s must be > 0 and --iterations >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fetch_wheels:
        fetch_wheels(Path(args.fetch_wheels), args.python_version)
        return 0
    try:
        import torch
    except ImportError:
        raise UserError(f"python {sys.executable} has no torch; run with PYTHON=/path/to/python "
                        f"bash benchmarks/gpu_check.sh") from None
    if not args.smoke and not torch.cuda.is_available():
        print(f"{SKIP_LINE} (torch {torch.__version__}: torch.cuda.is_available() is False); nothing was run. "
              f"Run this on a machine with an NVIDIA GPU, or --smoke for a CPU plumbing check.")
        return 0
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "gpu_results")
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    if args.wheel_dir:
        env = install_wheels(Path(args.wheel_dir), env, Path(tempfile.gettempdir()) / "gs_gpu_check_site")
    check_modules(env, args.smoke)
    if not args.smoke:
        env = cuda_env(env)
    (out / "gpu_check.log").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as json_dir:
        runner = Runner(args, env, out / "gpu_check.log", Path(json_dir))
        facts = gpu_facts(args.smoke)
        facts.update({k: env.get(k) for k in ("CUDA_HOME", "TORCH_CUDA_ARCH_LIST")})
        facts["command"] = " ".join(["bash benchmarks/gpu_check.sh", *(sys.argv[1:] if argv is None else argv)])
        run_steps(runner, sizes(args.smoke), args)
        summary = {"facts": facts, "steps": runner.steps, "results": runner.data}
        text = render_summary(summary)
        write_json(out / "summary.json", summary)
        write_text(out / "summary.md", text)
        runner.emit("\n" + text + f"\nwritten: {out / 'summary.md'}, summary.json, gpu_check.log\n", always=True)
        runner.log.close()
    return 0 if all(s["status"] in ("ok", "skipped") for s in runner.steps) else 1


if __name__ == "__main__":
    run_cli(lambda: sys.exit(main()))
