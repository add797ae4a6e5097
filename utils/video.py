"""Render a time sequence of views into an mp4 (opencv), frames side by side with ground truth."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from gaussian_renderer import render
from utils.errors import UserError
from utils.image_utils import colorize_depth, to_uint8
from utils.io_utils import atomic_path

VIDEO_FPS = 15
VIDEO_CODEC = "mp4v"  # available in opencv-python-headless wheels without extra libraries


@torch.no_grad()
def render_sequence_video(out_dir: Path, cameras, gaussians, pipe, bg, feature_projector=None, quiet=False) -> Path:
    """Write ``out_dir/renders.mp4``: per frame [ground truth | render | depth (| features)]."""
    path = Path(out_dir) / "renders.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    for cam in tqdm(cameras, desc="Rendering video", disable=quiet):
        pkg = render(cam, gaussians, pipe, bg)
        panels = [to_uint8(cam.original_image), to_uint8(pkg["render"]), colorize_depth(pkg["depth"], pkg["alpha"] > 0.5)]
        if feature_projector is not None and pkg["feature_map"] is not None:
            panels.append(feature_projector(pkg["feature_map"]))
        frames.append(np.concatenate(panels, axis=1))
    if not frames:
        raise UserError(f"{out_dir}: no cameras to render a video from")
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_CODEC), VIDEO_FPS, (w, h))
        if not writer.isOpened():
            raise UserError(f"{path}: opencv cannot open an mp4 writer ({VIDEO_CODEC})")
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
    return path
