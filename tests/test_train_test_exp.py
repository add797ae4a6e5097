"""--train_test_exp: per-image affine exposure, exposure.json, test views compensated as graphdeco does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metrics
import render
import train
from scene.exposure import Exposures, apply_exposure, half_view, split_test_views
from scene.synthetic_blender import make_synthetic_blender
from utils.image_utils import read_image, save_image

ITS = 400


@pytest.fixture(scope="module")
def gained_scene(tmp_path_factory):
    """The synthetic scene whose every image (train and test) has its own per-channel gain in [0.3, 1]."""
    scene = make_synthetic_blender(tmp_path_factory.mktemp("exp") / "scene", n_train=12, n_test=4, width=32, height=32, seed=0)
    rng = np.random.default_rng(0)
    for path in sorted((scene / "images").glob("*.png")):
        img = read_image(path).astype(np.float32) / 255.0
        gain = rng.uniform(0.3, 1.0, size=3).astype(np.float32)
        save_image(path, torch.from_numpy(img[..., :3] * gain).permute(2, 0, 1))
    return scene


def test_exposure_is_graphdecos_affine_map():
    gen = torch.Generator().manual_seed(0)
    img, e = torch.rand(3, 4, 5, generator=gen), torch.rand(3, 4, generator=gen)
    ref = (img.permute(1, 2, 0) @ e[:3, :3]).permute(2, 0, 1) + e[:3, 3, None, None]  # graphdeco's formula
    torch.testing.assert_close(apply_exposure(img, e), ref)
    ex = Exposures(["a", "b"], "cpu")
    torch.testing.assert_close(ex(img, "b"), img)  # identity at the start


def test_test_views_train_on_the_left_half_and_score_on_the_right(gained_scene):
    from arguments import ModelParams
    from scene import Scene
    from scene.gaussian_model import GaussianModel

    params = ModelParams.defaults().replace(source_path=str(gained_scene), model_path=str(gained_scene.parent / "m"), eval=True)
    scene = Scene(params, GaussianModel(), quiet=True)
    train_views, test_views = split_test_views(scene.getTrainCameras(), scene.getTestCameras())
    assert len(train_views) == 16 and len(test_views) == 4
    left = train_views[-1].mask[0]
    assert left[:, :16].all() and not left[:, 16:].any()
    assert test_views[0].mask[0][:, 16:].all() and not test_views[0].mask[0][:, :16].any()
    assert half_view(test_views[0], "left").mask.sum() == 0  # halves combine with an existing mask


def test_exposure_compensation_beats_none_by_2db(gained_scene, tmp_path):
    common = ["-s", str(gained_scene), "--eval", "--iterations", str(ITS), "--test_iterations", str(ITS),
              "--save_iterations", str(ITS), "--densify_from_iter", "100", "--densify_until_iter", "300",
              "--opacity_reset_interval", "100000", "--sh_increase_interval", "200", "--position_lr_max_steps", str(ITS), "--quiet"]
    plain = train.main(common + ["-m", str(tmp_path / "plain")])["test"]["psnr"]
    out = tmp_path / "exp"
    comp = train.main(common + ["-m", str(out), "--train_test_exp"])["test"]["psnr"]  # graphdeco's exposure rates
    assert comp >= plain + 2.0, (plain, comp)
    exposure = json.loads((out / "exposure.json").read_text())
    assert len(exposure) == 16 and all(np.asarray(v).shape == (3, 4) for v in exposure.values())
    render.main(["-m", str(out), "--quiet", "--skip_train"])
    shot = read_image(next((out / "test" / f"ours_{ITS}" / "renders").glob("*.png")))
    assert shot.shape[:2] == (32, 16)  # graphdeco's crop: the right half
    scored = metrics.main(["-m", str(out), "--quiet"])[str(out)][f"ours_{ITS}"]["PSNR"]
    assert scored == pytest.approx(comp, abs=0.5)  # the script agrees with training's evaluation


def test_resume_restores_the_exposures(gained_scene, tmp_path):
    common = ["-s", str(gained_scene), "--eval", "--train_test_exp", "--iterations", "20", "--test_iterations", "-1",
              "--save_iterations", "20", "--densify_from_iter", "5", "--densification_interval", "5", "--quiet"]
    full, part = tmp_path / "full", tmp_path / "part"
    train.main(common + ["-m", str(full)])
    train.main(common + ["-m", str(part), "--checkpoint_iterations", "10"])  # same --iterations: same exposure schedule
    (part / "exposure.json").unlink()
    train.main(common + ["-m", str(part), "--start_checkpoint", str(part / "chkpnt10.pth")])
    a, b = (json.loads((m / "exposure.json").read_text()) for m in (full, part))
    assert a == b and any(np.abs(np.asarray(v) - np.eye(3, 4)).max() > 1e-4 for v in a.values())
