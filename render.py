#!/usr/bin/env python
"""Render a trained model's train/test views (and videos / feature maps where they apply).

    python render.py -m OUT [--iteration -1] [--skip_train] [--skip_test] [--video]

Writes OUT/{train,test}/ours_N/{renders,gt,depth}/00000.png; masks/ when views have
evaluation masks (255 = pixel is scored); features/ when the model has per-Gaussian
features; OUT/video/ours_N/ for time sequences.
"""
from __future__ import annotations

import sys
import time
from argparse import ArgumentParser
from pathlib import Path

import torch
from tqdm import tqdm

from arguments import ModelParams, PipelineParams, get_combined_args
from gaussian_renderer import render
from scene import Scene, background_color
from scene.gaussian_model import GaussianModel
from utils.errors import UserError, run_cli
from utils.image_utils import colorize_depth, save_image
from utils.io_utils import RENDER_TIMING_FILE, write_json
from utils.system_utils import pick_device


def build_parser() -> tuple[ArgumentParser, ModelParams, PipelineParams]:
    parser = ArgumentParser(description="Render a trained Gaussian Splatting model")
    lp, pp = ModelParams(parser, sentinel=True), PipelineParams(parser)
    parser.add_argument("--iteration", default=-1, type=int)
    parser.add_argument("--skip_train", action="store_true")
    parser.add_argument("--skip_test", action="store_true")
    parser.add_argument("--video", action="store_true", help="also render the whole time sequence as an mp4")
    parser.add_argument("--eval_mask", default="tool", choices=["tool", "gt"],
                        help="EndoNeRF: score pixels outside the tool masks (masks/, default) or the gt_masks/ evaluation masks")
    parser.add_argument("--quiet", action="store_true")
    return parser, lp, pp


MASK_SOURCES = {
    "tool": "masks/ (tool masks: 255 = tool, excluded)",
    "gt": "gt_masks/ (evaluation masks: 255 = excluded)",
}


def evaluation_masks(scene: Scene, cameras, which: str) -> list:
    """Per camera [1,H,W] mask (1 = scored) for ``which`` = 'tool' (the cameras' own) or 'gt' (gt_masks/)."""
    if which == "tool":
        return [cam.mask for cam in cameras]
    paths = scene.info.extras.get("gt_mask_paths") or {}
    if not paths:
        raise UserError(f"{scene.info.kind} scene has no gt_masks/ folder; use --eval_mask tool")
    from scene.endonerf_reader import load_mask

    out = []
    for cam in cameras:
        if cam.image_name not in paths:
            raise UserError(f"gt_masks/: no evaluation mask for frame {cam.image_name}")
        valid = load_mask(paths[cam.image_name], cam.image_width, cam.image_height)
        out.append(torch.from_numpy(valid.astype("float32"))[None].to(cam.original_image.device))
    return out


@torch.no_grad()
def render_set(out_dir: Path, cameras, gaussians, pipe, bg, feature_projector, quiet: bool, masks: list,
               mask_source: str) -> None:
    """Write renders, ground truth, depth (and masks / feature PCA) for ``cameras``.

    ``masks``: per camera [1,H,W] mask or None (from :func:`evaluation_masks`); ``mask_source``
    describes them in ``mask_source.json`` for metrics.py. The time spent in render() alone is
    written to RENDER_TIMING_FILE (frames per second, read by full_eval.py).
    """
    if any(m is not None for m in masks):
        write_json(out_dir / "mask_source.json", {"mask": mask_source})
    render_s = 0.0
    for idx, cam in enumerate(tqdm(cameras, desc=f"Rendering {out_dir.parent.name}", disable=quiet)):
        start = time.perf_counter()
        pkg = render(cam, gaussians, pipe, bg)
        if pkg["render"].is_cuda:
            torch.cuda.synchronize()
        render_s += time.perf_counter() - start
        name = f"{idx:05d}.png"
        save_image(out_dir / "renders" / name, pkg["render"])
        save_image(out_dir / "gt" / name, cam.original_image)
        save_image(out_dir / "depth" / name, colorize_depth(pkg["depth"], pkg["alpha"] > 0.5))
        if masks[idx] is not None:
            save_image(out_dir / "masks" / name, masks[idx])
        if feature_projector is not None and pkg["feature_map"] is not None:
            save_image(out_dir / "features" / name, feature_projector(pkg["feature_map"]))
    if cameras:
        write_json(out_dir / RENDER_TIMING_FILE, {"views": len(cameras), "render_seconds": render_s,
                                                  "fps": len(cameras) / max(render_s, 1e-9)})


def render_sets(dataset, iteration: int, pipe, skip_train: bool, skip_test: bool, video: bool = False, quiet=False,
                eval_mask: str = "tool") -> Path:
    device = pick_device(dataset.device)
    gaussians = GaussianModel(dataset.sh_degree, device=device)
    scene = Scene(dataset, gaussians, load_iteration=iteration, device=device, load_test_only=skip_train)
    bg = torch.tensor(background_color(dataset.white_background), device=device)
    projector = None
    if gaussians.get_semantic is not None:
        from utils.feature_pca import feature_colorizer

        projector = feature_colorizer(gaussians.get_semantic)
    root = Path(dataset.model_path)
    it = scene.loaded_iter
    for split, cams, skip in (("train", scene.getTrainCameras(), skip_train), ("test", scene.getTestCameras(), skip_test)):
        if not skip:
            masks = evaluation_masks(scene, cams, eval_mask)
            render_set(root / split / f"ours_{it}", cams, gaussians, pipe, bg, projector, quiet, masks, MASK_SOURCES[eval_mask])
    if video:
        from utils.video import render_sequence_video

        cams = sorted(scene.getTrainCameras() + scene.getTestCameras(), key=lambda c: (c.time, c.image_name))
        path = render_sequence_video(root / "video" / f"ours_{it}", cams, gaussians, pipe, bg, projector, quiet)
        if not quiet:
            print(f"Video: {path}")
    return root


def main(argv: list[str] | None = None) -> Path:
    parser, lp, pp = build_parser()
    args = get_combined_args(parser, argv if argv is not None else sys.argv[1:])
    if not args.quiet:
        print(f"Rendering {args.model_path}")
    return render_sets(lp.extract(args), args.iteration, pp.extract(args), args.skip_train, args.skip_test, args.video,
                       args.quiet, args.eval_mask)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
