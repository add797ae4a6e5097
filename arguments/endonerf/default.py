"""Shared EndoNeRF protocol; the per-scene configs inherit it with ``_base_ = "default.py"``.

Published protocol: 3000 iterations of deformable Gaussians (Gaussian-bump basis over
time), masked L1 colour + masked L1 depth (weight 1), test frames (i - 1) % 8 == 0.
Parsed as data (literal dicts only); flags typed on the command line win.
"""
ModelParams = {
    "deform": "basis",
    "deform_basis": 17,
    "num_init_points": 30000,
    "depth_mode": "auto",
}
OptimizationParams = {
    "iterations": 3000,
    "position_lr_max_steps": 3000,
    "lambda_depth": 1.0,
    "lambda_dssim": 0.2,
    "densify_from_iter": 500,
    "densify_until_iter": 2000,
    "densification_interval": 100,
    "opacity_reset_interval": 3000,
    "sh_increase_interval": 1000,
    "test_iterations": [1000, 3000],
    "save_iterations": [3000],
}
