"""Every flag of graphdeco-inria/gaussian-splatting's current command lines, with graphdeco's default, is accepted.

The lists below are graphdeco's train.py / render.py / metrics.py / convert.py flags (its
``arguments/__init__.py`` groups plus each script's own ``add_argument`` calls, 74 in all). Each is
parsed by our script's parser with graphdeco's default value (boolean flags are typed as given), and
the parsed value must equal what was typed. convert.py's ``-s`` is required there (no default).
"""
from __future__ import annotations

import pytest
import torch

import cluster
import convert
import metrics
import render
import train
from arguments import parse
from arguments.config import make_parser

# graphdeco's arguments/__init__.py: ModelParams, PipelineParams, OptimizationParams (flag -> default)
MODEL = {"sh_degree": 3, "source_path": "", "model_path": "", "images": "images", "depths": "", "resolution": -1,
         "white_background": False, "train_test_exp": False, "data_device": "cuda", "eval": False}
PIPELINE = {"convert_SHs_python": False, "compute_cov3D_python": False, "debug": False, "antialiasing": False}
OPTIMIZATION = {
    "iterations": 30_000, "position_lr_init": 0.00016, "position_lr_final": 0.0000016, "position_lr_delay_mult": 0.01,
    "position_lr_max_steps": 30_000, "feature_lr": 0.0025, "opacity_lr": 0.025, "scaling_lr": 0.005, "rotation_lr": 0.001,
    "exposure_lr_init": 0.01, "exposure_lr_final": 0.001, "exposure_lr_delay_steps": 0, "exposure_lr_delay_mult": 0.0,
    "percent_dense": 0.01, "lambda_dssim": 0.2, "densification_interval": 100, "opacity_reset_interval": 3000,
    "densify_from_iter": 500, "densify_until_iter": 15_000, "densify_grad_threshold": 0.0002,
    "depth_l1_weight_init": 1.0, "depth_l1_weight_final": 0.01, "random_background": False, "optimizer_type": "default"}
TRAIN = {"ip": "127.0.0.1", "port": 6009, "debug_from": -1, "detect_anomaly": False, "test_iterations": [7000, 30000],
         "save_iterations": [7000, 30000], "quiet": False, "disable_viewer": False, "checkpoint_iterations": [],
         "start_checkpoint": None}
RENDER = {"iteration": -1, "skip_train": False, "skip_test": False, "quiet": False}
METRICS = {"model_paths": []}
CONVERT = {"no_gpu": False, "skip_matching": False, "source_path": "scene", "camera": "OPENCV", "colmap_executable": "",
           "resize": False, "magick_executable": ""}

SCRIPTS = {
    "train.py": (train.GROUPS, {**MODEL, **PIPELINE, **OPTIMIZATION, **TRAIN}),
    "render.py": (render.GROUPS, {**MODEL, **PIPELINE, **RENDER}),
    "metrics.py": ((metrics.MetricsParams,), METRICS),
    "convert.py": ((convert.ConvertParams,), CONVERT),
}
VIEWER_FLAGS = {"ip", "port", "disable_viewer"}  # added with the viewer (viewer/ package), not here
# a typed value that stands for graphdeco's default where argparse cannot spell it (None, an empty list)
UNSPELLABLE = {"start_checkpoint": "", "checkpoint_iterations": []}

# flags graphdeco requires (no default): typed in every case of that script
REQUIRED = {"convert.py": ["-s", "scene"]}

CASES = [(script, flag, default) for script, (_, flags) in SCRIPTS.items() for flag, default in flags.items()]


def test_the_list_is_graphdecos_74_flags():
    assert len(CASES) == 74


def _argv(flag, default):
    if isinstance(default, bool):
        return [f"--{flag}"] if default is False else []
    if isinstance(default, list):
        return [f"--{flag}", *map(str, default)] if default else []
    if default is None:
        return []
    return [f"--{flag}", str(default)]


@pytest.mark.parametrize("script, flag, default", CASES, ids=[f"{s}:{f}" for s, f, _ in CASES])
def test_graphdeco_flag_is_accepted_with_its_default(script, flag, default):
    groups, _ = SCRIPTS[script]
    if flag in VIEWER_FLAGS and f"--{flag}" not in make_parser("x", groups).format_help():
        pytest.skip(f"--{flag} is provided by the viewer (viewer/ package), not merged into this branch")
    argv = REQUIRED.get(script, []) + _argv(flag, default)
    parsed = {k: v for g in parse(groups, argv, "test") for k, v in g.as_dict().items()}
    assert flag in parsed, f"{script} has no --{flag}"
    expected = True if default is False else UNSPELLABLE.get(flag, default)
    assert parsed[flag] == expected


def test_python_sh_and_covariance_flags_say_we_compute_them_in_pytorch():
    text = " ".join(make_parser("x", train.GROUPS).format_help().split())
    assert "SH -> RGB is always computed in PyTorch" in text
    assert "3D covariances are always computed in PyTorch" in text


def test_cluster_takes_the_loading_and_pipeline_flags_too():
    parsed = {k: v for g in parse(cluster.GROUPS, ["-m", "x", "--convert_SHs_python", "-d", ""], "t") for k, v in g.as_dict().items()}
    assert parsed["convert_SHs_python"] and parsed["depths"] == ""


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from scene.synthetic_blender import make_synthetic_blender

    return make_synthetic_blender(tmp_path_factory.mktemp("syn") / "scene", n_train=4, n_test=1, width=24, height=24, seed=0)


def _record_render(monkeypatch) -> list[tuple[bool, bool]]:
    """Patch train.render to log (pipe.debug, autograd anomaly mode) at each training render."""
    calls: list[tuple[bool, bool]] = []
    real = train.render

    def spy(cam, gaussians, pipe, bg, *a, **kw):
        if torch.is_grad_enabled():
            calls.append((pipe.debug, torch.is_anomaly_enabled()))
        return real(cam, gaussians, pipe, bg, *a, **kw)

    monkeypatch.setattr(train, "render", spy)
    return calls


@pytest.mark.parametrize("extra, expected", [
    (["--debug_from", "2"], [(False, False)] * 2 + [(True, True)] * 3),  # graphdeco: on from iteration N+1
    (["--debug_from", "0"], [(True, True)] * 5),
    (["--detect_anomaly"], [(False, True)] * 5),
    ([], [(False, False)] * 5),
])
def test_debug_from_and_detect_anomaly(tiny_scene, tmp_path, monkeypatch, extra, expected):
    calls = _record_render(monkeypatch)
    train.main(["-s", str(tiny_scene), "-m", str(tmp_path / "m"), "--iterations", "5", "--test_iterations", "-1",
                "--quiet", *extra])
    assert calls == expected
