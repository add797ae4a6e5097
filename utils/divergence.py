"""Stop a diverging training run at once, with one line that says where and what to change.

A non-finite loss is caught every iteration (the loss is read back for the progress bar
anyway, so the check costs nothing extra); the Gaussians' parameters are checked before
every save, so no PLY or checkpoint with NaN/inf is ever written.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from utils.errors import UserError

# Flags that most often make a run diverge, per loss term / parameter; learning rates first.
LEARNING_RATES = ("position_lr_init", "scaling_lr", "opacity_lr", "rotation_lr", "feature_lr")
TERM_FLAGS = {"depth": ("lambda_depth",), "invdepth": ("depth_l1_weight_init",), "perceptual": ("lambda_perceptual",),
              "feature": ("lambda_feature", "semantic_lr"), "color": ()}
PARAM_FLAGS = {"xyz": ("position_lr_init",), "scaling": ("scaling_lr",), "opacity": ("opacity_lr",),
               "rotation": ("rotation_lr",), "f_dc": ("feature_lr",), "f_rest": ("feature_lr",),
               "semantic": ("semantic_lr", "lambda_feature"), "deform": ("deform_lr",)}


def suspects(opt, candidates: tuple[str, ...]) -> str:
    """The flags to look at: those in ``candidates`` (then the learning rates) changed from their defaults first."""
    defaults = {f.name: f.default for f in dataclasses.fields(opt)}
    names = list(dict.fromkeys(candidates + LEARNING_RATES))
    changed = [n for n in names if getattr(opt, n) != defaults.get(n)]
    chosen = changed or list(candidates) or list(LEARNING_RATES)
    return ", ".join(f"--{n} {getattr(opt, n):g}" for n in chosen[:4])


def check_loss(iteration: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], camera: str, opt) -> float:
    """``float(loss)``, or a UserError naming the iteration, the terms and the likely flags when it is NaN/inf."""
    value = float(loss.detach())
    if math.isfinite(value):
        return value
    values = {k: float(v) for k, v in terms.items()}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    blame = tuple(f for k in bad for f in TERM_FLAGS.get(k, ()))
    listed = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
    raise UserError(f"iteration {iteration}: the loss is {value} ({listed}) on camera '{camera}': training diverged; "
                    f"check {suspects(opt, blame)} (lower learning rates or loss weights), or rerun with --debug "
                    "to find the first non-finite tensor")


def check_parameters(iteration: int, gaussians, opt) -> None:
    """UserError when any Gaussian parameter holds NaN/inf (called before every save)."""
    bad = gaussians.non_finite()
    if bad:
        blame = tuple(f for k in bad for f in PARAM_FLAGS.get(k, ()))
        listed = ", ".join(f"{k} ({n} Gaussians)" for k, n in bad.items())
        raise UserError(f"iteration {iteration}: non-finite Gaussian parameters {listed}; nothing was saved: training "
                        f"diverged; check {suspects(opt, blame)}, or rerun with --debug")
