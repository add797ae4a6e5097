"""EndoNeRF scenes: a fixed endoscope filming deforming tissue.

Layout::

    SCENE/images/     frames (any of frame-000000.color.png, 000000.png, 0_color.png, ...)
    SCENE/depth/      one depth PNG per frame (see scene.endonerf_depth for the encodings)
    SCENE/masks/      tool masks, 255 = tool / excluded (optional: absent = every pixel valid)
    SCENE/gt_masks/   optional evaluation masks, same convention
    SCENE/poses_bounds.npy   N x 17: LLFF 3x5 [R | t | (H, W, focal)] + near, far

Files are matched to frames by their frame number (the digits that vary between the
names of one folder), sorted numerically; the i-th image is pose row i.

Protocol (the published EndoNeRF one, ALWAYS used, independent of ``--eval``): frame i
of N has time t = i / N and is a test frame when (i - 1) % 8 == 0, else a training frame.
``--max_frames K`` keeps the first K frames (t = i / K).

Poses: LLFF stores camera-to-world with rotation columns [down, right, back]. We convert to
OpenCV (x right, y down, z forward) and express the world in the OpenCV axes of the camera
whose LLFF pose is the identity, so the official scenes' (identity) poses become identity
world-to-camera matrices. Blocks that are not rotations are refused unless
``--identity_poses`` is given.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scene.dataset_readers import CameraInfo, SceneInfo
from scene.endonerf_depth import (  # noqa: F401  (re-exported: the public EndoNeRF API)
    init_points_from_depth,
    load_endonerf_depth,
    load_mask,
    points_extent,
    resolve_depth_mode,
)
from scene.reader_utils import same_aspect
from utils.errors import UserError
from utils.image_utils import IMAGE_EXTENSIONS, image_size
from utils.io_utils import load_npy, shown_path

POSES_BOUNDS_COLUMNS = 17
ROTATION_TOL = 1e-3  # max |R R^T - I| and |det R - 1| accepted for a pose's 3x3 block
TEST_EVERY = 8  # EndoNeRF test frames: (i - 1) % 8 == 0
IDENTITY_HINT = (
    "pass --identity_poses to treat every pose as the identity "
    "(a fixed endoscope, as in the official EndoNeRF scenes)"
)
# LLFF camera axes [down, right, back] -> OpenCV [right, down, forward]; symmetric, its own inverse, det +1.
DRB_TO_OPENCV = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
_DIGITS = re.compile(r"\d+")


@dataclass
class PosesBounds:
    """Parsed poses_bounds.npy: world_to_cam [N, 4, 4] (OpenCV), hwf [N, 3] (H, W, focal), bounds [N, 2]."""

    world_to_cam: np.ndarray
    hwf: np.ndarray
    bounds: np.ndarray


# ----------------------------------------------------------------------------- poses


def drb_to_world_to_cam(c2w_drb: np.ndarray) -> np.ndarray:
    """[3, 4] LLFF camera-to-world ([down, right, back] columns | centre) -> [4, 4] OpenCV world-to-camera.

    c2w_cv = P R P, centre P t with P = DRB_TO_OPENCV (a proper rotation relabelling the world
    axes), so an identity LLFF pose gives the identity.
    """
    c2w = np.eye(4)
    c2w[:3, :3] = DRB_TO_OPENCV @ c2w_drb[:, :3] @ DRB_TO_OPENCV
    c2w[:3, 3] = DRB_TO_OPENCV @ c2w_drb[:, 3]
    w2c = np.eye(4)
    w2c[:3, :3] = c2w[:3, :3].T
    w2c[:3, 3] = -c2w[:3, :3].T @ c2w[:3, 3]
    return w2c


def _check_rotations(path: Path, blocks: np.ndarray) -> None:
    """UserError naming the first of the [N, 3, 3] blocks that is not a proper rotation."""
    dets = np.linalg.det(blocks)
    ortho_err = np.abs(blocks @ blocks.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    bad = np.nonzero((ortho_err > ROTATION_TOL) | (np.abs(dets - 1.0) > ROTATION_TOL))[0]
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{path}: the 3x3 block of row {i} is not a rotation (det {dets[i]:.4g}, expected +1 and "
            f"orthonormal; {bad.size} of {len(blocks)} rows are bad); {IDENTITY_HINT}"
        )


def parse_poses_bounds(path: str | os.PathLike, identity_poses: bool = False) -> PosesBounds:
    """Read and validate ``poses_bounds.npy`` ([N, 17]); ``identity_poses`` skips the rotation check."""
    path = Path(path)
    arr = load_npy(path)
    if arr.ndim != 2 or arr.shape[1] != POSES_BOUNDS_COLUMNS or arr.shape[0] == 0:
        raise UserError(
            f"{path}: expected an N x {POSES_BOUNDS_COLUMNS} array (LLFF 3x5 pose + near, far per frame), "
            f"got shape {arr.shape}; regenerate poses_bounds.npy"
        )
    if not np.isfinite(arr).all():
        raise UserError(f"{path}: contains NaN or infinite values; regenerate poses_bounds.npy")
    mats = arr[:, :15].reshape(-1, 3, 5).astype(np.float64)
    n = len(arr)
    if identity_poses:
        w2c = np.repeat(np.eye(4)[None], n, axis=0)
    else:
        _check_rotations(path, mats[:, :, :3])
        w2c = np.stack([drb_to_world_to_cam(m[:, :4]) for m in mats])
    return PosesBounds(world_to_cam=w2c, hwf=mats[:, :, 4].copy(), bounds=arr[:, 15:17].astype(np.float64))


# ----------------------------------------------------------------------------- frame files


def frame_numbers(names: list[str], where: str | os.PathLike) -> list[int]:
    """Frame number of each file name of one folder: the digit run that varies between the names.

    All names must share one pattern (same text around the digits). With one file, the last digit
    run is used. Several varying runs are accepted only when they give the same order.
    """
    skeletons: dict[str, str] = {}
    for name in names:
        skeletons.setdefault(_DIGITS.sub("#", name), name)
    if len(skeletons) > 1:
        a, b = list(skeletons.values())[:2]
        raise UserError(f"{where}: file names follow different patterns ({a!r} vs {b!r}); keep only the frames, named alike")
    runs = [[int(x) for x in _DIGITS.findall(n)] for n in names]
    if not runs[0]:
        raise UserError(f"{where}: file name {names[0]!r} has no frame number; name frames like 000000.png")
    varying = [k for k in range(len(runs[0])) if len({r[k] for r in runs}) > 1]
    k = varying[0] if varying else len(runs[0]) - 1
    order = sorted(range(len(names)), key=lambda i: runs[i][k])
    for j in varying[1:]:
        if sorted(range(len(names)), key=lambda i: runs[i][j]) != order:
            raise UserError(f"{where}: file names hold several numbers that disagree on the frame order (e.g. {names[0]!r})")
    return [r[k] for r in runs]


def index_frames(folder: Path) -> dict[int, Path]:
    """Frame number -> image file in ``folder`` (hidden files and non-images ignored), numerically sorted."""
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        return {}
    out: dict[int, Path] = {}
    for num, p in zip(frame_numbers([p.name for p in files], folder), files):
        if num in out:
            raise UserError(f"{folder}: {out[num].name} and {p.name} both have frame number {num}; keep one")
        out[num] = p
    return dict(sorted(out.items()))


def _match(folder: Path, index: dict[int, Path], nums: list[int], images: list[Path], what: str) -> list[Path]:
    """The file of each frame number in ``index``, or a UserError naming the first missing frame."""
    for num, img in zip(nums, images):
        if num not in index:
            raise UserError(
                f"{folder}: no {what} for frame {num} (image {img.name}); every image needs one with the same frame number"
            )
    return [index[n] for n in nums]


# ----------------------------------------------------------------------------- scene


def is_test_frame(i: int) -> bool:
    """EndoNeRF protocol: frame i is a test frame when (i - 1) % 8 == 0 (1, 9, 17, ...)."""
    return (i - 1) % TEST_EVERY == 0


def _intrinsics(hwf: np.ndarray, width: int, height: int, where: Path, row: int, image: Path
                ) -> tuple[float, float, float]:
    """(fx, fy, (sx, sy)): focal of one hwf row [3] scaled to the actual image size by (sx, sy).

    The image may be a uniformly scaled copy of the hwf size, not another aspect ratio."""
    h0, w0, focal = (float(x) for x in hwf)
    if h0 <= 0 or w0 <= 0 or focal <= 0:
        raise UserError(f"{where}: row {row}: hwf column has non-positive values ({h0}, {w0}, {focal}); "
                        "regenerate poses_bounds.npy")
    if not same_aspect((width, height), (w0, h0)):
        raise UserError(f"{shown_path(image)}: frames are {width}x{height} but {where.name} row {row} says "
                        f"{w0:g}x{h0:g} (a different aspect ratio); use the matching images or fix the hwf column")
    return focal * width / w0, focal * height / h0, (width / w0, height / h0)


def _require_folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{path}: {what} folder not found (EndoNeRF scenes hold images/, depth/, masks/, poses_bounds.npy)")
    return path


def _index_optional(folder: Path) -> dict[int, Path] | None:
    return index_frames(folder) if folder.is_dir() else None


@dataclass
class FrameFiles:
    """Per-frame files in frame order: frame numbers, images, depths, masks (None without masks/), gt masks."""

    numbers: list[int]
    images: list[Path]
    depths: list[Path]
    masks: list[Path | None]
    gt_masks: list[Path] | None


def find_frame_files(root: Path, images_name: str, n_poses: int) -> FrameFiles:
    """Match images, depths, masks and gt masks of ``root`` by frame number; check the image count."""
    images_dir = _require_folder(root / images_name, "images")
    depth_dir = _require_folder(root / "depth", "depth")
    image_index = index_frames(images_dir)
    if len(image_index) != n_poses:
        raise UserError(
            f"{images_dir}: {len(image_index)} images but {root / 'poses_bounds.npy'} has {n_poses} pose rows; "
            "they must match one to one"
        )
    nums, images = list(image_index), list(image_index.values())
    depths = _match(depth_dir, index_frames(depth_dir), nums, images, "depth map")
    mask_index = _index_optional(root / "masks")
    if mask_index is None:
        print(f"[endonerf] {shown_path(root / 'masks')} not found: every pixel counts as tissue")
    masks = _match(root / "masks", mask_index, nums, images, "mask") if mask_index is not None else [None] * len(nums)
    gt_index = _index_optional(root / "gt_masks")
    gt_masks = _match(root / "gt_masks", gt_index, nums, images, "gt mask") if gt_index is not None else None
    return FrameFiles(nums, images, depths, masks, gt_masks)


def check_frame_sizes(files: FrameFiles, n: int) -> tuple[int, int]:
    """(width, height) of frame 0's image; a UserError naming the first image, mask, depth map or gt mask
    of the first ``n`` frames whose size differs (nothing is resized to hide it)."""
    size = image_size(files.images[0])
    groups = [files.images, files.depths, files.masks] + ([files.gt_masks] if files.gt_masks else [])
    for i in range(n):
        for path in (group[i] for group in groups):
            if path is not None and (other := image_size(path)) != size:
                raise UserError(
                    f"{shown_path(path)}: is {other[0]}x{other[1]} but frame 0 ({files.images[0].name}) is "
                    f"{size[0]}x{size[1]}; every image, mask and depth map of a scene must have one size"
                )
    return size


def _make_cameras(files: FrameFiles, poses: PosesBounds, n: int, pb_path: Path, depth: tuple[str, float]
                  ) -> list[CameraInfo]:
    """CameraInfo of the first ``n`` frames (size from frame 0's image; time i / n; EndoNeRF split);
    ``depth``: the scene's resolved (depth_mode, depth_scale)."""
    width, height = check_frame_sizes(files, n)
    cams, noted = [], False
    for i in range(n):
        fx, fy, ratio = _intrinsics(poses.hwf[i], width, height, pb_path, i, files.images[i])
        if ratio != (1.0, 1.0) and not noted:
            print(f"[endonerf] images are {width}x{height} but {pb_path.name} hwf says "
                  f"{poses.hwf[i][1]:g}x{poses.hwf[i][0]:g}: focal scaled by {ratio[0]:.4g} x {ratio[1]:.4g}")
            noted = True
        mask = files.masks[i]
        cams.append(CameraInfo(
            uid=i, image_name=files.images[i].stem, image_path=str(files.images[i]), width=width, height=height,
            fx=fx, fy=fy, cx=width / 2.0, cy=height / 2.0, world_to_cam=poses.world_to_cam[i].copy(),
            time=i / n, mask_path=str(mask) if mask else None, depth_path=str(files.depths[i]),
            depth_mode=depth[0], depth_scale=depth[1], is_test=is_test_frame(i),
        ))
    return cams


def read_endonerf_scene(path: str | os.PathLike, args) -> SceneInfo:
    """Read an EndoNeRF scene folder into a :class:`SceneInfo` (kind 'endonerf').

    Uses ``args``: images (folder name), depth_mode, depth_scale, identity_poses,
    num_init_points, max_frames, seed. The split is ALWAYS the EndoNeRF protocol (module
    docstring), independent of ``args.eval``. Extras: ``depth_mode`` (resolved 'depth' |
    'inverse', pass it to load_endonerf_depth), ``depth_scale``, ``gt_mask_paths``
    (image_name -> evaluation mask path; empty without gt_masks/), ``bounds`` [N, 2] list,
    ``frame_numbers``. Every camera carries the same resolved ``depth_mode`` and ``depth_scale``,
    so the initial points and the camera loader's depth targets use one unit. ``extent``: the
    cameras share one centre, so it is the radius of the initial points around their centroid
    x 1.1 (:func:`points_extent`). Every image, mask and depth map must have frame 0's size.
    """
    root = Path(path)
    pb_path = root / "poses_bounds.npy"
    poses = parse_poses_bounds(pb_path, args.identity_poses)
    files = find_frame_files(root, args.images, len(poses.hwf))
    max_frames = args.max_frames
    n = min(len(files.numbers), max_frames) if max_frames > 0 else len(files.numbers)

    asked = args.depth_mode
    depth_mode = resolve_depth_mode(asked, files.depths[0], poses.bounds)
    if asked == "auto":
        print(f"[endonerf] depth maps read as {'plain' if depth_mode == 'depth' else 'inverse'} depth "
              f"(auto: {depth_mode!r}; --depth_mode depth|inverse overrides)")
    depth_scale = args.depth_scale

    cams = _make_cameras(files, poses, n, pb_path, (depth_mode, depth_scale))
    train = [c for c in cams if not c.is_test]
    test = [c for c in cams if c.is_test]
    pcd = init_points_from_depth(
        train, depth_mode, depth_scale, args.num_init_points, args.seed
    )
    gt = files.gt_masks
    extras = {
        "depth_mode": depth_mode,
        "depth_scale": depth_scale,
        "gt_mask_paths": {c.image_name: str(gt[c.uid]) for c in cams} if gt else {},
        "bounds": poses.bounds[:n].tolist(),
        "frame_numbers": files.numbers[:n],
    }
    return SceneInfo(kind="endonerf", point_cloud=pcd, train_cameras=train, test_cameras=test,
                     extent=points_extent(pcd.points), extras=extras)
