#!/usr/bin/env python
"""Render a trained model's train/test views (and videos / feature maps where they apply).

    python render.py -m OUT [--iteration -1] [--skip_train] [--skip_test] [--video]

Writes OUT/{train,test}/ours_N/{renders,gt,depth}/00000.png (right halves, exposure-compensated, for a
model trained with --train_test_exp, as graphdeco's render.py); masks/ when views have
evaluation masks (255 = pixel is scored); features/ when the model has per-Gaussian
features; OUT/video/ours_N/ for time sequences.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from arguments import ModelParams, PipelineParams, parse
from arguments.config import Params, param
from gaussian_renderer import render
from scene import Scene, background_color
from scene.coded_maps import binary_map
from scene.gaussian_model import GaussianModel
from scene.exposure import Exposures, right_half
from scene.model_folder import MASK_SOURCE_FILE, RENDER_TIMING_FILE, ModelFolder
from utils.errors import UserError, run_cli
from utils.image_utils import colorize_depth, save_image
from utils.io_utils import clear_folder, write_json
from utils.system_utils import pick_device


@dataclass(frozen=True)
class RenderParams(Params):
    """What render.py renders."""

    GROUP = "Rendering"
    iteration: int = param(-1, "saved iteration to render (-1 = the latest)", ge=1, allowed=(-1,))
    skip_train: bool = param(False, "do not render the training views")
    skip_test: bool = param(False, "do not render the test views")
    video: bool = param(False, "also render the whole time sequence as an mp4")
    eval_mask: Literal["tool", "gt"] = param("tool", "EndoNeRF: score pixels outside the tool masks (masks/) or the "
                                             "gt_masks/ evaluation masks")
    quiet: bool = param(False, "no progress bars or messages")


GROUPS = (ModelParams, PipelineParams, RenderParams)


MASK_SOURCES = {
    "tool": "masks/ (tool masks: 255 = tool, excluded)",
    "gt": "gt_masks/ (evaluation masks: 255 = excluded)",
}


def evaluation_masks(scene: Scene, cameras, which: str) -> list:
    """Per camera its [1,H,W] mask (1 = scored) as a CodedMap, or None, for ``which`` = 'tool' (the cameras'
    own) or 'gt' (gt_masks/)."""
    if which == "tool":
        return [cam.mask_data for cam in cameras]
    paths = scene.info.extras.get("gt_mask_paths") or {}
    if not paths:
        raise UserError(f"{scene.info.kind} scene has no gt_masks/ folder; use --eval_mask tool")
    from scene.endonerf_reader import load_mask

    out = []
    for cam in cameras:
        if cam.image_name not in paths:
            raise UserError(f"gt_masks/: no evaluation mask for frame {cam.image_name}")
        valid = load_mask(paths[cam.image_name], cam.image_width, cam.image_height)
        out.append(binary_map(valid[None]))
    return out


@torch.no_grad()
def render_set(out_dir: Path, cameras, gaussians, pipe, bg, feature_projector, quiet: bool, masks: list,
               mask_source: str, exposures: Exposures | None = None) -> None:
    """Write renders, ground truth, depth (and masks / feature PCA) for ``cameras``.

    ``masks``: per camera a CodedMap of its [1,H,W] mask or None (from :func:`evaluation_masks`); ``mask_source``
    describes them in ``mask_source.json`` for metrics.py. ``exposures`` (--train_test_exp):
    renders pass through each image's exposure and every image is cropped to its right half
    (graphdeco's protocol: the left half of a test image fitted its exposure). The time spent in
    render() alone is written to RENDER_TIMING_FILE (frames per second, read by full_eval.py).
    """
    clear_folder(out_dir)  # never mix these renders with an earlier run's
    if any(m is not None for m in masks):
        write_json(out_dir / MASK_SOURCE_FILE, {"mask": mask_source})
    crop = right_half if exposures is not None else (lambda x: x)
    render_s = 0.0
    for idx, cam in enumerate(tqdm(cameras, desc=f"Rendering {out_dir.parent.name}", disable=quiet)):
        start = time.perf_counter()
        pkg = render(cam, gaussians, pipe, bg)
        if pkg["render"].is_cuda:
            torch.cuda.synchronize()
        render_s += time.perf_counter() - start
        image = pkg["render"] if exposures is None else exposures(pkg["render"], cam.image_name)
        name = f"{idx:05d}.png"
        save_image(out_dir / "renders" / name, crop(image))
        save_image(out_dir / "gt" / name, crop(cam.original_image))
        save_image(out_dir / "depth" / name, colorize_depth(crop(pkg["depth"]), crop(pkg["alpha"]) > 0.5))
        if masks[idx] is not None:
            save_image(out_dir / "masks" / name, crop(masks[idx].decode()))
        if feature_projector is not None and pkg["feature_map"] is not None:
            save_image(out_dir / "features" / name, feature_projector(crop(pkg["feature_map"])))
    if cameras:
        write_json(out_dir / RENDER_TIMING_FILE, {"views": len(cameras), "render_seconds": render_s,
                                                  "fps": len(cameras) / max(render_s, 1e-9)})


def load_exposures(dataset: ModelParams, folder: ModelFolder, device) -> Exposures | None:
    """The model's exposure.json when it was trained with --train_test_exp (else None)."""
    if not dataset.train_test_exp:
        return None
    if not folder.exposure_json.is_file():
        raise UserError(f"--train_test_exp: {folder.exposure_json} not found; the model was trained without "
                        "--train_test_exp (drop the flag) or the file was removed (retrain)")
    return Exposures.load(folder.exposure_json, device)


def render_sets(dataset: ModelParams, pipe: PipelineParams, opts: RenderParams) -> Path:
    iteration, skip_train, skip_test, video, quiet, eval_mask = (
        opts.iteration, opts.skip_train, opts.skip_test, opts.video, opts.quiet, opts.eval_mask)
    device = pick_device(dataset.device)
    gaussians = GaussianModel(dataset.sh_degree, device=device)
    scene = Scene(dataset, gaussians, load_iteration=iteration, device=device, load_test_only=skip_train, quiet=quiet)
    bg = torch.tensor(background_color(dataset.white_background), device=device)
    projector = None
    if gaussians.get_semantic is not None:
        from utils.feature_pca import feature_colorizer

        projector = feature_colorizer(gaussians.get_semantic)
    root, it = scene.folder, scene.loaded_iter
    exposures = load_exposures(dataset, root, device)
    for split, cams, skip in (("train", scene.getTrainCameras(), skip_train), ("test", scene.getTestCameras(), skip_test)):
        if not skip:
            masks = evaluation_masks(scene, cams, eval_mask)
            render_set(root.renders_dir(split, it), cams, gaussians, pipe, bg, projector, quiet, masks, MASK_SOURCES[eval_mask],
                       exposures)
    if video:
        from utils.video import render_sequence_video

        cams = sorted(scene.getTrainCameras() + scene.getTestCameras(), key=lambda c: (c.time, c.image_name))
        path = render_sequence_video(root.video_dir(it), cams, gaussians, pipe, bg, projector, quiet)
        if not quiet:
            print(f"Video: {path}")
    return root.root


def main(argv: list[str] | None = None) -> Path:
    dataset, pipe, opts = parse(GROUPS, sys.argv[1:] if argv is None else argv, "Render a trained Gaussian Splatting model",
                                from_model=True)
    if not opts.quiet:
        print(f"Rendering {dataset.model_path}")
    return render_sets(dataset, pipe, opts)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
