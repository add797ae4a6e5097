"""benchmarks/gpu_check.sh (issue 16) on a machine without a GPU: it skips cleanly, its flags parse,
the benchmark scripts' new flags work at toy sizes, and --smoke runs its plumbing end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import SCRIPT_TIMEOUT_S, assert_one_line_error, run_script
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_summary  # noqa: E402

NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


def run_check(*args: str, env: dict | None = None, timeout: int = SCRIPT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``bash benchmarks/gpu_check.sh args...`` with this interpreter and no visible GPU."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **NO_GPU, **(env or {})}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_without_a_gpu_it_says_skipped_exits_0_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    proc = run_check(env={"OUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipped: no CUDA GPU"), proc.stdout
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("script,flags", [
    ("benchmarks/gpu_check.py", ["--wheel_dir", "--budget_s", "--steps", "--smoke", "--fetch_wheels"]),
    ("benchmarks/bench_rasterizer.py", ["--device", "--gaussians", "--channels", "--json"]),
    ("benchmarks/bench_train.py", ["--device", "--perceptual_model", "--profile", "--json"]),
    ("benchmarks/bench_perceptual.py", ["--device", "--json"]),
])
def test_help_lists_the_flags_the_gpu_check_uses(script, flags):
    proc = run_script(script, "--help", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    for flag in flags:
        assert flag in proc.stdout, f"{script} --help lacks {flag}"


@pytest.mark.parametrize("args,needles", [
    (["--steps", "build,nope"], ["--steps", "nope"]),
    (["--wheel_dir", "no_such_wheel_dir", "--smoke"], ["no_such_wheel_dir", "--fetch_wheels"]),
])
def test_bad_flags_give_one_error_line(args, needles, tmp_path):
    assert_one_line_error(run_check(*args, "--out", str(tmp_path)), *needles)


def test_bench_rasterizer_gaussians_channels_and_json_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    proc = run_script("benchmarks/bench_rasterizer.py", "--backends", "torch", "--device", "cpu", "--gaussians", "40,60",
                      "--channels", "1,4", "--width", "24", "--height", "16", "--repeats", "1", "--threads", "1",
                      "--json", out)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["gaussians"], r["channels"]) for r in rows) == [(40, 1), (40, 4), (60, 1), (60, 4)]
    assert all(r["backend"] == "torch" and r["device"] == "cpu" and r["fb_ms"] > 0 for r in rows)
    assert_one_line_error(run_script("benchmarks/bench_rasterizer.py", "--channels", "3,x"), "--channels", "3,x")


def _train(backend: str, d: int, ms: float) -> dict:
    return {"backend": backend, "feature_dim": d, "ms_per_it": ms}


@pytest.mark.parametrize("gpu_ms,feat_ms,verdicts", [
    (1.0, 1.2, ["yes", "yes"]),  # 25x faster than the CPU, features 1.2x
    (2.5, 3.5, ["NO", "NO"]),  # 10x, 1.4x
])
def test_targets_compare_the_measured_figures(gpu_ms, feat_ms, verdicts):
    results = {"fast_backend": "gsplat", "tests": {"passed": 10, "failed": 0, "skipped": 0, "errors": 0},
               "train_endonerf": {"rows": [_train("gsplat", 0, gpu_ms), _train("gsplat", 16, feat_ms)]},
               "cpu_baseline": {"rows": [_train("cpu", 0, 25.0)]}}
    table = gpu_summary.targets(results, smoke=False).splitlines()[4:]
    assert table[0].endswith("| yes |")
    assert [row.rsplit("|", 2)[-2].strip() for row in table[1:]] == verdicts
    missing = gpu_summary.targets({"fast_backend": "gsplat"}, smoke=False)
    assert missing.count("not checked") == 3


@pytest.mark.slow
def test_smoke_run_measures_and_summarises_on_the_cpu(tmp_path):
    proc = run_check("--smoke", "--quiet", "--steps", "train_endonerf", "--iterations", "3", "--out", str(tmp_path),
                     timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert status.pop("train_endonerf") == "ok" and set(status.values()) == {"skipped"}
    labels = {(r["backend"], r["feature_dim"]) for r in summary["results"]["train_endonerf"]["rows"]}
    assert labels == {("cpu", 0), ("cpu", 16), ("cpu+perc", 0)}
    assert set(summary["results"]["train_endonerf"]["profile"]["stages"]) == {"project", "sh", "composite"}
    md = (tmp_path / "summary.md").read_text()
    assert "SMOKE RUN" in md and md.count("(smoke: not a GPU figure)") == 1  # the feature-channel target
    assert (tmp_path / "gpu_check.log").stat().st_size > 0
