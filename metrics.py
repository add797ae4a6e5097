#!/usr/bin/env python
"""Score rendered views: PSNR, SSIM and (when its weights are local) LPIPS.

    python metrics.py -m OUT [OUT2 ...]

Reads OUT/test/ours_N/{renders,gt[,masks]} written by render.py and writes
OUT/results.json and OUT/per_view.json in graphdeco's schema (numbers only), and
OUT/results_info.json: which mask, the protocol, the view count and the LPIPS net.
When masks/ exist (EndoNeRF), render and ground truth are both multiplied by the
mask before scoring (the published protocol). ``--split train`` writes
results_train.json, per_view_train.json and results_info_train.json.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from arguments import parse
from arguments.config import Params, param
from utils.errors import UserError, run_cli
from utils.image_utils import psnr, read_image
from scene.model_folder import MASK_SOURCE_FILE, ModelFolder
from utils.io_utils import read_json_object, write_json
from utils.loss_utils import ssim
from utils.lpips_local import LpipsNet, load_lpips

MASK_PROTOCOL = "render and ground truth multiplied by the mask, then scored over the whole image (EndoNeRF protocol)"


def _tensor(path: Path) -> torch.Tensor:
    img = read_image(path)
    if img.ndim == 2:
        img = img[..., None]
    return torch.from_numpy(img[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)


def score_method(method_dir: Path, lpips_model, quiet: bool = False) -> tuple[dict, dict, dict]:
    """(mean metrics, per-view metrics, how they were scored) of one ``ours_N`` folder."""
    renders_dir, gt_dir, masks_dir = method_dir / "renders", method_dir / "gt", method_dir / "masks"
    names = sorted(p.name for p in renders_dir.glob("*.png")) if renders_dir.is_dir() else []
    if not names:
        raise UserError(f"{renders_dir}: no rendered images; run render.py -m {method_dir.parents[1]} first")
    per_view: dict[str, dict[str, float]] = {"SSIM": {}, "PSNR": {}}
    if lpips_model is not None:
        per_view["LPIPS"] = {}
    masked = masks_dir.is_dir()
    for name in tqdm(names, desc=f"Metrics {method_dir.parent.name}/{method_dir.name}", leave=False, disable=quiet):
        if not (gt_dir / name).is_file():
            raise UserError(f"{gt_dir / name}: ground truth of {renders_dir / name} is missing; rerun render.py")
        if masked and not (masks_dir / name).is_file():
            raise UserError(f"{masks_dir / name}: mask of {renders_dir / name} is missing (the other views are masked); rerun render.py")
        img, gt = _tensor(renders_dir / name), _tensor(gt_dir / name)
        if img.shape != gt.shape:
            raise UserError(f"{renders_dir / name}: size {tuple(img.shape)} differs from ground truth {tuple(gt.shape)}")
        if masked:
            m = _tensor(masks_dir / name)[:1]
            img, gt = img * m, gt * m
        per_view["PSNR"][name] = float(psnr(img, gt))
        per_view["SSIM"][name] = float(ssim(img, gt))
        if lpips_model is not None:
            with torch.no_grad():
                per_view["LPIPS"][name] = float(lpips_model(img[None] * 2 - 1, gt[None] * 2 - 1))
    means = {k: float(np.mean(list(v.values()))) for k, v in per_view.items()}
    info: dict = {"num_views": len(names), "mask": "none"}
    if masked:
        src = method_dir / MASK_SOURCE_FILE
        info["mask"] = read_json_object(src, {"mask": str})["mask"] if src.is_file() else "masks"
        info["mask_protocol"] = MASK_PROTOCOL
    return means, per_view, info


def evaluate(model_paths: list[str], split: str = "test", quiet: bool = False, lpips_net: LpipsNet = "vgg") -> dict:
    """Score every ``MODEL/<split>/ours_N``; writes graphdeco's results/per_view files and our info file.

    Returns ``{model path: {method: {SSIM, PSNR[, LPIPS]}}}`` (what results.json holds).
    """
    lpips_model, reason = load_lpips("cpu", lpips_net)
    if lpips_model is None and not quiet:
        print(f"LPIPS skipped: {reason}. Reporting PSNR and SSIM only.")
    lpips_info = {"lpips_net": lpips_net} if lpips_model is not None else {"lpips_net": None, "lpips_skipped": reason}
    all_results = {}
    for mp in model_paths:
        split_dir = Path(mp) / split
        methods = sorted(d for d in split_dir.glob("ours_*") if d.is_dir()) if split_dir.is_dir() else []
        if not methods:
            raise UserError(f"{split_dir}: no renders found; run render.py -m {mp} first")
        results, per_view, info = {}, {}, {}
        for method in methods:
            results[method.name], per_view[method.name], scored = score_method(method, lpips_model, quiet)
            info[method.name] = {"split": split, **scored, **lpips_info}
            if not quiet:
                r = results[method.name]
                extra = f"  LPIPS({lpips_net}) {r['LPIPS']:.4f}" if "LPIPS" in r else ""
                print(f"{mp} {split}/{method.name}: PSNR {r['PSNR']:.3f}  SSIM {r['SSIM']:.4f}{extra}  (mask: {scored['mask']})")
        folder = ModelFolder(mp)
        write_json(folder.results_json(split), results)
        write_json(folder.per_view_json(split), per_view)
        write_json(folder.results_info_json(split), info)
        all_results[mp] = results
    return all_results


@dataclass(frozen=True)
class MetricsParams(Params):
    """What metrics.py scores."""

    GROUP = "Metrics"
    model_paths: list[str] = param([], "model folders whose renders to score (render.py output)", short="m")
    split: Literal["test", "train"] = param("test", "which rendered views to score (train writes results_train.json, ...)")
    lpips_net: LpipsNet = param("vgg", "LPIPS backbone: vgg (graphdeco's papers) or alex (EndoNeRF papers); "
                                "its weights must be in the local torch cache")
    quiet: bool = param(False, "no progress bars or messages")


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse((MetricsParams,), sys.argv[1:] if argv is None else argv, "Compute PSNR/SSIM/LPIPS of rendered views")
    if not args.model_paths:
        raise UserError("-m/--model_paths is required: the model folder(s) rendered by render.py")
    return evaluate(args.model_paths, args.split, args.quiet, args.lpips_net)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
