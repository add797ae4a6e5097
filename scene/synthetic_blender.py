"""Deterministic synthetic scene written as a Blender / NeRF-synthetic folder.

The scene (world z up, as in Blender) is a textured ground square with three
spheres and a box on it, lit by one directional light (Lambertian, no shadows,
so colours do not depend on the viewpoint). Images are made by analytic ray
casting in numpy -- independent of the project's rasteriser -- with 2x2
supersampling. Surfaces carry a solid (3D) procedural texture: two octaves of
high-contrast smooth value noise in luminance (blobs and corners for SIFT) under
a coarse colour tint, smooth enough for Gaussians to fit at ~80 px.

Output folder::

    images/r_000.png ...            RGB, black background
    transforms_train.json           camera_angle_x + frames (file_path without extension,
    transforms_test.json            transform_matrix = camera-to-world, OpenGL axes)
    points3d.ply                    surface points with their true (shaded) colours
    depths/r_000.png ...            with depths=True (--depths): the exact inverse depth 1/z of every view
                                    (mean over the supersamples, 0 = background), 16-bit, value = 1/z x 512
                                    (graphdeco's Blender encoding; train with -d depths)

CLI: ``python -m scene.synthetic_blender OUT_DIR [--views N] [--test_views M] [--size WxH] [--seed S] [--depths]``
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene.invdepth import BLENDER_DIVISOR, MAP_SUFFIX
from scene.reader_utils import write_points_ply
from utils.errors import UserError, parse_size, run_cli
from utils.image_utils import save_image, write_stored_image
from utils.io_utils import write_json

# --- scene layout (world units, z up)
GROUND_HALF = 1.6  # ground square spans [-h, h]^2 at z = 0
SPHERES = ((0.55, 0.35, 0.45, 0.45), (-0.65, 0.55, 0.35, 0.35), (0.1, -0.75, 0.3, 0.3))  # x, y, z, radius
BOX = ((-0.8, -0.55, 0.0), (-0.2, 0.0, 0.6))  # min corner, max corner
LIGHT_DIR = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
AMBIENT = 0.35  # shade = AMBIENT + (1 - AMBIENT) * max(n.l, 0)
BACKGROUND = 0.0
# --- texture: luminance value noise (what SIFT sees) times a coarse colour tint
LUMA_CELLS = (0.12, 0.05)  # value-noise cell sizes (world units), coarse to fine
LUMA_WEIGHTS = (0.6, 0.4)
LUMA_CONTRAST = 2.5  # stretch of the (mean-reverting) noise sum around 0.5
LUMA_RANGE = (0.08, 1.0)
TINT_CELL = 0.3
TINT_FLOOR = 0.35  # tint channels span [TINT_FLOOR, 1]
LATTICE = 32  # random colour lattice is LATTICE^3, wrapped
OBJECT_OFFSET = 7.31  # texture-space shift between objects so they do not look alike
OCTAVE_OFFSETS = (3.3, 9.1)  # decorrelate the luminance octaves from the tint
# --- cameras
RING_RADIUS = 4.0
ELEVATIONS = (math.radians(28.0), math.radians(42.0))  # train cameras alternate between these
TEST_ELEVATION = math.radians(35.0)
TARGET = np.array([0.0, 0.0, 0.25])
CAMERA_ANGLE_X = 0.6911  # horizontal field of view (rad), as in NeRF-synthetic
SUPERSAMPLE = 2
N_SURFACE_POINTS = 4000
DEPTHS_DIR = "depths"  # inverse-depth maps (depths=True)
UINT16_MAX = 65535
NO_HIT = np.inf
CONTACT_EPS = 1e-6  # ground points under the box count as inside it


@dataclass
class SyntheticView:
    """Ground-truth camera: world_to_cam [4, 4] in OpenCV axes; intrinsics in pixels."""

    name: str
    world_to_cam: np.ndarray
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    is_test: bool

    @property
    def center(self) -> np.ndarray:
        """[3] camera centre in world coordinates."""
        return -self.world_to_cam[:3, :3].T @ self.world_to_cam[:3, 3]


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """[4, 4] OpenCV world-to-camera matrix of a camera at ``eye`` looking at ``target``."""
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    rot = np.stack([right, down, fwd])  # rows: camera axes in world coordinates
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = -rot @ eye
    return m


def _ring_eye(azimuth: float, elevation: float) -> np.ndarray:
    return TARGET + RING_RADIUS * np.array([
        math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])


def synthetic_views(n_train: int = 24, n_test: int = 4, width: int = 80, height: int = 80) -> list[SyntheticView]:
    """Ground-truth cameras: train views on a ring (alternating elevation), test views in between."""
    fx = 0.5 * width / math.tan(0.5 * CAMERA_ANGLE_X)
    poses = [(2 * math.pi * k / n_train, ELEVATIONS[k % 2], False) for k in range(n_train)]
    poses += [(2 * math.pi * (j + 0.5) / max(n_test, 1), TEST_ELEVATION, True) for j in range(n_test)]
    return [SyntheticView(f"r_{i:03d}", look_at(_ring_eye(az, el), TARGET), fx, fx, width / 2, height / 2,
                          width, height, is_test) for i, (az, el, is_test) in enumerate(poses)]


def blender_transform(view: SyntheticView) -> list[list[float]]:
    """Camera-to-world [4, 4] in Blender/OpenGL axes (x right, y up, z back), as nested lists."""
    c2w = np.linalg.inv(view.world_to_cam) @ np.diag([1.0, -1.0, -1.0, 1.0])
    return c2w.round(12).tolist()


# ---------------------------------------------------------------- ray casting


def _rays(view: SyntheticView, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Origin [3] and unit directions [H*ss, W*ss, 3] (world) through supersampled pixel positions."""
    offs = (np.arange(ss) + 0.5) / ss
    u = (np.arange(view.width)[:, None] + offs[None]).reshape(-1)
    v = (np.arange(view.height)[:, None] + offs[None]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    d_cam = np.stack([(uu - view.cx) / view.fx, (vv - view.cy) / view.fy, np.ones_like(uu)], -1)
    rot = view.world_to_cam[:3, :3]
    d = d_cam @ rot  # = (R^T d_cam^T)^T
    return view.center, d / np.linalg.norm(d, axis=-1, keepdims=True)


def _hit_ground(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -o[2] / d[:, 2]
    p = o + t[:, None] * d
    ok = (t > 0) & (np.abs(p[:, 0]) <= GROUND_HALF) & (np.abs(p[:, 1]) <= GROUND_HALF)
    return np.where(ok, t, NO_HIT), np.broadcast_to([0.0, 0.0, 1.0], d.shape)


def _hit_sphere(o: np.ndarray, d: np.ndarray, sphere) -> tuple[np.ndarray, np.ndarray]:
    c, r = np.array(sphere[:3]), sphere[3]
    oc = o - c
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    t = np.where((disc >= 0) & (t > 0), t, NO_HIT)
    n = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - c) / r
    return t, n


def _hit_box(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.array(BOX[0]), np.array(BOX[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    tmin = np.nan_to_num(tmin, nan=-NO_HIT)
    t_near, t_far = tmin.max(1), np.nan_to_num(tmax, nan=NO_HIT).min(1)
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, NO_HIT)
    axis = tmin.argmax(1)
    n = np.zeros_like(d)
    n[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, n


def cast(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays d [M, 3] from o [3]: t [M] (inf = miss), normal [M, 3], object id [M] (-1 = miss)."""
    hits = [_hit_ground(o, d)] + [_hit_sphere(o, d, s) for s in SPHERES] + [_hit_box(o, d)]
    ts = np.stack([h[0] for h in hits])
    best = ts.argmin(0)
    t = ts[best, np.arange(len(d))]
    normals = np.stack([np.broadcast_to(h[1], d.shape) for h in hits])[best, np.arange(len(d))]
    return t, normals, np.where(np.isfinite(t), best, -1)


# ---------------------------------------------------------------- appearance


def _value_noise(p: np.ndarray, cell: float, table: np.ndarray) -> np.ndarray:
    """Smooth 3D value noise: points [M, 3] -> colours [M, 3] interpolated from a wrapped random lattice."""
    q = p / cell
    i0 = np.floor(q)
    f = q - i0
    w = f * f * (3 - 2 * f)  # smoothstep weights
    lo = i0.astype(np.int64) % LATTICE
    corners = (lo, (lo + 1) % LATTICE)
    weights = (1 - w, w)
    flat = table.reshape(-1, 3)
    out = np.zeros(p.shape, np.float32)
    for a, b, c in np.ndindex(2, 2, 2):
        idx = (corners[a][:, 0] * LATTICE + corners[b][:, 1]) * LATTICE + corners[c][:, 2]
        out += (weights[a][:, 0] * weights[b][:, 1] * weights[c][:, 2])[:, None] * np.take(flat, idx, axis=0)
    return out


def albedo(p: np.ndarray, obj: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Surface colour [M, 3] in [0, 1] of points p [M, 3] on objects obj [M]."""
    q = p + OBJECT_OFFSET * obj[:, None]
    tint = TINT_FLOOR + (1 - TINT_FLOOR) * _value_noise(q, TINT_CELL, table)
    luma = sum(wt * _value_noise(q + off, cell, table)[:, 0]
               for wt, cell, off in zip(LUMA_WEIGHTS, LUMA_CELLS, OCTAVE_OFFSETS))
    luma = np.clip(0.5 + LUMA_CONTRAST * (luma - 0.5), *LUMA_RANGE)
    return tint * luma[:, None]


def shade(colour: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Lambertian shading of colours [M, 3] with unit normals [M, 3]."""
    lambert = np.clip(normal @ LIGHT_DIR, 0.0, None)
    return colour * (AMBIENT + (1 - AMBIENT) * lambert)[:, None]


def render_view(view: SyntheticView, table: np.ndarray, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Ray-cast one view -> uint8 RGB image [H, W, 3]."""
    o, d = _rays(view, ss)
    d = d.reshape(-1, 3)
    t, n, obj = cast(o, d)
    rgb = np.full(d.shape, BACKGROUND)
    hit = obj >= 0
    p = o + t[hit, None] * d[hit]
    rgb[hit] = shade(albedo(p, obj[hit], table), n[hit])
    rgb = rgb.reshape(view.height, ss, view.width, ss, 3).mean(axis=(1, 3))
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def view_invdepth(view: SyntheticView, ss: int = SUPERSAMPLE) -> np.ndarray:
    """Ray-cast one view -> [H, W] float64 inverse view-space depth 1/z, averaged over ss x ss samples
    per pixel (a missed ray counts 0, as the background composites nothing)."""
    o, d = _rays(view, ss)
    d = d.reshape(-1, 3)
    t, _, obj = cast(o, d)
    z = t * (d @ view.world_to_cam[2, :3])  # distance along the ray -> along the optical axis
    inv = np.where(obj >= 0, 1.0 / np.where(obj >= 0, z, 1.0), 0.0)
    return inv.reshape(view.height, ss, view.width, ss).mean(axis=(1, 3))


def invdepth_png(invdepth: np.ndarray) -> np.ndarray:
    """[H, W] inverse depth -> uint16 PNG values in graphdeco's Blender encoding (value = 1/z x 512)."""
    raw = np.round(invdepth * BLENDER_DIVISOR)
    if raw.max() > UINT16_MAX:
        raise UserError(f"inverse depth {invdepth.max():.4g} is beyond the 16-bit Blender encoding (at most "
                        f"{UINT16_MAX / BLENDER_DIVISOR:.4g}); move the cameras further away")
    return raw.astype(np.uint16)


def colour_table(seed: int) -> np.ndarray:
    """[LATTICE, LATTICE, LATTICE, 3] random lattice colours."""
    return np.random.default_rng(seed).random((LATTICE, LATTICE, LATTICE, 3)).astype(np.float32)


# ---------------------------------------------------------------- surface points


def _inside_any(p: np.ndarray, skip: int) -> np.ndarray:
    """[M] points inside a sphere or the box (other than object ``skip``); the box's footprint counts."""
    inside = np.zeros(len(p), bool)
    for i, s in enumerate(SPHERES):
        if i + 1 != skip:
            inside |= np.linalg.norm(p - np.array(s[:3]), axis=1) < s[3]
    if skip != len(SPHERES) + 1:
        inside |= np.all((p > np.array(BOX[0]) - CONTACT_EPS) & (p < np.array(BOX[1])), axis=1)
    return inside


def _box_samples(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.array(BOX[0]), np.array(BOX[1])
    p = lo + rng.random((n, 3)) * (hi - lo)
    axis = rng.integers(0, 3, n)
    side = rng.integers(0, 2, n)
    p[np.arange(n), axis] = np.where(side == 1, hi[axis], lo[axis])
    nrm = np.zeros((n, 3))
    nrm[np.arange(n), axis] = np.where(side == 1, 1.0, -1.0)
    keep = ~((axis == 2) & (side == 0))  # the bottom face rests on the ground
    return p[keep], nrm[keep]


def sample_surface_points(rng: np.random.Generator, n: int, table: np.ndarray):
    """About ``n`` visible-surface points: positions [N, 3], shaded colours [N, 3], normals [N, 3]."""
    ground_area = (2 * GROUND_HALF) ** 2
    dx, dy, dz = np.array(BOX[1]) - np.array(BOX[0])
    areas = [ground_area] + [4 * math.pi * s[3] ** 2 for s in SPHERES] + [2 * (dx * dy + dy * dz + dx * dz)]
    counts = np.maximum(1, np.round(n * np.array(areas) / sum(areas))).astype(int)
    pts, nrms, objs = [], [], []
    g = np.concatenate([rng.uniform(-GROUND_HALF, GROUND_HALF, (counts[0], 2)), np.zeros((counts[0], 1))], 1)
    groups = [(g, np.broadcast_to([0.0, 0.0, 1.0], g.shape))]
    for s, c in zip(SPHERES, counts[1:-1]):
        u = rng.normal(size=(c, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        groups.append((np.array(s[:3]) + s[3] * u, u))
    groups.append(_box_samples(rng, counts[-1]))
    for obj, (p, nrm) in enumerate(groups):
        keep = ~_inside_any(p, obj) & (p[:, 2] >= 0)
        pts.append(p[keep])
        nrms.append(nrm[keep])
        objs.append(np.full(keep.sum(), obj))
    p, nrm, obj = np.concatenate(pts), np.concatenate(nrms), np.concatenate(objs)
    return p, shade(albedo(p, obj, table), nrm), nrm


# ---------------------------------------------------------------- output


def _frames(views: list[SyntheticView]) -> list[dict]:
    return [{"file_path": f"./images/{v.name}", "transform_matrix": blender_transform(v)} for v in views]


def make_synthetic_blender(out_dir: str | os.PathLike, n_train: int = 24, n_test: int = 4, width: int = 80,
                           height: int = 80, seed: int = 0, depths: bool = False) -> Path:
    """Render the synthetic scene into ``out_dir`` (Blender format; ``depths``: also the inverse-depth maps
    of every view in ``depths/``); returns the folder."""
    if n_train < 1 or n_test < 0 or width < 8 or height < 8:
        raise UserError(f"{out_dir}: need >= 1 training view and images of at least 8x8 pixels")
    out = Path(out_dir)
    table = colour_table(seed)
    views = synthetic_views(n_train, n_test, width, height)
    for v in views:
        save_image(out / "images" / f"{v.name}.png", render_view(v, table))
        if depths:
            write_stored_image(out / DEPTHS_DIR / f"{v.name}{MAP_SUFFIX}", invdepth_png(view_invdepth(v)))
    for split, is_test in (("train", False), ("test", True)):
        write_json(out / f"transforms_{split}.json", {
            "camera_angle_x": CAMERA_ANGLE_X, "frames": _frames([v for v in views if v.is_test == is_test])})
    pts, cols, nrms = sample_surface_points(np.random.default_rng(seed), N_SURFACE_POINTS, table)
    write_points_ply(out / "points3d.ply", pts, cols, nrms)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic Blender-format scene (for tests and demos).")
    parser.add_argument("out_dir")
    parser.add_argument("--views", type=int, default=24, help="training views")
    parser.add_argument("--test_views", type=int, default=4)
    parser.add_argument("--size", default="80x80", help="WIDTHxHEIGHT in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depths", action="store_true", help="also write each view's exact inverse depth to depths/ "
                        "(graphdeco's format; train with -d depths)")
    args = parser.parse_args(argv)
    w, h = parse_size(args.size)
    out = make_synthetic_blender(args.out_dir, args.views, args.test_views, w, h, args.seed, args.depths)
    print(f"wrote {args.views}+{args.test_views} views ({w}x{h}) to {out}")


if __name__ == "__main__":
    run_cli(main)
