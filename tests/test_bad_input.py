"""Bad input fed to the real scripts: exit 2, one ``error:`` line naming the file or flag, no traceback.

Families of issue "Trust every result" handled by the configuration layer and the model folder:
B divergence and numeric ranges, D structure of our own files, E writing, F messages that blame the
right thing, G stale or inconsistent outputs, H file modes. (Scene-reading families A, C, E-read and I
live in tests/test_bad_scenes.py.)
"""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

import train
from arguments import ModelParams, write_cfg_args
from scene import Scene
from scene.dataset_readers import read_scene
from scene.gaussian_model import GaussianModel
from scene.model_folder import ModelFolder
from scene.synthetic_blender import make_synthetic_blender
from tests.cli_helpers import assert_one_line_error, run_script
from tests.feature_scene import write_teacher_features
from utils.image_utils import save_image
from utils.io_utils import write_json

SIZE, N_TRAIN, N_TEST = 24, 3, 1
SAVED_ITER = 7
FEATURE_DIM = 4


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return make_synthetic_blender(tmp_path_factory.mktemp("s") / "scene", n_train=N_TRAIN, n_test=N_TEST,
                                  width=SIZE, height=SIZE, seed=0)


@pytest.fixture(scope="module")
def features(scene, tmp_path_factory) -> Path:
    return write_teacher_features(tmp_path_factory.mktemp("f") / "dino", N_TRAIN, N_TEST, SIZE)


@pytest.fixture(scope="module")
def model(scene, tmp_path_factory) -> Path:
    """An untrained model folder with per-Gaussian features (what render.py / cluster.py read)."""
    out = tmp_path_factory.mktemp("m") / "model"
    params = ModelParams.defaults().replace(source_path=str(scene), model_path=str(out), feature_dim=FEATURE_DIM, eval=True)
    gaussians = GaussianModel(params.sh_degree, FEATURE_DIM)
    Scene(params, gaussians, info=read_scene(scene, params), quiet=True)
    gaussians.params["semantic"].data = torch.randn(gaussians.num_points, FEATURE_DIM, generator=torch.Generator().manual_seed(0))
    gaussians.save_ply(ModelFolder(out).ply(SAVED_ITER))
    write_cfg_args(out, params)
    return out


@pytest.fixture
def model_copy(model, tmp_path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "model"))


@pytest.fixture(scope="module")
def checkpoint(scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("c") / "run"
    train.main(["-s", str(scene), "-m", str(out), "--iterations", "2", "--checkpoint_iterations", "2",
                "--test_iterations", "-1", "--quiet"])
    return out / "chkpnt2.pth"


def _rewrite_ply(path: Path, edit) -> None:
    """Apply ``edit(structured vertex array) -> structured array`` to a PLY in place."""
    data = PlyData.read(str(path))["vertex"].data
    PlyData([PlyElement.describe(edit(data), "vertex")]).write(str(path))


def _nan_opacity(data):
    data = data.copy()
    data["opacity"][3] = np.nan
    return data


def _drop_column(name: str):
    def edit(data):
        keep = [n for n in data.dtype.names if n != name]
        out = np.empty(len(data), dtype=[(n, "f4") for n in keep])
        for n in keep:
            out[n] = data[n]
        return out
    return edit


def _train(scene: Path, out: Path, *flags: str):
    return run_script("train.py", "-s", scene, "-m", out, "--iterations", "2", "--test_iterations", "-1", "--quiet", *flags)


# ----------------------------------------------------------------------------- B: divergence and ranges


@pytest.mark.parametrize("flags, needles", [
    (["--iterations", "0"], ["--iterations: 0 is out of range"]),
    (["--lambda_depth", "-1"], ["--lambda_depth: -1 is out of range"]),
    (["--sh_degree", "5"], ["--sh_degree: 5 is out of range; it must be >= 0 and <= 3"]),
    (["--position_lr_init", "inf"], ["--position_lr_init: inf is not a finite number"]),
    (["--perceptual_loss", "dot"], ["--perceptual_loss", "invalid choice"]),
])
def test_numeric_flags_are_checked_before_anything_loads(scene, tmp_path, flags, needles):
    proc = _train(scene, tmp_path / "out", *flags)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists()  # refused before the model folder is touched


def test_divergence_stops_training_naming_iteration_terms_and_flags(scene, tmp_path):
    proc = run_script("train.py", "-s", scene, "-m", tmp_path / "out", "--iterations", "8", "--test_iterations", "-1",
                      "--scaling_lr", "1e4", "--quiet")
    line = assert_one_line_error(proc, "iteration", "training diverged", "--scaling_lr 10000")
    assert "color" in line or "non-finite Gaussian parameters" in line
    assert "Training complete" not in proc.stdout and not (tmp_path / "out" / "point_cloud").exists()


@pytest.mark.parametrize("script", ["render.py", "cluster.py"])
def test_a_ply_with_nan_is_refused(model_copy, script):
    _rewrite_ply(ModelFolder(model_copy).ply(SAVED_ITER), _nan_opacity)
    proc = run_script(script, "-m", model_copy, "--quiet")
    assert_one_line_error(proc, "point_cloud.ply", "attribute opacity holds NaN/inf in 1 of", "vertex 3")


def test_non_finite_feature_maps_are_refused_at_load(scene, features, tmp_path):
    feats = Path(shutil.copytree(features, tmp_path / "dino"))
    name = sorted(feats.glob("*.npy"))[0]
    np.save(name, np.full_like(np.load(name), np.nan))
    proc = _train(scene, tmp_path / "out", "--dino_feature_dir", feats, "--feature_dim", "4", "--lambda_feature", "1",
                  "--iterations", str(N_TRAIN + 1))
    assert_one_line_error(proc, name.name, "NaN/inf feature values")


# ----------------------------------------------------------------------------- D: our own files


def test_cfg_args_with_a_wrong_type_names_file_and_key(model_copy):
    text = (model_copy / "cfg_args").read_text().replace("sh_degree=3", "sh_degree='3'")
    (model_copy / "cfg_args").write_text(text)
    assert_one_line_error(run_script("render.py", "-m", model_copy), "cfg_args: sh_degree: expected an integer")


def test_config_file_with_a_bad_key_or_value(scene, tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text('OptimizationParams = {"iterationz": 10}\n')
    assert_one_line_error(_train(scene, tmp_path / "o", "--config", cfg), "c.py: unknown parameter(s) iterationz")
    cfg.write_text('ModelParams = {"depth_scale": -2.0}\n')
    assert_one_line_error(_train(scene, tmp_path / "o", "--config", cfg), "c.py: depth_scale: -2 is out of range")


@pytest.mark.parametrize("edit, needle", [
    (lambda m: {**m, "layers": "11"}, "key 'layers' has the wrong type"),
    (lambda m: {**m, "channels": 0}, "key 'channels' must be a positive channel count"),
    (lambda m: {k: v for k, v in m.items() if k != "model"}, "missing key 'model'"),
    (lambda m: [m], "expected a JSON object"),
    # F: a value read from the file is blamed on the file, not on a flag the user never typed
    (lambda m: {**m, "layers": [40]}, "key 'layers' 40: vit_small_patch16_224.dino has blocks 0..11"),
])
def test_features_meta_json_structure(scene, features, tmp_path, edit, needle):
    feats = Path(shutil.copytree(features, tmp_path / "dino"))
    meta = feats / "features_meta.json"
    write_json(meta, edit(json.loads(meta.read_text())))
    proc = _train(scene, tmp_path / "out", "--dino_feature_dir", feats, "--lambda_perceptual", "0.1")
    assert_one_line_error(proc, "features_meta.json", needle)


@pytest.mark.parametrize("content, needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"version": 1, "model": "\xff"}', "JSON is not UTF-8 text"),
])
def test_hostile_json_is_one_line(scene, features, tmp_path, content, needle):
    feats = Path(shutil.copytree(features, tmp_path / "dino"))
    (feats / "features_meta.json").write_bytes(content)
    proc = _train(scene, tmp_path / "out", "--dino_feature_dir", feats, "--lambda_perceptual", "0.1")
    assert_one_line_error(proc, "features_meta.json", needle)


def test_a_checkpoint_of_the_wrong_structure(scene, tmp_path):
    bad = tmp_path / "chkpnt5.pth"
    torch.save({"model": {}, "iteration": 5}, bad)
    assert_one_line_error(_train(scene, tmp_path / "o", "--start_checkpoint", bad), "chkpnt5.pth", "lacks 'sampler'")


def _xyz_moments(model: dict) -> dict:
    xyz = next(g["params"][0] for g in model["optimizer"]["param_groups"] if g["name"] == "xyz")
    return model["optimizer"]["state"][xyz]


def _nan_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    t = t.clone()
    t[:rows] = float("nan")
    return t


@pytest.mark.parametrize("edit, needle", [
    (lambda m: _xyz_moments(m).update(exp_avg=torch.zeros(5, 3)), "group xyz: exp_avg has shape (5, 3)"),
    (lambda m: _xyz_moments(m).update(exp_avg_sq=_nan_rows(_xyz_moments(m)["exp_avg_sq"], 1)),
     "group xyz: exp_avg_sq holds NaN or inf"),
    (lambda m: _xyz_moments(m).update(exp_avg_sq=-_xyz_moments(m)["exp_avg_sq"] - 1),
     "group xyz: exp_avg_sq is negative"),
    (lambda m: m["params"].update(xyz=_nan_rows(m["params"]["xyz"], 3)),
     "saved Gaussian parameters hold NaN or inf: xyz (3 Gaussians)"),
])
def test_a_checkpoint_that_cannot_be_resumed(scene, checkpoint, tmp_path, edit, needle):
    state = torch.load(checkpoint, weights_only=True)
    edit(state["model"])
    bad = tmp_path / "chkpnt2.pth"
    torch.save(state, bad)
    proc = _train(scene, tmp_path / "o", "--start_checkpoint", bad, "--iterations", "4")
    assert_one_line_error(proc, "chkpnt2.pth", needle, "cannot be resumed")


def test_mask_source_json_and_missing_masks(model_copy):
    method = ModelFolder(model_copy).renders_dir("test", SAVED_ITER)
    for sub in ("renders", "gt", "masks"):
        save_image(method / sub / "00000.png", np.full((8, 8, 3), 200, np.uint8))
    (method / "mask_source.json").write_text('["tool"]')
    assert_one_line_error(run_script("metrics.py", "-m", model_copy), "mask_source.json: expected a JSON object")
    (method / "mask_source.json").write_text('{"mask": "masks/"}')
    save_image(method / "renders" / "00001.png", np.full((8, 8, 3), 200, np.uint8))
    save_image(method / "gt" / "00001.png", np.full((8, 8, 3), 200, np.uint8))
    assert_one_line_error(run_script("metrics.py", "-m", model_copy), "masks/00001.png: mask of", "is missing")


def test_ply_with_inconsistent_extra_columns(model_copy):
    _rewrite_ply(ModelFolder(model_copy).ply(SAVED_ITER), _drop_column("semantic_1"))
    assert_one_line_error(run_script("render.py", "-m", model_copy), "point_cloud.ply", "semantic_1 is missing")


# ----------------------------------------------------------------------------- E: writing


def test_model_path_that_is_a_file(scene, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    assert_one_line_error(_train(scene, tmp_path / "out"), "-m/--model_path", "is an existing file")


def test_model_path_that_cannot_be_written(scene):
    # /sys refuses new folders even to root (CI runs as root, so chmod alone would not do)
    assert_one_line_error(_train(scene, Path("/sys/gs_no_write/out")), "-m/--model_path", "cannot write")


# ----------------------------------------------------------------------------- F: the right culprit


def test_depth_scale_zero_blames_the_flag_not_the_folder(scene, tmp_path):
    assert_one_line_error(_train(scene, tmp_path / "o", "--depth_scale", "0"), "--depth_scale: 0 is out of range")


def test_cfg_args_missing_keys_take_defaults(model_copy):
    (model_copy / "cfg_args").write_text(f"Namespace(source_path={str(read_source(model_copy))!r}, sh_degree=3, eval=True)")
    proc = run_script("render.py", "-m", model_copy, "--quiet", "--skip_train")
    assert proc.returncode == 0, proc.stderr
    assert (ModelFolder(model_copy).renders_dir("test", SAVED_ITER) / "renders" / "00000.png").is_file()


def read_source(model_dir: Path) -> str:
    from arguments import read_cfg_args

    return read_cfg_args(model_dir)["source_path"]


# ----------------------------------------------------------------------------- G: stale or mixed outputs


def test_a_folder_with_another_run_needs_overwrite_or_resume(scene, tmp_path):
    out = tmp_path / "out"
    first = _train(scene, out)
    assert first.returncode == 0 and first.stderr == "", first.stderr  # --quiet: no bar at all
    assert_one_line_error(_train(scene, out), "holds an earlier run (iterations 2)", "--overwrite")
    stale = out / "test" / "ours_999"
    stale.mkdir(parents=True)
    again = _train(scene, out, "--overwrite")
    assert again.returncode == 0, again.stderr
    assert not stale.exists() and ModelFolder(out).saved_iterations() == [2]


@pytest.mark.parametrize("flags, needle", [
    (["--iterations", "2"], "--iterations 2: the checkpoint"),
    (["--iterations", "4", "--sh_degree", "1"], "--sh_degree 1: the checkpoint"),
    (["--iterations", "4", "--feature_dim", "3"], "--feature_dim 3: the checkpoint"),
])
def test_resume_must_match_the_checkpoint(scene, checkpoint, tmp_path, flags, needle):
    out = Path(shutil.copytree(checkpoint.parent, tmp_path / "run"))
    cfg_before = (out / "cfg_args").read_text()
    proc = run_script("train.py", "-s", scene, "-m", out, "--start_checkpoint", out / checkpoint.name,
                      "--test_iterations", "-1", "--quiet", *flags)
    assert_one_line_error(proc, needle, "is already at iteration 2" if "iterations" in needle else "was trained with")
    assert (out / "cfg_args").read_text() == cfg_before  # cfg_args never disagrees with the model


def test_cluster_leaves_no_files_of_an_earlier_run(model_copy):
    for k in ("3", "2"):
        proc = run_script("cluster.py", "-m", model_copy, "--k", k, "--no_render", "--quiet", "--min_opacity", "0")
        assert proc.returncode == 0, proc.stderr
    clusters = ModelFolder(model_copy).clusters_dir
    assert sorted(p.name for p in clusters.glob("cluster_*.ply")) == ["cluster_00.ply", "cluster_01.ply"]
    assert json.loads((clusters / "summary.json").read_text())["num_clusters"] == 2


def test_negative_max_views_is_refused(model_copy):
    assert_one_line_error(run_script("cluster.py", "-m", model_copy, "--max_views", "-1"), "--max_views: -1 is out of range")


# ----------------------------------------------------------------------------- H: file modes


def test_written_files_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_cfg_args(tmp_path, ModelParams.defaults())
    finally:
        os.umask(old)
    for name in ("a.json", "cfg_args"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name
