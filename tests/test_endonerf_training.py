"""EndoNeRF training: tool masks never reach the loss, deformation beats a static model, real c3vd sample runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metrics
import render
import train
from arguments import ModelParams, OptimizationParams
from scene.cameras import Camera
from scene.synthetic_endonerf import make_synthetic_endonerf
from tests.conftest import shared_scene
from utils.train_losses import TrainingLosses

ENDO_FAST = ["--densify_from_iter", "200", "--densification_interval", "100", "--opacity_reset_interval", "100000",
             "--lambda_depth", "0.2", "--quiet"]


def test_tool_pixels_never_influence_the_loss():
    dataset, opt = ModelParams.defaults(), OptimizationParams.defaults().replace(lambda_depth=1.0)
    losses = TrainingLosses(dataset, opt, None, "cpu")
    g = torch.Generator().manual_seed(0)
    H, W = 24, 32
    mask = torch.ones(1, H, W)
    mask[:, 5:15, 10:25] = 0.0  # tool
    image = torch.rand(3, H, W, generator=g)
    depth = torch.rand(1, H, W, generator=g) + 1.0
    render_img = torch.rand(3, H, W, generator=g, requires_grad=True)
    render_depth = (torch.rand(1, H, W, generator=g) + 1.0).requires_grad_(True)

    def grads(gt_img, gt_depth):
        cam = Camera.from_tensors(0, "f", W, H, torch.eye(3), torch.eye(4), gt_img, 0.0, mask, gt_depth)
        pkg = {"render": render_img, "depth": render_depth, "feature_map": None}
        loss, _ = losses(1, cam, pkg, None)
        gi, gd = torch.autograd.grad(loss, [render_img, render_depth])
        return loss.detach(), gi, gd

    base = grads(image, depth)
    tool = mask == 0
    image2, depth2 = image.clone(), depth.clone()
    image2[tool.expand_as(image2)] = torch.rand(int(tool.sum()) * 3, generator=g)
    depth2[tool] = 100.0
    other = grads(image2, depth2)
    for a, b in zip(base, other):
        assert torch.equal(a, b)
    # and the masked pixels get exactly zero gradient
    assert float(base[1][tool.expand_as(base[1])].abs().max()) == 0.0


@pytest.fixture(scope="module")
def endo_scene(tmp_path_factory):
    return make_synthetic_endonerf(tmp_path_factory.mktemp("endo") / "scene", n_frames=24, width=80, height=64, seed=0)


@pytest.mark.slow
def test_deformable_beats_static_by_3db(endo_scene, tmp_path):
    its = 1000
    psnr = {}
    for mode in ("basis", "none"):
        m = train.main(["-s", str(endo_scene), "-m", str(tmp_path / mode), "--deform", mode, "--iterations", str(its),
                        "--test_iterations", str(its), "--save_iterations", str(its), "--densify_until_iter", "700",
                        "--position_lr_max_steps", str(its), *ENDO_FAST])
        psnr[mode] = m["test"]["psnr"]
    assert psnr["basis"] >= psnr["none"] + 3.0, psnr


@pytest.mark.slow
def test_real_c3vd_sample_trains_renders_video_and_scores(tmp_path):
    scene = shared_scene("endonerf_c3vd_first20")
    out = tmp_path / "c3vd"
    its = 150
    m = train.main(["-s", str(scene), "-m", str(out), "--identity_poses", "-r", "10", "--iterations", str(its),
                    "--test_iterations", "1", str(its), "--save_iterations", str(its), "--num_init_points", "8000",
                    "--densify_until_iter", "0", *ENDO_FAST])
    assert m["test"]["psnr"] > 15.0
    render.main(["-m", str(out), "--video", "--quiet"])
    assert (out / "video" / f"ours_{its}" / "renders.mp4").stat().st_size > 1000
    res = metrics.main(["-m", str(out), "--quiet"])[str(out)][f"ours_{its}"]
    info = json.loads((out / "results_info.json").read_text())[f"ours_{its}"]
    assert info["num_views"] == 3 and "tool masks" in info["mask"]
    assert json.loads((out / "results.json").read_text())[f"ours_{its}"]["PSNR"] == pytest.approx(res["PSNR"])
