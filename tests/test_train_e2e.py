"""End to end on the synthetic Blender scene: train on the CPU, render, score; resume is exact."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import metrics
import render
import train
from scene.gaussian_model import GaussianModel
from scene.synthetic_blender import make_synthetic_blender
from tests.conftest import ROOT
from utils.errors import UserError

FAST = ["--densify_from_iter", "100", "--densification_interval", "100", "--opacity_reset_interval", "100000",
        "--sh_increase_interval", "200", "--position_lr_max_steps", "{its}", "--quiet"]


def _flags(its: int) -> list[str]:
    return [f.replace("{its}", str(its)) for f in FAST]


@pytest.fixture(scope="module")
def blender_scene(tmp_path_factory):
    return make_synthetic_blender(tmp_path_factory.mktemp("syn") / "scene", n_train=24, n_test=4, width=64, height=64, seed=0)


@pytest.mark.slow
def test_train_render_metrics_reach_28db(blender_scene, tmp_path):
    out = tmp_path / "model"
    its = 1500
    m = train.main(["-s", str(blender_scene), "-m", str(out), "--eval", "--iterations", str(its),
                    "--test_iterations", "1", str(its), "--save_iterations", str(its), "--densify_until_iter", "1000", *_flags(its)])
    assert m["test"]["psnr"] >= 28.0, m
    for name in ("cfg_args", "cameras.json", "input.ply", f"point_cloud/iteration_{its}/point_cloud.ply"):
        assert (out / name).exists(), name
    render.main(["-m", str(out), "--quiet"])
    for split, n in (("train", 24), ("test", 4)):
        for kind in ("renders", "gt", "depth"):
            assert len(list((out / split / f"ours_{its}" / kind).glob("*.png"))) == n
    res = metrics.main(["-m", str(out), "--quiet"])[str(out)][f"ours_{its}"]
    assert res["PSNR"] >= 28.0
    assert json.loads((out / "per_view.json").read_text())[f"ours_{its}"]["PSNR"].keys() == {f"{i:05d}.png" for i in range(4)}


def test_resume_from_checkpoint_is_identical(blender_scene, tmp_path):
    common = ["-s", str(blender_scene), "--eval", "--iterations", "60", "--densify_from_iter", "10",
              "--densification_interval", "20", "--densify_until_iter", "50", "--test_iterations", "60",
              "--save_iterations", "60", "-r", "2", "--quiet", "--sh_increase_interval", "25"]
    full, part = tmp_path / "full", tmp_path / "part"
    train.main(common + ["-m", str(full)])
    train.main(common + ["-m", str(part), "--checkpoint_iterations", "30", "--iterations", "30"])
    train.main(common + ["-m", str(part), "--start_checkpoint", str(part / "chkpnt30.pth")])
    a, b = GaussianModel(), GaussianModel()
    a.load_ply(full / "point_cloud/iteration_60/point_cloud.ply")
    b.load_ply(part / "point_cloud/iteration_60/point_cloud.ply")
    assert a.num_points == b.num_points
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-s", "{tmp}/missing"], "scene folder not found"),
        (["-s", "{tmp}/empty"], "unknown scene format"),
        (["-s", "{wide}", "-r", "3"], "would make this"),
        (["-s", "{scene}", "--start_checkpoint", "{tmp}/nope.pth"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_line_error(blender_scene, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    if "{wide}" in args:  # 64x8 images: -r 3 (a target width of 3 px) would make them 3x0
        make_synthetic_blender(tmp_path / "wide", n_train=2, n_test=0, width=64, height=8, seed=0)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{scene}", str(blender_scene)).replace("{wide}", str(tmp_path / "wide"))
            for a in args]
    res = subprocess.run([sys.executable, "train.py", *args, "-m", str(tmp_path / "o"), "--iterations", "1", "--quiet"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    lines = [l for l in res.stderr.strip().splitlines() if "error:" in l]  # a progress bar may share the line
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_render_requires_trained_model(tmp_path):
    res = subprocess.run([sys.executable, "render.py", "-m", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "cfg_args" in res.stderr and "Traceback" not in res.stderr


def test_real_colmap_scene_trains_and_improves(tmp_path):
    """../shared/data/colmap_bartoszek at -r 8: test PSNR after a short run beats the initial point cloud's."""
    from tests.conftest import shared_scene

    scene = shared_scene("colmap_bartoszek")
    seen = {}
    orig = train.evaluate

    def record(cams, fn):  # train.py evaluates the test views first, then a few training views
        res = orig(cams, fn)
        seen.setdefault("psnr", []).append(res["psnr"])
        return res

    train.evaluate = record
    try:
        train.main(["-s", str(scene), "-m", str(tmp_path / "b"), "-r", "8", "--eval", "--iterations", "200",
                    "--test_iterations", "1", "200", "--save_iterations", "200", "--densify_from_iter", "50",
                    "--densification_interval", "50", "--quiet"])
    finally:
        train.evaluate = orig
    first, last = seen["psnr"][0], seen["psnr"][2]
    print(f"bartoszek -r 8 test PSNR: {first:.2f} -> {last:.2f} dB")
    assert last > first + 1.0


def test_debug_flag_stops_at_the_first_non_finite_tensor(tmp_path):
    scene = make_synthetic_blender(tmp_path / "scene", n_train=4, n_test=1, width=32, height=32, seed=0)
    base = ["-s", str(scene), "--iterations", "5", "--test_iterations", "5", "--save_iterations", "5", "--quiet"]
    train.main(base + ["-m", str(tmp_path / "clean"), "--debug"])  # every check on, nothing diverges
    # a scaling learning rate this large makes exp(scale) overflow after the first step
    with pytest.raises(UserError, match=r"--debug: render\(\): conics has non-finite values .* \(camera 'r_\d+'\)"):
        train.main(base + ["-m", str(tmp_path / "diverged"), "--debug", "--scaling_lr", "1e4"])
    # without --debug the same run stops at the first non-finite loss or parameter, naming the flag
    with pytest.raises(UserError, match=r"iteration \d+: .*training diverged; check --scaling_lr 10000"):
        train.main(base + ["-m", str(tmp_path / "plain"), "--scaling_lr", "1e4"])
    assert not (tmp_path / "plain" / "point_cloud").exists()


def test_progress_bar_shows_loss_and_training_psnr_and_quiet_silences_it(blender_scene, tmp_path, capfd):
    common = ["-s", str(blender_scene), "--iterations", "12", "-r", "4", "--test_iterations", "-1", "--save_iterations", "12"]
    train.main(common + ["-m", str(tmp_path / "shown")])
    err = capfd.readouterr().err
    bar = [line for line in err.replace("\r", "\n").splitlines() if "Training" in line and "psnr=" in line]
    assert bar, err  # the training PSNR is measured on the logged iterations (10 and the last)
    assert np.isfinite(float(bar[-1].split("psnr=")[1].split(",")[0].rstrip("]"))) and "loss=" in bar[-1]
    train.main(common + ["-m", str(tmp_path / "quiet"), "--quiet"])
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""
