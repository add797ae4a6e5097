"""render.py / metrics.py / cluster.py on a model folder written by graphdeco-inria's train.py.

Graphdeco's ``cfg_args`` is ``str(Namespace(...))`` of its ModelParams only (data_device='cuda',
depths='', train_test_exp=False, none of our keys), and its PLY has only the standard 3DGS columns
(no semantic_*/deform_*). Both are written here by hand in that format, not with our writers.
"""
from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

import metrics
import render
from scene.synthetic_blender import make_synthetic_blender
from tests.cli_helpers import assert_one_line_error, run_script

ITERATION = 30_000


def _graphdeco_ply(path, n: int, seed: int) -> None:
    """Graphdeco's PLY layout: x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2 rot_0..3 (float32)."""
    rng = np.random.default_rng(seed)
    names = ["x", "y", "z", "nx", "ny", "nz", *(f"f_dc_{i}" for i in range(3)), *(f"f_rest_{i}" for i in range(45)),
             "opacity", *(f"scale_{i}" for i in range(3)), *(f"rot_{i}" for i in range(4))]
    cols = {name: np.zeros(n, np.float32) for name in names}
    xyz = rng.uniform(-0.6, 0.6, (n, 3))
    for i, axis in enumerate("xyz"):
        cols[axis] = xyz[:, i]
        cols[f"f_dc_{i}"] = rng.normal(0, 1, n)
        cols[f"scale_{i}"] = np.full(n, np.log(0.05))
    cols["opacity"] = np.full(n, 2.0)
    cols["rot_0"] = np.ones(n)
    data = np.empty(n, dtype=[(name, "f4") for name in names])
    for name in names:
        data[name] = cols[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))


@pytest.fixture(scope="module")
def graphdeco_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphdeco")
    scene = make_synthetic_blender(root / "scene", n_train=3, n_test=2, width=24, height=24, seed=0)
    model = root / "model"
    model.mkdir()
    saved = Namespace(data_device="cuda", depths="", eval=True, images="images", model_path="./output/8f3e2b1c-a",
                      resolution=-1, sh_degree=3, source_path=str(scene), train_test_exp=False, white_background=False)
    (model / "cfg_args").write_text(str(saved))  # exactly what graphdeco's train.py writes
    _graphdeco_ply(model / "point_cloud" / f"iteration_{ITERATION}" / "point_cloud.ply", 300, seed=1)
    return model


def test_render_and_metrics_on_a_graphdeco_model(graphdeco_model):
    render.main(["-m", str(graphdeco_model), "--quiet"])
    for split, n in (("train", 3), ("test", 2)):
        renders = sorted((graphdeco_model / split / f"ours_{ITERATION}" / "renders").glob("*.png"))
        assert len(renders) == n
    results = metrics.main(["-m", str(graphdeco_model), "--quiet"])[str(graphdeco_model)][f"ours_{ITERATION}"]
    assert 5 < results["PSNR"] < 60  # real renders of the random Gaussians, not blank or identical images
    assert json.loads((graphdeco_model / "results.json").read_text())[f"ours_{ITERATION}"] == results


def test_render_reads_graphdeco_keys_and_ignores_its_model_path(graphdeco_model):
    (model,) = [g for g in render.parse(render.GROUPS, ["-m", str(graphdeco_model)], "t", from_model=True)
                if type(g).__name__ == "ModelParams"]
    assert model.model_path == str(graphdeco_model)  # the folder given, not the path graphdeco trained into
    assert model.data_device == "cuda" and model.depths == "" and not model.train_test_exp and model.eval


def test_cluster_on_a_graphdeco_model_says_it_has_no_features(graphdeco_model):
    proc = run_script("cluster.py", "-m", graphdeco_model, "--quiet")
    assert_one_line_error(proc, "per-Gaussian features")


def test_render_with_train_test_exp_needs_the_exposures(graphdeco_model):
    from utils.errors import UserError

    with pytest.raises(UserError, match="--train_test_exp: .*exposure.json not found; the model was trained without"):
        render.main(["-m", str(graphdeco_model), "--quiet", "--train_test_exp"])
