"""full_eval.py on the built-in synthetic suite: interrupted and resumed, local vs Ray launcher, bad suites."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import SCRIPT_TIMEOUT_S, assert_one_line_error, run_script
from tests.conftest import ROOT
from utils.eval_report import CSV_KEYS, TIMING_KEYS
from utils.eval_suite import SCENES_DIR

SUITE = ROOT / "suites" / "synthetic.json"
FIRST, SECOND = "tissue", "blocks"  # the suite's scenes, in order
COMPARED = [k for k in CSV_KEYS if k not in TIMING_KEYS]  # timings and memory vary from run to run
POLL_S = 0.2


def full_eval_args(out: Path, *extra: str) -> list[str]:
    return ["--suite", str(SUITE), "--output_path", str(out), "--threads", "1", *extra]


def read_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def file_times(folder: Path) -> dict[str, int]:
    """Relative path -> mtime (ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def run_until_first_scene_done(out: Path) -> None:
    """Start full_eval.py and kill it (with its children) as soon as the first scene is finished."""
    done = out / FIRST / "full_eval" / "metrics.json"
    cmd = [sys.executable, str(ROOT / "full_eval.py"), *full_eval_args(out, "--quiet")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + SCRIPT_TIMEOUT_S
    try:
        while not done.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert done.is_file(), f"first scene never finished (exit {proc.returncode}):\n{err[-3000:]}"
    assert proc.returncode == -signal.SIGKILL, "full_eval finished before it could be interrupted"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The synthetic suite with the local launcher: killed after its first scene, then resumed to the end."""
    out = tmp_path_factory.mktemp("local")
    run_until_first_scene_done(out)
    assert not (out / "results.csv").exists()
    before = {d: file_times(out / d) for d in (FIRST, f"{SCENES_DIR}/{FIRST}")}
    proc = run_script("full_eval.py", *full_eval_args(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in ("extract", "train", "render", "metrics"):
        assert f"[{FIRST}] {step}: done before, skipped" in proc.stdout
    assert f"[{SECOND}] metrics:" in proc.stdout  # the second scene's last step ran in the resumed run
    for d, times in before.items():
        assert file_times(out / d) == times, f"{d}: files of the finished first scene were rewritten"
    return out


def test_resumed_suite_tabulates_every_scene(local_run):
    rows = read_rows(local_run)
    assert [r["run"] for r in rows] == [FIRST, SECOND]
    for r in rows:
        assert float(r["PSNR"]) > 10 and 0 < float(r["SSIM"]) <= 1, r
        assert int(r["gaussians"]) > 0 and int(r["iterations"]) == 60
        assert float(r["train_s"]) > 0 and float(r["fps"]) > 0 and float(r["peak_mib"]) > 10
    assert rows[0]["mask"].startswith("masks/") and rows[1]["mask"] == "none"  # masked EndoNeRF, unmasked Blender
    assert float(rows[0]["extract_ips"]) > 0 and rows[1]["extract_ips"] == ""  # only the tissue scene uses DINO
    md = (local_run / "results.md").read_text()
    assert "random weights" in md and "| tissue | " in md and "| mean | " in md
    assert (local_run / "results.png").stat().st_size > 1000


def test_ray_cluster_of_two_cpu_workers_gives_the_same_table(local_run, tmp_path):
    out = tmp_path / "ray"
    shutil.copytree(local_run / SCENES_DIR, out / SCENES_DIR)  # same generated scenes, generated once
    proc = run_script("full_eval.py", *full_eval_args(out, "--launcher", "ray", "--ray_cpus", "2", "--num_cpus", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    local, ray = read_rows(local_run), read_rows(out)
    assert [{k: r[k] for k in COMPARED} for r in ray] == [{k: r[k] for k in COMPARED} for r in local]
    assert "Launcher: ray" in (out / "results.md").read_text()


def _suite_with(tmp_path: Path, edit) -> Path:
    data = json.loads(SUITE.read_text())
    edit(data)
    path = tmp_path / "bad_suite.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, needles", [
    (lambda d: d["scenes"][1].update(flagz=["--eval"]), ["scenes[1] (blocks)", "unknown key 'flagz'"]),
    (lambda d: d["scenes"].__setitem__(0, {"name": "pulling", "source_path": "no_such_scene"}),
     ["scenes[0] (pulling)", "no_such_scene", "--data_root"]),
])
def test_bad_suite_names_file_and_entry_before_running(tmp_path, edit, needles):
    suite = _suite_with(tmp_path, edit)
    out = tmp_path / "out"
    proc = run_script("full_eval.py", "--suite", suite, "--output_path", out)
    assert_one_line_error(proc, str(suite), *needles)
    assert not out.exists()


def test_ray_missing_is_one_clear_line(tmp_path):
    fake = tmp_path / "no_ray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: ray is not installed')\n")
    proc = run_script("full_eval.py", "--suite", SUITE, "--output_path", tmp_path / "out", "--launcher", "ray",
                      env={"PYTHONPATH": str(fake.parent)})
    assert_one_line_error(proc, "--launcher ray", "pip install ray")
    assert not (tmp_path / "out").exists()


def test_backbone_suite_plans_one_run_per_backbone_and_tabulates_them(tmp_path):
    from utils.eval_report import markdown
    from utils.eval_suite import load_suite, plan_runs

    suite = load_suite(ROOT / "suites" / "backbones_synthetic.json")
    runs = plan_runs(suite, tmp_path, random_init=True)
    backbones = suite.data["backbones"]
    assert [r.name for r in runs] == [f"{b}/tissue" for b in backbones]
    plain = runs[0]
    assert plain.backbone == "none" and plain.extract_args is None and "--dino_feature_dir" not in plain.train_args
    for run in runs[1:]:
        assert run.extract_args[run.extract_args.index("--model") + 1] == run.backbone
        assert "--random_init" in run.extract_args and "--dino_random_init" in run.train_args
        assert run.train_args[run.train_args.index("--dino_feature_dir") + 1] == run.feature_dir
        assert "--lambda_perceptual" in run.train_args and "--lambda_feature" in run.train_args
    rows = [{"run": r.name, "scene": r.scene, "backbone": r.backbone, "PSNR": 20.0 + i, "SSIM": 0.5, "train_s": 10.0,
             "peak_mib": 100.0 * (i + 1), "extract_ips": None if i == 0 else 2.0} for i, r in enumerate(runs)]
    md = markdown(suite, rows, random_init=True, launcher="local")
    assert md.splitlines()[0].endswith("(offline: DINO backbones with random weights, --random_init)")
    section = md.split("## Per backbone")[1]
    for i, b in enumerate(backbones):
        assert f"| {b} | {20.0 + i:.2f} | 0.5000 |" in section


def test_a_step_is_done_only_with_the_same_command_and_complete_outputs(tmp_path):
    from scene.model_folder import ModelFolder
    from utils.eval_steps import stamp_path, step_command, step_done
    from utils.eval_suite import load_suite, plan_runs
    from utils.io_utils import write_json

    run = plan_runs(load_suite(SUITE), tmp_path)[1]  # the Blender scene: no extraction
    stamp = stamp_path(run, "metrics")
    write_json(stamp, {"command": ["python", *step_command(run, "metrics")], "seconds": 1.0})
    assert not step_done(run, "metrics")  # stamp but no model, no results.json
    folder = ModelFolder(run.model_path)
    folder.ply(60).parent.mkdir(parents=True)
    folder.ply(60).write_bytes(b"ply\n")
    write_json(folder.results_json(), {"ours_30": {"PSNR": 20.0}})
    assert not step_done(run, "metrics")  # results of another iteration than the latest model's
    write_json(folder.results_json(), {"ours_60": {"PSNR": 20.0}})
    assert step_done(run, "metrics")
    write_json(stamp, {"command": ["python", *step_command(run, "metrics"), "--split", "train"], "seconds": 1.0})
    assert not step_done(run, "metrics")  # the suite changed the command: run it again
