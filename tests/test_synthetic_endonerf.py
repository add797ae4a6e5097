"""Synthetic EndoNeRF generator: determinism, files vs ground truth, deformation strength, CLI."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from scene.synthetic_endonerf import (
    DEPTH_UNITS_PER_MM,
    focal_length,
    main,
    make_synthetic_endonerf,
    render_synthetic_frame,
    surface_point,
)
from utils.errors import UserError


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic(tmp_path):
    a = _files(make_synthetic_endonerf(tmp_path / "a", 6, 40, 32, seed=1))
    b = _files(make_synthetic_endonerf(tmp_path / "b", 6, 40, 32, seed=1))
    c = _files(make_synthetic_endonerf(tmp_path / "c", 6, 40, 32, seed=2))
    assert len(a) == 6 * 3 + 1 and a == b
    assert a[next(k for k in a if k.parts[0] == "images")] != c[next(k for k in c if k.parts[0] == "images")]


def test_default_scene_is_fast_and_matches_ground_truth(tmp_path):
    start = time.perf_counter()
    root = make_synthetic_endonerf(tmp_path / "s")
    elapsed = time.perf_counter() - start
    assert elapsed < 6.0  # ~1.4 s on 2 busy cores; generous for CI
    pb = np.load(root / "poses_bounds.npy")
    assert pb.shape == (24, 17)
    assert np.allclose(pb[:, :15].reshape(-1, 3, 5)[:, :, :4], np.eye(3, 4))
    assert np.allclose(pb[0, [4, 9, 14]], [64, 80, focal_length(80)])
    gt = render_synthetic_frame(7, 24, 80, 64)
    depth = cv2.imread(str(root / "depth" / "frame-000007.depth.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(root / "masks" / "frame-000007.mask.png"), cv2.IMREAD_UNCHANGED)
    assert depth.dtype == np.uint16 and np.abs(depth / DEPTH_UNITS_PER_MM - gt.depth).max() <= 0.05 + 1e-4
    assert np.array_equal(mask > 0, gt.tool_mask) and set(np.unique(mask)) == {0, 255}
    tissue = ~gt.tool_mask
    assert np.allclose(gt.depth[tissue], gt.tissue_depth[tissue])
    assert (gt.depth[gt.tool_mask] < gt.tissue_depth[gt.tool_mask]).all()  # the tool is in front


def test_deformation_is_strong_enough_to_defeat_a_static_model():
    frames = [render_synthetic_frame(i, 24, 80, 64) for i in range(24)]
    imgs = np.stack([f.image for f in frames])
    valid = ~np.stack([f.tool_mask for f in frames])
    # best static fit per pixel (L2) = mean over the frames where the pixel shows tissue
    mean = (imgs * valid[..., None]).sum(0) / valid.sum(0).clip(1)[..., None]
    mse = (((imgs - mean) ** 2) * valid[..., None]).sum() / (3 * valid.sum())
    assert -10 * np.log10(mse) < 24.0  # measured ~20.4 dB
    # image motion of material points: several pixels
    a, b = np.meshgrid(np.linspace(-30, 30, 13), np.linspace(-24, 24, 11))
    f = focal_length(80)
    proj = np.stack([surface_point(a, b, t)[..., :2] / surface_point(a, b, t)[..., 2:] * f for t in np.linspace(0, 1, 25)])
    motion = np.linalg.norm(proj - proj.mean(0), axis=-1).max(0)
    assert np.median(motion) > 3.0 and motion.max() > 5.0


def test_every_pixel_shows_tissue_in_some_training_frame():
    masks = np.stack([render_synthetic_frame(i, 24, 80, 64).tool_mask for i in range(24) if (i - 1) % 8 != 0])
    assert masks[0].sum() > 200 and not masks.all(0).any()


def test_cli_writes_and_refuses_non_empty_folder(tmp_path):
    out = tmp_path / "cli"
    main([str(out), "--frames", "3", "--size", "40x32", "--seed", "5"])
    assert len(list((out / "images").glob("frame-*.color.png"))) == 3
    with pytest.raises(UserError, match="not empty"):
        main([str(out), "--frames", "2", "--size", "40x32"])
    main([str(out), "--frames", "2", "--size", "40x32", "--overwrite"])
    assert len(list((out / "depth").iterdir())) == 2 and np.load(out / "poses_bounds.npy").shape == (2, 17)
    with pytest.raises(UserError, match="WIDTHxHEIGHT"):
        main([str(tmp_path / "x"), "--size", "big"])
