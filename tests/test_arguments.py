"""Flags, configs and cfg_args: graphdeco names/defaults, literal-only configs, round trip."""
from __future__ import annotations

from argparse import ArgumentParser

import pytest

from arguments import ModelParams, OptimizationParams, PipelineParams, get_combined_args, parse_with_config, read_cfg_args
from utils.errors import UserError
from tests.conftest import ROOT
from train import build_parser as train_parser
from utils.train_utils import write_cfg_args


def _parser():
    p = ArgumentParser()
    lp, op, pp = ModelParams(p), OptimizationParams(p), PipelineParams(p)
    p.add_argument("--config")
    return p, lp, op, pp


def test_graphdeco_flags_and_defaults():
    p, lp, op, pp = _parser()
    a = p.parse_args(["-s", "scene", "-m", "out", "-r", "4", "--eval", "--white_background"])
    d, o = lp.extract(a), op.extract(a)
    assert d.resolution == 4 and d.eval and d.white_background and d.sh_degree == 3
    assert o.iterations == 30000 and o.position_lr_init == 0.00016 and o.densify_until_iter == 15000
    assert o.densify_grad_threshold == 0.0002 and o.lambda_dssim == 0.2 and o.opacity_reset_interval == 3000
    assert pp.extract(a).backend == "auto"


def test_config_overrides_defaults_but_not_explicit_flags(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text('"""doc"""\nOptimizationParams = {"iterations": 3000, "lambda_depth": 1.0}\nModelParams = {"resolution": 2}\n')
    p, *_ = _parser()
    a = parse_with_config(p, ["-s", "x", "--config", str(cfg), "--iterations", "50"])
    assert a.iterations == 50 and a.lambda_depth == 1.0 and a.resolution == 2


def test_config_is_never_executed(tmp_path):
    cfg = tmp_path / "evil.py"
    cfg.write_text("import os\nOptimizationParams = {}\n")
    p, *_ = _parser()
    with pytest.raises(UserError, match="evil.py:1"):
        parse_with_config(p, ["--config", str(cfg)])
    cfg.write_text("OptimizationParams = {'iterations': __import__('os').getpid()}\n")
    with pytest.raises(UserError, match="literal"):
        parse_with_config(p, ["--config", str(cfg)])
    cfg.write_text("OptimizationParams = {'no_such_flag': 1}\n")
    with pytest.raises(UserError, match="no_such_flag"):
        parse_with_config(p, ["--config", str(cfg)])


def test_config_base_inheritance(tmp_path):
    (tmp_path / "base.py").write_text('OptimizationParams = {"iterations": 3000, "lambda_depth": 1.0}\n')
    (tmp_path / "scene.py").write_text('_base_ = "base.py"\nOptimizationParams = {"lambda_depth": 0.5}\n')
    p, *_ = _parser()
    a = parse_with_config(p, ["--config", str(tmp_path / "scene.py")])
    assert a.iterations == 3000 and a.lambda_depth == 0.5
    (tmp_path / "base.py").write_text('_base_ = "scene.py"\n')
    with pytest.raises(UserError, match="loops back"):
        parse_with_config(p, ["--config", str(tmp_path / "scene.py")])
    (tmp_path / "scene.py").write_text("_base_ = 3\n")
    with pytest.raises(UserError, match="_base_ must be a path"):
        parse_with_config(p, ["--config", str(tmp_path / "scene.py")])


def test_endonerf_configs_carry_the_published_protocol():
    p, *_ = train_parser()
    for scene in ("pulling", "cutting"):
        a = parse_with_config(p, ["--config", str(ROOT / "arguments" / "endonerf" / f"{scene}.py")])
        assert a.iterations == 3000 and a.lambda_depth == 1.0 and a.deform == "basis" and a.test_iterations == [1000, 3000]


def test_cfg_args_round_trip_and_merge(tmp_path):
    p, lp, *_ = _parser()
    a = p.parse_args(["-s", "/data/scene", "-m", str(tmp_path), "-r", "2", "--white_background"])
    write_cfg_args(str(tmp_path), lp.extract(a))
    saved = read_cfg_args(str(tmp_path))
    assert saved.resolution == 2 and saved.white_background is True
    p2 = ArgumentParser()
    ModelParams(p2, sentinel=True)
    p2.add_argument("--iteration", type=int, default=-1)
    merged = get_combined_args(p2, ["-m", str(tmp_path), "-r", "4"])
    assert merged.resolution == 4 and merged.white_background is True and merged.iteration == -1


def test_malicious_cfg_args_is_rejected(tmp_path):
    (tmp_path / "cfg_args").write_text("__import__('os').system('echo pwned')")
    with pytest.raises(UserError, match="malformed cfg_args"):
        read_cfg_args(str(tmp_path))
