"""Commands of the repositories this project grew from: cluster.py --save_path, the DINO extractor's aliases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cluster
import extract_dino_features as extract
from arguments import ModelParams, parse, write_cfg_args
from arguments.config import make_parser, param
from scene import Scene
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel
from scene.model_folder import ModelFolder
from scene.synthetic_blender import make_synthetic_blender
from utils.errors import UserError

SAVED_ITER, FEATURE_DIM = 5, 4


@pytest.fixture(scope="module")
def feature_model(tmp_path_factory):
    """An untrained model folder with random per-Gaussian features."""
    root = tmp_path_factory.mktemp("m")
    scene = make_synthetic_blender(root / "scene", n_train=2, n_test=1, width=16, height=16, seed=0)
    params = ModelParams.defaults().replace(source_path=str(scene), model_path=str(root / "model"), feature_dim=FEATURE_DIM)
    gaussians = GaussianModel(params.sh_degree, FEATURE_DIM)
    Scene(params, gaussians, info=read_scene(scene, params), quiet=True)
    gaussians.params["semantic"].data = torch.randn(gaussians.num_points, FEATURE_DIM, generator=torch.Generator().manual_seed(0))
    gaussians.save_ply(ModelFolder(root / "model").ply(SAVED_ITER))
    write_cfg_args(root / "model", params)
    return root / "model"


def _cluster(model, *extra):
    return cluster.main(["-m", str(model), "--k", "2", "--min_opacity", "0", "--no_render", "--quiet", *extra])


def test_cluster_save_path_writes_there_and_not_into_the_model(feature_model, tmp_path):
    out = _cluster(feature_model, "--save_path", str(tmp_path / "segs"))
    assert out == tmp_path / "segs"
    labels = np.load(out / "labels.npy")
    assert json.loads((out / "summary.json").read_text())["num_clusters"] == 2 and set(np.unique(labels)) == {0, 1}
    assert sorted(p.name for p in out.glob("cluster_*.ply")) == ["cluster_00.ply", "cluster_01.ply"]
    assert not ModelFolder(feature_model).clusters_dir.exists()
    _cluster(feature_model, "--save_path", str(out), "--k", "3")  # an earlier clustering there is replaced
    assert len(list(out.glob("cluster_*.ply"))) == 3


def test_cluster_save_path_refuses_a_folder_of_other_files(feature_model, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--save_path .*mine: folder holds other files"):
        _cluster(feature_model, "--save_path", str(keep))
    assert (keep / "notes.txt").read_text() == "mine"


def test_dino_extractor_takes_its_parent_repos_flag_names(tmp_path):
    (tmp_path / "imgs").mkdir()
    for argv in (["--dir_images", "imgs", "--dir_dst", "out", "--model_path", "w.pth"],
                 ["--image_dir", "imgs", "--output_dir", "out", "--weights", "w.pth"]):
        (args,) = parse((extract.ExtractParams,), [str(tmp_path / a) if a in ("imgs", "out") else a for a in argv], "t")
        assert (args.image_dir, args.output_dir, args.weights) == (str(tmp_path / "imgs"), str(tmp_path / "out"), "w.pth")
    help_text = make_parser("t", (extract.ExtractParams,)).format_help()
    assert "--image_dir IMAGE_DIR, --dir_images IMAGE_DIR" in help_text and "--weights WEIGHTS, --model_path WEIGHTS" in help_text


def test_aliases_must_be_long_options():
    with pytest.raises(ValueError, match="aliases must be long options"):
        param("", "x", aliases=("-x",))
