"""Flags, configs and cfg_args: graphdeco names/defaults, typed validation, literal-only configs, layering."""
from __future__ import annotations

import dataclasses

import pytest

import train
from arguments import ModelParams, OptimizationParams, PipelineParams, parse, read_cfg_args, write_cfg_args
from tests.conftest import ROOT
from utils.errors import UserError

GROUPS = (ModelParams, OptimizationParams, PipelineParams)


def _parse(argv, **kw):
    return parse(GROUPS, argv, "test", **kw)


def test_graphdeco_flags_and_defaults():
    d, o, p = _parse(["-s", "scene", "-m", "out", "-r", "4", "--eval", "--white_background"])
    assert d.resolution == 4 and d.eval and d.white_background and d.sh_degree == 3
    assert o.iterations == 30000 and o.position_lr_init == 0.00016 and o.densify_until_iter == 15000
    assert o.densify_grad_threshold == 0.0002 and o.lambda_dssim == 0.2 and o.opacity_reset_interval == 3000
    assert p.backend == "auto"


def test_configs_are_frozen_typed_dataclasses():
    d, *_ = _parse(["-r", "2"])
    with pytest.raises(Exception):
        d.resolution = 4  # frozen
    assert isinstance(d.resolution, int) and isinstance(OptimizationParams.defaults().lambda_dssim, float)


@pytest.mark.parametrize("argv, needle", [
    (["--sh_degree", "4"], "--sh_degree: 4 is out of range; it must be >= 0 and <= 3"),
    (["--iterations", "0"], "--iterations: 0 is out of range"),
    (["--lambda_depth", "-1"], "--lambda_depth: -1 is out of range; it must be >= 0"),
    (["--position_lr_init", "nan"], "--position_lr_init: nan is not a finite number"),
    (["--scaling_lr", "0"], "--scaling_lr: 0 is out of range; it must be > 0"),
    (["--depth_scale", "0"], "--depth_scale: 0 is out of range; it must be > 0"),
    (["--feature_dim", "-2"], "--feature_dim: -2 is out of range"),
    (["-r", "0"], "--resolution: 0 is out of range; it must be >= 1 (or -1)"),
    (["--perceptual_loss", "cos"], "argument --perceptual_loss: invalid choice: 'cos'"),
    (["--iterations", "ten"], "argument --iterations: invalid int value: 'ten'"),
    (["--no_such_flag"], "unrecognized arguments: --no_such_flag"),
    (["--lambda_perceptual", "0.1"], "--lambda_perceptual need --dino_feature_dir"),
    (["--dino_feature_dir", "/nonexistent/dino"], "--dino_feature_dir /nonexistent/dino: folder not found"),
])
def test_bad_values_are_refused_when_parsing(argv, needle):
    with pytest.raises(UserError) as info:
        _parse(argv)
    assert needle in str(info.value)


def test_explicit_flags_win_however_spelled(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text('"""doc"""\nOptimizationParams = {"iterations": 3000, "lambda_depth": 1.0}\nModelParams = {"resolution": 2}\n')
    for spelling in (["-r4"], ["-r", "4"], ["--res", "4"], ["--resolution=4"], ["--reso=4"]):
        d, o, _ = _parse(["-s", "x", "--config", str(cfg), *spelling, "--iter", "50"], config_file=True)
        assert d.resolution == 4 and o.iterations == 50 and o.lambda_depth == 1.0, spelling
    write_cfg_args(tmp_path, ModelParams.defaults().replace(resolution=2, white_background=True))
    for spelling in (["-r4"], ["--res", "4"]):
        d, *_ = _parse(["-m", str(tmp_path), *spelling], from_model=True)
        assert d.resolution == 4 and d.white_background, spelling


def test_config_values_are_validated_and_named_by_file(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text('OptimizationParams = {"iterations": "many"}\n')
    with pytest.raises(UserError, match=r"c.py: iterations: expected an integer, got 'many'"):
        _parse(["--config", str(cfg)], config_file=True)
    cfg.write_text('OptimizationParams = {"perceptual_loss": "l3"}\n')
    with pytest.raises(UserError, match=r"c.py: perceptual_loss: 'l3' is not a valid choice"):
        _parse(["--config", str(cfg)], config_file=True)
    cfg.write_text('OptimizationParams = {"iterations": 3000.5}\n')
    with pytest.raises(UserError, match="expected an integer"):
        _parse(["--config", str(cfg)], config_file=True)
    cfg.write_bytes(b'OptimizationParams = {"x": "\xff"}\n')
    with pytest.raises(UserError, match="not UTF-8"):
        _parse(["--config", str(cfg)], config_file=True)


def test_config_is_never_executed(tmp_path):
    cfg = tmp_path / "evil.py"
    cfg.write_text("import os\nOptimizationParams = {}\n")
    with pytest.raises(UserError, match="evil.py:1"):
        _parse(["--config", str(cfg)], config_file=True)
    cfg.write_text("OptimizationParams = {'iterations': __import__('os').getpid()}\n")
    with pytest.raises(UserError, match="literal"):
        _parse(["--config", str(cfg)], config_file=True)
    cfg.write_text("OptimizationParams = {'no_such_flag': 1}\n")
    with pytest.raises(UserError, match="evil.py: unknown parameter.*no_such_flag"):
        _parse(["--config", str(cfg)], config_file=True)


def test_config_base_inheritance(tmp_path):
    (tmp_path / "base.py").write_text('OptimizationParams = {"iterations": 3000, "lambda_depth": 1.0}\n')
    (tmp_path / "scene.py").write_text('_base_ = "base.py"\nOptimizationParams = {"lambda_depth": 0.5}\n')
    _, o, _ = _parse(["--config", str(tmp_path / "scene.py")], config_file=True)
    assert o.iterations == 3000 and o.lambda_depth == 0.5
    (tmp_path / "base.py").write_text('_base_ = "scene.py"\n')
    with pytest.raises(UserError, match="loops back"):
        _parse(["--config", str(tmp_path / "scene.py")], config_file=True)
    (tmp_path / "scene.py").write_text("_base_ = 3\n")
    with pytest.raises(UserError, match="_base_ must be a path"):
        _parse(["--config", str(tmp_path / "scene.py")], config_file=True)


def test_endonerf_configs_carry_the_published_protocol():
    for scene in ("pulling", "cutting"):
        _, o, _, run, _ = parse(train.GROUPS, ["--config", str(ROOT / "arguments" / "endonerf" / f"{scene}.py")], "t",
                             config_file=True)
        assert o.iterations == 3000 and o.lambda_depth == 1.0 and run.test_iterations == [1000, 3000]


def test_cfg_args_round_trip_merge_and_missing_keys(tmp_path):
    write_cfg_args(tmp_path, ModelParams.defaults().replace(source_path="/data/scene", model_path=str(tmp_path),
                                                           resolution=2, white_background=True))
    saved = read_cfg_args(tmp_path)
    assert saved["resolution"] == 2 and saved["white_background"] is True
    d, *_ = _parse(["-m", str(tmp_path), "-r", "4"], from_model=True)
    assert d.resolution == 4 and d.white_background is True and d.source_path == "/data/scene"
    # an older or foreign cfg_args: missing keys take their defaults, unknown keys are ignored
    (tmp_path / "cfg_args").write_text("Namespace(source_path='/d', model_path='m', sh_degree=3, data_device='cuda', foo=1)")
    d, *_ = _parse(["-m", str(tmp_path)], from_model=True)
    assert d.device == "auto" and d.data_device == "cuda" and d.resolution == -1
    (tmp_path / "cfg_args").write_text("Namespace(sh_degree='three')")
    with pytest.raises(UserError, match=r"cfg_args: sh_degree: expected an integer"):
        _parse(["-m", str(tmp_path)], from_model=True)


def test_malicious_cfg_args_is_rejected(tmp_path):
    (tmp_path / "cfg_args").write_text("__import__('os').system('echo pwned')")
    with pytest.raises(UserError, match="malformed cfg_args"):
        read_cfg_args(tmp_path)


def _script_groups():
    import cluster
    import convert
    import extract_dino_features
    import metrics
    import render
    import view

    return {"train.py": train.GROUPS, "render.py": render.GROUPS, "cluster.py": cluster.GROUPS, "view.py": view.GROUPS,
            "metrics.py": (metrics.MetricsParams,), "convert.py": (convert.ConvertParams,),
            "extract_dino_features.py": (extract_dino_features.ExtractParams,)}


@pytest.mark.parametrize("script", ["train.py", "render.py", "cluster.py", "metrics.py", "convert.py", "extract_dino_features.py",
                                    "view.py"])
def test_help_shows_every_flag_with_a_help_line_and_its_choices(script, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag
    groups = _script_groups()[script]
    with pytest.raises(SystemExit):
        parse(groups, ["-h"], "t", config_file=script == "train.py")
    out = capsys.readouterr().out
    for group in groups:
        for f in dataclasses.fields(group):
            assert f"--{f.name}" in out and len(f.metadata["help"]) > 10, f.name
    if script == "train.py":
        assert "{cosine|l1|l2|smooth_l1}" in out and ">= 0 and <= 3" in out and "(default: 30000)" in out
