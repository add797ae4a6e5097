"""The DINO perceptual term inside train.py: gradients reach the Gaussians, 0 is a no-op, stored GT is used."""
from __future__ import annotations

import pytest
import torch

import extract_dino_features
import train
from scene.gaussian_model import GaussianModel
from scene.synthetic_blender import make_synthetic_blender
from utils import train_losses


@pytest.fixture(scope="module")
def scene_and_features(tmp_path_factory):
    root = tmp_path_factory.mktemp("perc")
    scene = make_synthetic_blender(root / "scene", n_train=6, n_test=2, width=48, height=48, seed=0)
    extract_dino_features.main(["--image_dir", str(scene / "images"), "--output_dir", str(root / "dino"),
                                "--model", "dino_vits16", "--resolution", "64", "--random_init"])
    return scene, root / "dino"


def _run(scene, out, extra):
    train.main(["-s", str(scene), "-m", str(out), "--iterations", "20", "--test_iterations", "-1",
                "--save_iterations", "20", "--densify_from_iter", "5", "--densification_interval", "5", "--quiet", *extra])
    m = GaussianModel()
    m.load_ply(out / "point_cloud/iteration_20/point_cloud.ply")
    return m


def test_lambda_zero_is_bit_identical(scene_and_features, tmp_path):
    scene, feats = scene_and_features
    a = _run(scene, tmp_path / "a", [])
    b = _run(scene, tmp_path / "b", ["--dino_feature_dir", str(feats), "--lambda_perceptual", "0", "--dino_random_init"])
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k]), k


def test_perceptual_term_moves_gaussians_and_never_reruns_gt(scene_and_features, tmp_path, monkeypatch):
    scene, feats = scene_and_features
    made = []
    orig_init = train_losses.TrainingLosses.__init__

    def spy(self, *a, **k):
        orig_init(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(train_losses.TrainingLosses, "__init__", spy)
    grads = {}
    orig_perc = train_losses.TrainingLosses.perceptual

    def perc(self, cam, image):
        loss = orig_perc(self, cam, image)
        g = torch.autograd.grad(loss, image, retain_graph=True)[0]
        grads.setdefault("img", []).append(float(g.abs().sum()))
        return loss

    monkeypatch.setattr(train_losses.TrainingLosses, "perceptual", perc)
    base = _run(scene, tmp_path / "base", [])
    with_p = _run(scene, tmp_path / "p", ["--dino_feature_dir", str(feats), "--lambda_perceptual", "1.0",
                                          "--dino_random_init", "--perceptual_every", "2"])
    assert made[-1].store.gt_extractor_calls == 0
    assert len(grads["img"]) == 10 and min(grads["img"]) > 0
    assert not torch.equal(base.params["xyz"], with_p.params["xyz"])
