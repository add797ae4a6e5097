"""Synthetic EndoNeRF scene: deforming textured tissue, a fixed endoscope and a moving tool.

The tissue is a height field in front of a fixed OpenCV camera at the origin. A surface
point has material coordinates (a, b) in mm; at time t it sits at
``(a + dx, b + dy, Z0 + h(a, b) + dz)`` where (dx, dy, dz) is a smooth strong deformation
(breathing, a travelling bump and a lateral travelling wave: several pixels of image
motion). The colour texture (vessels, blotches, grain) is a function of (a, b), so it moves
with the surface. Each pixel ray is intersected with the surface by a fixed-point
iteration on (a, b); the image is shaded (head light with 1/r^2 fall-off) and
supersampled. A dark grey tool shaft enters from the right and sweeps over the tissue.

Written files (real EndoNeRF layout, nothing else)::

    OUT/images/frame-000000.color.png   RGB 8-bit
    OUT/depth/frame-000000.depth.png    16-bit plain z-depth in units of 0.1 mm (tool pixels hold the
                                        tool's depth), so the reader's auto mode reads plain depth
    OUT/masks/frame-000000.mask.png     255 = tool, 0 = tissue
    OUT/poses_bounds.npy                identity LLFF poses, hwf, near/far in depth-PNG units

Ground truth for tests comes from :func:`render_synthetic_frame` (no extra files).
CLI: ``python -m scene.synthetic_endonerf OUT_DIR [--frames N] [--size WxH] [--seed S] [--overwrite]``.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError, parse_size, run_cli
from utils.image_utils import write_stored_image
from utils.io_utils import save_npy

DEFAULT_FRAMES, DEFAULT_WIDTH, DEFAULT_HEIGHT = 24, 80, 64
FOCAL_PER_WIDTH = 0.8  # focal length in pixels per image width (about 64 degrees horizontal FOV)
Z0_MM = 60.0  # mean tissue distance
TILT, CURVATURE = 0.12, -0.003  # base shape h(a, b) = TILT a + CURVATURE (a^2 + b^2), mm
BREATH_AMP_MM, BREATH_SIGMA_MM, BREATH_CYCLES = 6.0, 30.0, 1.5
BUMP_AMP_MM, BUMP_SIGMA_MM = 7.0, 11.0  # travelling bump pushed towards the camera
LATERAL_AMP_MM, LATERAL_CYCLES, LATERAL_WAVELENGTH_MM = 3.0, 1.0, 60.0
SOLVER_ITERATIONS = 14  # fixed-point steps for ray/surface intersection
SUPERSAMPLE = 2  # samples per pixel side
AMBIENT = 0.3
TOOL_RADIUS_FRAC = 0.09  # shaft radius / image height
TOOL_DEPTH_MM = 35.0
MASK_DILATE_PX = 1.0  # mask covers every pixel the anti-aliased shaft touches
DEPTH_UNITS_PER_MM = 10  # 16-bit depth PNG unit = 0.1 mm
BASE_RGB = np.array([0.80, 0.40, 0.37])
LIGHT_RGB = np.array([0.95, 0.68, 0.58])
VESSEL_RGB = np.array([0.42, 0.07, 0.10])
NAMES = {"images": "frame-{:06d}.color.png", "depth": "frame-{:06d}.depth.png", "masks": "frame-{:06d}.mask.png"}


@dataclass
class SyntheticFrame:
    """Ground truth of one frame: image [H, W, 3] float32 in [0, 1]; tissue_depth [H, W] z in mm
    (tissue only, as if no tool); depth [H, W] mm as written (tool depth on tool pixels);
    tool_mask [H, W] bool (True = tool); time t = index / n_frames."""

    image: np.ndarray
    tissue_depth: np.ndarray
    depth: np.ndarray
    tool_mask: np.ndarray
    time: float


def focal_length(width: int) -> float:
    return FOCAL_PER_WIDTH * width


# ----------------------------------------------------------------------------- texture


def _wave_bank(rng: np.random.Generator, count: int, wl_min: float, wl_max: float) -> np.ndarray:
    """[count, 4] random plane waves (kx, ky, phase, amplitude) with wavelengths in [wl_min, wl_max] mm."""
    theta = rng.uniform(0, np.pi, count)
    k = 2 * np.pi / rng.uniform(wl_min, wl_max, count)
    return np.stack([k * np.cos(theta), k * np.sin(theta), rng.uniform(0, 2 * np.pi, count),
                     np.full(count, np.sqrt(2.0 / count))], axis=1)


def _noise(bank: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unit-variance band-limited noise at material points (a, b) (same shapes)."""
    out = np.zeros_like(a)
    for kx, ky, phase, amp in bank:
        out += amp * np.sin(kx * a + ky * b + phase)
    return out


def make_texture(seed: int) -> dict[str, np.ndarray]:
    """Wave banks of the tissue texture (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    return {
        "vessels": _wave_bank(rng, 8, 14.0, 30.0),
        "capillaries": _wave_bank(rng, 8, 5.0, 11.0),
        "blotches": _wave_bank(rng, 6, 15.0, 40.0),
        "grain": _wave_bank(rng, 10, 1.5, 4.0),
    }


def albedo(texture: dict[str, np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[..., 3] tissue colour at material points (a, b): pink base, light blotches, dark vessels, grain."""
    mix = 1.0 / (1.0 + np.exp(-2.5 * _noise(texture["blotches"], a, b)))
    color = BASE_RGB + (LIGHT_RGB - BASE_RGB) * mix[..., None]
    vessel = np.maximum(np.exp(-(_noise(texture["vessels"], a, b) / 0.16) ** 2),
                        0.7 * np.exp(-(_noise(texture["capillaries"], a, b) / 0.12) ** 2))
    color = color + (VESSEL_RGB - color) * vessel[..., None]
    return color * (1.0 + 0.06 * _noise(texture["grain"], a, b))[..., None]


# ----------------------------------------------------------------------------- geometry


def deformation(a: np.ndarray, b: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dy, dz) in mm of material points (a, b) at time t in [0, 1]."""
    breath = BREATH_AMP_MM * np.sin(2 * np.pi * BREATH_CYCLES * t) * np.exp(-(a**2 + b**2) / (2 * BREATH_SIGMA_MM**2))
    ca, cb = -35.0 + 70.0 * t, 12.0 * np.sin(2 * np.pi * t)
    bump = -BUMP_AMP_MM * np.exp(-((a - ca) ** 2 + (b - cb) ** 2) / (2 * BUMP_SIGMA_MM**2))
    phase = 2 * np.pi * LATERAL_CYCLES * t
    dx = LATERAL_AMP_MM * np.sin(phase + 2 * np.pi * b / LATERAL_WAVELENGTH_MM)
    dy = 0.6 * LATERAL_AMP_MM * np.cos(phase + 2 * np.pi * a / LATERAL_WAVELENGTH_MM)
    return dx, dy, breath + bump


def _base_depth(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rest-shape depth Z0 + h(a, b) in mm."""
    return Z0_MM + TILT * a + CURVATURE * (a**2 + b**2)


def surface_point(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """[..., 3] camera-space position (mm) of material points (a, b) at time t."""
    dx, dy, dz = deformation(a, b, t)
    return np.stack([a + dx, b + dy, _base_depth(a, b) + dz], axis=-1)


def intersect(rx: np.ndarray, ry: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Material coordinates (a, b) and z-depth hit by rays (rx, ry, 1) at time t (fixed point)."""
    a, b = rx * Z0_MM, ry * Z0_MM
    for _ in range(SOLVER_ITERATIONS):
        dx, dy, dz = deformation(a, b, t)
        z = _base_depth(a, b) + dz
        a, b = rx * z - dx, ry * z - dy
    return a, b, _base_depth(a, b) + deformation(a, b, t)[2]


def _normals(points: np.ndarray) -> np.ndarray:
    """[H, W, 3] unit normals (facing the camera) of a camera-space point map [H, W, 3]."""
    du = np.gradient(points, axis=1)
    dv = np.gradient(points, axis=0)
    n = np.cross(du, dv)
    n *= -np.sign(n[..., 2:3] + 1e-12)
    return n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)


def _shade(points: np.ndarray) -> np.ndarray:
    """[H, W] head-light shading of a point map [H, W, 3]: ambient + diffuse with 1/r^2 fall-off."""
    dist = np.linalg.norm(points, axis=-1, keepdims=True)
    diffuse = np.clip((_normals(points) * (-points / dist)).sum(-1), 0.0, 1.0)
    return AMBIENT + (1.0 - AMBIENT) * diffuse * (Z0_MM / dist[..., 0]) ** 2


# ----------------------------------------------------------------------------- tool


def tool_segment(t: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(entry point outside the right edge, tip) of the shaft axis in pixels at time t.

    The shaft slides upwards by 0.6 of the image height over the sequence (much more than
    its width) while the tip wobbles sideways, so every pixel is tissue in some frames.
    """
    entry = np.array([1.25 * width, height * (1.05 - 0.6 * t)])
    tip = np.array([width * (0.42 + 0.15 * np.sin(2 * np.pi * 1.3 * t)), height * (0.75 - 0.6 * t)])
    return entry, tip


def _segment_distance(px: np.ndarray, py: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to segment p0-p1, signed offset across the axis) of points (px, py)."""
    d = p1 - p0
    s = np.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / (d @ d), 0.0, 1.0)
    ex, ey = px - (p0[0] + s * d[0]), py - (p0[1] + s * d[1])
    across = (ex * -d[1] + ey * d[0]) / np.sqrt(d @ d)
    return np.hypot(ex, ey), across


def _tool_color(across: np.ndarray, radius: float) -> np.ndarray:
    """[..., 3] metallic grey of the cylinder at signed offset ``across`` from its axis."""
    s = np.clip(across / radius, -1.0, 1.0)
    grey = 0.12 + 0.18 * np.sqrt(1.0 - s**2) + 0.3 * np.exp(-((s - 0.35) / 0.15) ** 2)
    return np.stack([grey, grey, grey * 1.08], axis=-1)


# ----------------------------------------------------------------------------- frames


def _downsample(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box-average an [H*f, W*f, ...] array to [H, W, ...]."""
    h, w = arr.shape[0] // factor, arr.shape[1] // factor
    return arr.reshape(h, factor, w, factor, *arr.shape[2:]).mean(axis=(1, 3))


def render_synthetic_frame(index: int, n_frames: int, width: int, height: int, seed: int = 0,
                           texture: dict[str, np.ndarray] | None = None) -> SyntheticFrame:
    """Ground truth of frame ``index`` of ``n_frames`` (time index / n_frames)."""
    t = index / n_frames
    tex = make_texture(seed) if texture is None else texture
    f, ss = focal_length(width), SUPERSAMPLE
    us = (np.arange(width * ss) + 0.5) / ss  # sample positions in pixels
    vs = (np.arange(height * ss) + 0.5) / ss
    uu, vv = np.meshgrid(us, vs)
    a, b, _ = intersect((uu - width / 2) / f, (vv - height / 2) / f, t)
    points = surface_point(a, b, t)
    tissue = np.clip(albedo(tex, a, b) * _shade(points)[..., None], 0.0, 1.0)
    entry, tip = tool_segment(t, width, height)
    radius = TOOL_RADIUS_FRAC * height
    dist, across = _segment_distance(uu, vv, entry, tip)
    on_tool = (dist < radius)[..., None]
    image = _downsample(np.where(on_tool, _tool_color(across, radius), tissue), ss)
    # pixel-centre quantities
    pu, pv = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    _, _, tissue_depth = intersect((pu - width / 2) / f, (pv - height / 2) / f, t)
    tool_mask = _segment_distance(pu, pv, entry, tip)[0] < radius + MASK_DILATE_PX
    depth = np.where(tool_mask, TOOL_DEPTH_MM, tissue_depth)
    return SyntheticFrame(image=image.astype(np.float32), tissue_depth=tissue_depth.astype(np.float32),
                          depth=depth.astype(np.float32), tool_mask=tool_mask, time=t)


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG atomically: [H, W] uint8/uint16, or [H, W, 3] uint8 RGB."""
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    write_stored_image(path, array)


def _prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty folder unless ``overwrite``; then remove only our own frame files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"{out}: folder is not empty; choose an empty one or pass --overwrite")
        for sub, pattern in NAMES.items():
            for p in (out / sub).glob(pattern.replace("{:06d}", "[0-9]" * 6)):
                p.unlink()


def make_synthetic_endonerf(out_dir: str | os.PathLike, n_frames: int = DEFAULT_FRAMES, width: int = DEFAULT_WIDTH,
                            height: int = DEFAULT_HEIGHT, seed: int = 0, overwrite: bool = False) -> Path:
    """Write a synthetic EndoNeRF scene (layout in the module docstring) and return its folder."""
    if n_frames < 2 or width < 16 or height < 16:
        raise UserError(f"synthetic scene needs >= 2 frames and >= 16x16 pixels, got {n_frames} frames at {width}x{height}")
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    tex = make_texture(seed)
    rows = []
    for i in range(n_frames):
        fr = render_synthetic_frame(i, n_frames, width, height, seed, tex)
        _write_png(out / "images" / NAMES["images"].format(i), np.round(fr.image * 255).astype(np.uint8))
        raw = np.round(fr.depth * DEPTH_UNITS_PER_MM).astype(np.uint16)
        _write_png(out / "depth" / NAMES["depth"].format(i), raw)
        _write_png(out / "masks" / NAMES["masks"].format(i), fr.tool_mask.astype(np.uint8) * 255)
        llff = np.concatenate([np.eye(3), np.zeros((3, 1)), [[height], [width], [focal_length(width)]]], axis=1)
        near, far = (float(v) * DEPTH_UNITS_PER_MM for v in (fr.tissue_depth.min(), fr.tissue_depth.max()))
        rows.append(np.concatenate([llff.reshape(-1), [near, far]]))
    save_npy(out / "poses_bounds.npy", np.asarray(rows, dtype=np.float64))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic EndoNeRF scene (deforming tissue + moving tool).")
    parser.add_argument("out_dir")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES)
    parser.add_argument("--size", default=f"{DEFAULT_WIDTH}x{DEFAULT_HEIGHT}", help="WIDTHxHEIGHT")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace the frames of an existing synthetic scene")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)
    start = time.perf_counter()
    out = make_synthetic_endonerf(args.out_dir, args.frames, width, height, args.seed, args.overwrite)
    print(f"wrote {args.frames} frames ({width}x{height}) to {out} in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    run_cli(main)
