"""Parameter groups that become command-line flags (graphdeco names and defaults).

Each group is a plain class whose attributes are the defaults. ``ParamGroup``
turns them into argparse flags (``foo_bar`` -> ``--foo_bar``; a leading ``_``
also adds a one-letter short flag, e.g. ``_source_path`` -> ``-s``) and
``extract`` pulls the parsed values back into a namespace.

Configs: ``--config FILE.py`` names a Python file holding dicts
``ModelParams = {...}``, ``OptimizationParams = {...}``, ``PipelineParams = {...}``;
it is parsed with ``ast.literal_eval`` (never executed) and overrides defaults,
while flags given explicitly on the command line still win. ``_base_ = "file.py"``
inherits another config (its values first, this file's on top).
"""
from __future__ import annotations

import ast
import os
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path

from utils.errors import UserError


class ParamGroup:
    """A named group of flags built from the subclass's attributes."""

    group_name = "params"

    def __init__(self, parser: ArgumentParser, fill_none: bool = False):
        group = parser.add_argument_group(self.group_name)
        self._names = []
        for key, value in vars(self).copy().items():
            if key == "_names":
                continue
            short = key.startswith("_")
            name = key[1:] if short else key
            self._names.append(name)
            flags = [f"--{name}"] + ([f"-{name[0]}"] if short else [])
            default = None if fill_none else value
            if isinstance(value, bool):
                group.add_argument(*flags, default=default, action="store_true")
            elif isinstance(value, list):
                elem = type(value[0]) if value else int
                group.add_argument(*flags, default=default, nargs="*", type=elem)
            elif value is None:
                group.add_argument(*flags, default=default, type=str)
            else:
                group.add_argument(*flags, default=default, type=type(value))

    def extract(self, args: Namespace) -> Namespace:
        """The subset of ``args`` that belongs to this group."""
        return Namespace(**{n: getattr(args, n) for n in self._names if hasattr(args, n)})


class ModelParams(ParamGroup):
    """Scene loading and model shape."""

    group_name = "Loading Parameters"

    def __init__(self, parser, sentinel=False):
        self.sh_degree = 3
        self._source_path = ""
        self._model_path = ""
        self._images = "images"
        self._resolution = -1
        self._white_background = False
        self.data_device = "cpu"
        self.eval = False
        self.device = "auto"  # auto | cpu | cuda
        self.seed = 0
        # EndoNeRF
        self.depth_mode = "auto"  # auto | depth | inverse
        self.depth_scale = 1.0
        self.identity_poses = False
        self.num_init_points = 30000
        self.max_frames = 0  # 0 = all frames (use fewer for quick runs)
        # deformation over time
        self.deform = "auto"  # auto (basis for EndoNeRF, none otherwise) | basis | none
        self.deform_basis = 17
        # per-Gaussian features
        self.feature_dim = 0
        self.feature_decoder = "auto"  # auto | pca | decoder
        super().__init__(parser, sentinel)

    def extract(self, args):
        g = super().extract(args)
        if g.source_path:
            g.source_path = os.path.abspath(g.source_path)
        return g


class PipelineParams(ParamGroup):
    """How rendering runs."""

    group_name = "Pipeline Parameters"

    def __init__(self, parser):
        self.backend = "auto"  # auto | torch | cpu | gsplat
        self.debug = False  # stop at the first NaN/inf in render() or the loss; autograd anomaly mode (slow)
        super().__init__(parser)


class OptimizationParams(ParamGroup):
    """Training schedule and loss weights (3DGS defaults)."""

    group_name = "Optimization Parameters"

    def __init__(self, parser):
        self.iterations = 30_000
        self.position_lr_init = 0.00016
        self.position_lr_final = 0.0000016
        self.position_lr_delay_mult = 0.01
        self.position_lr_max_steps = 30_000
        self.feature_lr = 0.0025
        self.opacity_lr = 0.05
        self.scaling_lr = 0.005
        self.rotation_lr = 0.001
        self.semantic_lr = 0.001
        self.deform_lr = 0.0016
        self.percent_dense = 0.01
        self.lambda_dssim = 0.2
        self.densification_interval = 100
        self.opacity_reset_interval = 3000
        self.densify_from_iter = 500
        self.densify_until_iter = 15_000
        self.densify_grad_threshold = 0.0002
        self.min_opacity = 0.005
        self.max_screen_size = 20
        self.sh_increase_interval = 1000
        self.random_background = False
        # EndoNeRF losses
        self.lambda_depth = 0.0
        # DINO perceptual loss
        self.dino_feature_dir = ""
        self.lambda_perceptual = 0.0
        self.perceptual_loss = "cosine"  # cosine | l1 | l2 | smooth_l1
        self.perceptual_every = 1
        self.dino_weights = ""
        self.dino_random_init = False
        # feature distillation
        self.lambda_feature = 0.0
        self.feature_loss = "l1"  # l1 | cosine
        self.decoder_lr = 0.001
        super().__init__(parser)


def add_config_flag(parser: ArgumentParser) -> None:
    parser.add_argument("--config", type=str, default=None, help="Python file of parameter dicts overriding defaults")


def load_config(path: str, _seen: tuple[Path, ...] = ()) -> dict:
    """Parse a config file of top-level ``Name = {literal dict}`` assignments without executing it.

    ``_base_ = "other.py"`` (a path relative to the file, as in 4DGS / EndoGaussian configs)
    loads that file first; this file's values override the base's.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    if p.resolve() in _seen:
        raise UserError(f"{p}: config _base_ chain loops back to itself")
    try:
        tree = ast.parse(p.read_text(), filename=str(p))
    except SyntaxError as exc:
        raise UserError(f"{p}: not valid Python syntax (line {exc.lineno})") from None
    out: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise UserError(f"{p}:{node.lineno}: only 'Name = {{...}}' assignments of literal dicts are allowed")
        name = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise UserError(f"{p}:{node.lineno}: value must be a literal (numbers, strings, lists, dicts)") from None
        if name == "_base_":
            if not isinstance(value, str):
                raise UserError(f"{p}:{node.lineno}: _base_ must be a path string, e.g. _base_ = \"default.py\"")
            out = {**load_config(str(p.parent / value), _seen + (p.resolve(),)), **out}
        elif isinstance(value, dict):
            out.update(value)
        else:
            raise UserError(f"{p}:{node.lineno}: {name} must be a dict")
    return out


def _explicit_dests(parser: ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the options actually typed on the command line."""
    dests = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(a == opt or a.startswith(opt + "=") for a in argv):
                dests.add(action.dest)
    return dests


def parse_with_config(parser: ArgumentParser, argv: list[str] | None = None) -> Namespace:
    """Parse flags; apply ``--config`` values for every option not typed explicitly."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        cfg = load_config(args.config)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise UserError(f"{args.config}: unknown parameter(s) {', '.join(unknown)}")
        explicit = _explicit_dests(parser, argv)
        for k, v in cfg.items():
            if k not in explicit:
                setattr(args, k, v)
    return args


def read_cfg_args(model_path: str) -> Namespace:
    """Parse ``MODEL/cfg_args`` (a ``Namespace(...)`` repr) as data, never executing it."""
    path = Path(model_path) / "cfg_args"
    if not path.is_file():
        raise UserError(f"{path}: not found; -m must point to a trained model folder (made by train.py)")
    text = path.read_text().strip()
    try:
        node = ast.parse(text, mode="eval").body
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Namespace" and not node.args):
            raise ValueError
        values = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    except (SyntaxError, ValueError):
        raise UserError(f"{path}: malformed cfg_args (expected Namespace(key=value, ...))") from None
    return Namespace(**values)


def get_combined_args(parser: ArgumentParser, argv: list[str] | None = None) -> Namespace:
    """Command line merged over the model's saved ``cfg_args`` (command line wins where given)."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = parser.parse_args(argv)
    if not getattr(cmd, "model_path", None):
        raise UserError("-m/--model_path is required")
    saved = vars(read_cfg_args(cmd.model_path))
    explicit = _explicit_dests(parser, argv)
    merged = dict(saved)
    for k, v in vars(cmd).items():
        if k in explicit or k not in saved:
            merged[k] = v
    merged["model_path"] = cmd.model_path
    return Namespace(**merged)
