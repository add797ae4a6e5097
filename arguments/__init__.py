"""Parameter groups (graphdeco's names and defaults) as typed, validated configs.

``ModelParams`` (scene loading and model shape), ``OptimizationParams`` (schedule and losses)
and ``PipelineParams`` (how rendering runs) are frozen dataclasses; each script adds its own
group (``TrainParams`` in train.py, ``RenderParams`` in render.py, ...). :func:`parse` turns
them into flags, merges the layers (defaults < a model's ``cfg_args`` < ``--config`` file <
typed flags) and validates every value once, before any data or model is loaded. See
:mod:`arguments.config` for the machinery and :mod:`arguments.files` for the file formats.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from arguments.config import Params, Value, explicit_values, make_parser, param, split_groups
from arguments.files import cfg_args_values, load_config, read_cfg_args, write_cfg_args  # noqa: F401
from utils.errors import UserError

Device = Literal["auto", "cpu", "cuda"]
RESOLUTION_AUTO = -1  # -r -1: full size, capped at 1600 px wide (graphdeco)
SAVED_PIPELINE_KEYS = ("antialiasing",)  # how the model must be rendered: saved in cfg_args with ModelParams


@dataclass(frozen=True)
class ModelParams(Params):
    """Scene loading and model shape (saved to ``cfg_args`` and re-read by render.py and cluster.py)."""

    GROUP = "Loading Parameters"
    sh_degree: int = param(3, "maximum spherical-harmonics degree of the colour", ge=0, le=3)
    source_path: str = param("", "scene folder: COLMAP (sparse/), Blender (transforms_train.json) or EndoNeRF (poses_bounds.npy)", short="s")
    model_path: str = param("", "model folder to write (train.py; default output/<scene name>) or read (render.py, ...)", short="m")
    images: str = param("images", "name of the scene's image folder (e.g. images_4 for COLMAP's downscaled copies)", short="i")
    depths: str = param("", "folder inside the scene of monocular inverse-depth PNGs, one per training image, for "
                        "graphdeco's depth regularisation (COLMAP also needs sparse/0/depth_params.json); empty = none; "
                        "render.py accepts and ignores it", short="d")
    resolution: int = param(RESOLUTION_AUTO, "training resolution: 1, 2, 4, 8 divide the image size; another value is a "
                            "target width in pixels; -1 caps the width at 1600 px", short="r", ge=1, allowed=(RESOLUTION_AUTO,))
    white_background: bool = param(False, "composite on a white background (Blender scenes with alpha)", short="w")
    train_test_exp: bool = param(False, "learn a per-image exposure; test views are compensated (graphdeco's protocol)")
    data_device: Device = param("auto", "where training images are kept: auto = the compute device (--device); cpu saves GPU memory")
    eval: bool = param(False, "hold out every 8th image (name order) as a test view (COLMAP/Blender; EndoNeRF always uses its protocol)")
    device: Device = param("auto", "compute device: auto = cuda when available, else cpu")
    seed: int = param(0, "random seed (initial points, camera order, DINO decoder)", ge=0)
    depth_mode: Literal["auto", "depth", "inverse"] = param("auto", "EndoNeRF depth PNG encoding: plain depth, inverse depth, or auto-detected")
    depth_scale: float = param(1.0, "EndoNeRF: multiply depth values by this (units of the scene)", gt=0)
    identity_poses: bool = param(False, "EndoNeRF: treat every pose as the identity (fixed endoscope)")
    num_init_points: int = param(30000, "EndoNeRF: initial Gaussians back-projected from the depth maps (0 = every valid pixel)", ge=0)
    max_frames: int = param(0, "EndoNeRF: use only the first N frames (0 = all)", ge=0)
    deform: Literal["auto", "basis", "none"] = param("auto", "Gaussians that move over time: auto = basis for EndoNeRF scenes, none otherwise")
    deform_basis: int = param(17, "Gaussian bumps over time per deformation curve (Deform3DGS)", ge=1)
    feature_dim: int = param(0, "channels of the per-Gaussian DINO feature (semantic_* in the PLY); 0 = none", ge=0)
    feature_decoder: Literal["auto", "pca", "decoder"] = param("auto", "how rendered DINO features meet the teacher: its PCA channels, "
                                                                "a learned 1x1 decoder, or auto")


@dataclass(frozen=True)
class PipelineParams(Params):
    """How rendering runs."""

    GROUP = "Pipeline Parameters"
    backend: Literal["auto", "torch", "cpu", "gsplat"] = param("auto", "compositing backend: auto = gsplat on CUDA, else the "
                                                               "C++ cpu rasterizer, else torch")
    debug: bool = param(False, "stop at the first NaN/inf in render() or the loss, naming the tensor; autograd anomaly mode (slow)")
    antialiasing: bool = param(False, "antialiasing (Mip-Splatting's 2D filter): scale each opacity by how much the "
                               "0.3-pixel screen-space blur widened the Gaussian; saved with the model and reused by render.py")
    convert_SHs_python: bool = param(False, "accepted for graphdeco's scripts; SH -> RGB is always computed in PyTorch here")
    compute_cov3D_python: bool = param(False, "accepted for graphdeco's scripts; 3D covariances are always computed in PyTorch here")


@dataclass(frozen=True)
class OptimizationParams(Params):
    """Training schedule and loss weights (3DGS defaults)."""

    GROUP = "Optimization Parameters"
    iterations: int = param(30_000, "training iterations", ge=1)
    position_lr_init: float = param(0.00016, "initial learning rate of the positions (x scene extent)", gt=0)
    position_lr_final: float = param(0.0000016, "final learning rate of the positions (x scene extent)", gt=0)
    position_lr_delay_mult: float = param(0.01, "position learning-rate warm-up factor", ge=0, le=1)
    position_lr_max_steps: int = param(30_000, "iterations of the position learning-rate decay", ge=1)
    feature_lr: float = param(0.0025, "learning rate of the SH colour coefficients (graphdeco's name; the rest use /20)", gt=0)
    opacity_lr: float = param(0.05, "learning rate of the opacities", gt=0)
    scaling_lr: float = param(0.005, "learning rate of the log-scales", gt=0)
    rotation_lr: float = param(0.001, "learning rate of the rotations", gt=0)
    semantic_lr: float = param(0.001, "learning rate of the per-Gaussian DINO features", gt=0)
    deform_lr: float = param(0.0016, "learning rate of the deformation weights", gt=0)
    percent_dense: float = param(0.01, "Gaussians larger than this fraction of the scene extent are split, smaller cloned", gt=0, le=1)
    lambda_dssim: float = param(0.2, "weight of (1 - SSIM) in the colour loss", ge=0, le=1)
    densification_interval: int = param(100, "densify every N iterations", ge=1)
    opacity_reset_interval: int = param(3000, "reset opacities every N iterations", ge=1)
    densify_from_iter: int = param(500, "first iteration of densification", ge=0)
    densify_until_iter: int = param(15_000, "last iteration of densification", ge=0)
    densify_grad_threshold: float = param(0.0002, "screen-space gradient above which a Gaussian is densified", ge=0)
    min_opacity: float = param(0.005, "prune Gaussians below this opacity", ge=0, le=1)
    max_screen_size: int = param(20, "prune Gaussians larger than this many pixels (after the first opacity reset)", ge=0)
    sh_increase_interval: int = param(1000, "raise the active SH degree every N iterations", ge=1)
    random_background: bool = param(False, "a random background colour each iteration")
    lambda_depth: float = param(0.0, "weight of the masked L1 depth loss (EndoNeRF)", ge=0)
    dino_feature_dir: str = param("", "folder of DINO feature maps made by extract_dino_features.py")
    lambda_perceptual: float = param(0.0, "weight of the DINO perceptual loss (needs --dino_feature_dir)", ge=0)
    perceptual_loss: Literal["cosine", "l1", "l2", "smooth_l1"] = param("cosine", "distance of the DINO perceptual loss")
    perceptual_every: int = param(1, "apply the perceptual loss every N iterations", ge=1)
    dino_weights: str = param("", "local ViT weights for the perceptual loss (default: those named in features_meta.json, from the cache)")
    dino_random_init: bool = param(False, "random ViT weights for the perceptual loss (tests and offline demos only)")
    lambda_feature: float = param(0.0, "weight of the per-Gaussian feature distillation loss (needs --feature_dim, --dino_feature_dir)", ge=0)
    feature_loss: Literal["l1", "cosine"] = param("l1", "distance of the feature distillation loss")
    decoder_lr: float = param(0.001, "learning rate of the 1x1 feature decoder", gt=0)
    exposure_lr_init: float = param(0.01, "--train_test_exp: initial learning rate of the per-image exposures", gt=0)
    exposure_lr_final: float = param(0.001, "--train_test_exp: final learning rate of the per-image exposures", gt=0)
    exposure_lr_delay_steps: int = param(0, "--train_test_exp: iterations of exposure learning-rate warm-up", ge=0)
    exposure_lr_delay_mult: float = param(0.0, "--train_test_exp: exposure learning-rate warm-up factor", ge=0, le=1)
    depth_l1_weight_init: float = param(1.0, "-d/--depths: initial weight of the inverse-depth L1 loss", ge=0)
    depth_l1_weight_final: float = param(0.01, "-d/--depths: final weight of the inverse-depth L1 loss (log-linear decay "
                                         "over --iterations)", ge=0)
    optimizer_type: Literal["default", "sparse_adam"] = param("default", "Adam over every Gaussian, or only over those "
                                                              "visible in the view (sparse_adam)")

    def check(self) -> None:
        needs_dino = [f"--{k}" for k in ("lambda_perceptual", "lambda_feature") if getattr(self, k) > 0]
        if needs_dino and not self.dino_feature_dir:
            raise UserError(f"{' and '.join(needs_dino)} need --dino_feature_dir (a folder made by extract_dino_features.py)")
        if self.dino_feature_dir and not Path(self.dino_feature_dir).is_dir():
            raise UserError(f"--dino_feature_dir {self.dino_feature_dir}: folder not found; run extract_dino_features.py first")
        if self.position_lr_final > self.position_lr_init:
            raise UserError(f"--position_lr_final {self.position_lr_final:g} is above --position_lr_init "
                            f"{self.position_lr_init:g}; the learning rate decays from init to final")


def check_model_and_optimization(model: ModelParams, opt: OptimizationParams) -> None:
    """Rules that span the model and optimisation groups."""
    if opt.lambda_feature > 0 and model.feature_dim == 0:
        raise UserError("--lambda_feature needs per-Gaussian features: add --feature_dim D (e.g. 16)")
    weights = (opt.depth_l1_weight_init, opt.depth_l1_weight_final)
    if model.depths and min(weights) == 0 < max(weights):
        raise UserError(f"--depth_l1_weight_init {weights[0]:g} --depth_l1_weight_final {weights[1]:g}: the weight decays "
                        "exponentially, so both must be > 0 (or both 0 to turn the inverse-depth term off)")


def parse(groups: Sequence[type[Params]], argv: Sequence[str], description: str, *,
          config_file: bool = False, from_model: bool = False) -> list[Params]:
    """Parse ``argv`` into one validated instance per group (in order).

    ``config_file``: accept ``--config FILE.py`` (values below typed flags). ``from_model``: ``-m``
    is required and the model's ``cfg_args`` fill ``ModelParams`` below the typed flags.
    """
    parser = make_parser(description, groups)
    if config_file:
        parser.add_argument("--config", default=None, help="Python file of literal parameter dicts (never executed; "
                            "_base_ = \"file.py\" inherits another); flags typed on the command line win")
    typed = explicit_values(parser, argv)
    config = typed.pop("config", None)
    layer: dict[str, Value] = {}
    if from_model:
        if "model_path" not in typed:
            raise UserError("-m/--model_path is required: the model folder written by train.py")
        layer.update(cfg_args_values(typed["model_path"].value, ModelParams))
        if PipelineParams in groups:
            layer.update(cfg_args_values(typed["model_path"].value, PipelineParams, SAVED_PIPELINE_KEYS))
    if config is not None and config.value is not None:
        values = {k: Value(v, f"{config.value}: {k}") for k, v in load_config(config.value).items()}
        split_groups(groups, values, where=config.value)  # unknown keys and bad values, named by file and key
        layer.update(values)
    layer.update(typed)
    return split_groups(groups, layer)
