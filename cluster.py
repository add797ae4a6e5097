#!/usr/bin/env python
"""Group a trained model's Gaussians by their per-Gaussian features.

    python cluster.py -m OUT --method kmeans|meanshift [--k 4] [--bandwidth auto|X]
                      [--iteration N] [--min_opacity 0.05] [--xyz_weight 0.0] [--min_cluster_fraction 0.01]

Writes OUT/clusters/: labels.npy ([N] int, -1 = not clustered), summary.json,
clustered.ply (colour = cluster), cluster_XX.ply (one per cluster), and renders of
the test views coloured by cluster (renders/all/) and of each cluster alone
(renders/cluster_XX/).
"""
from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from arguments import ModelParams, PipelineParams, get_combined_args
from gaussian_renderer import render
from scene import Scene, background_color
from scene.gaussian_model import GaussianModel, subset_model
from utils.clustering import cluster_space, palette, run_clustering
from utils.errors import UserError, run_cli
from utils.image_utils import save_image
from utils.io_utils import save_npy, write_json
from utils.sh_utils import rgb_to_sh
from utils.system_utils import pick_device, resolve_iteration


def build_parser():
    parser = ArgumentParser(description="Cluster Gaussians by their features")
    lp, pp = ModelParams(parser, sentinel=True), PipelineParams(parser)
    parser.add_argument("--method", default="kmeans", choices=["kmeans", "meanshift"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--bandwidth", default="auto")
    parser.add_argument("--iteration", type=int, default=-1)
    parser.add_argument("--min_opacity", type=float, default=0.05)
    parser.add_argument("--xyz_weight", type=float, default=0.0)
    parser.add_argument("--min_cluster_fraction", type=float, default=0.01,
                        help="mean shift: modes with fewer points than this fraction are merged into the nearest larger mode")
    parser.add_argument("--max_views", type=int, default=8, help="test views rendered per cluster image set")
    parser.add_argument("--no_render", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    return parser, lp, pp


def colored_copy(model: GaussianModel, colors: np.ndarray) -> GaussianModel:
    """Copy of ``model`` whose SH colour is the flat ``colors`` [N, 3]."""
    out = subset_model(model, torch.ones(model.num_points, dtype=torch.bool, device=model.device))
    dc = rgb_to_sh(torch.tensor(colors, device=model.device))[:, None, :]
    out.params["f_dc"].data = dc
    out.params["f_rest"].data.zero_()
    return out


@torch.no_grad()
def render_clusters(out: Path, scene: Scene, model: GaussianModel, labels: np.ndarray, colors: np.ndarray, pipe, bg, max_views, quiet):
    cams = (scene.getTestCameras() or scene.getTrainCameras())[:max_views]
    n_clusters = len(colors)
    per_gauss = np.where(labels[:, None] >= 0, colors[np.clip(labels, 0, None)], 0.5).astype(np.float32)
    colored = colored_copy(model, per_gauss)
    for i, cam in enumerate(tqdm(cams, desc="Rendering clusters", disable=quiet)):
        save_image(out / "renders" / "all" / f"{i:05d}.png", render(cam, colored, pipe, bg)["render"])
        for c in range(n_clusters):
            part = subset_model(model, torch.from_numpy(labels == c).to(model.device))
            save_image(out / "renders" / f"cluster_{c:02d}" / f"{i:05d}.png", render(cam, part, pipe, bg)["render"])


def cluster_model(args, pipe) -> Path:
    device = pick_device(args.device)
    iteration = resolve_iteration(args.model_path, args.iteration)
    model = GaussianModel(device=device)
    ply = Path(args.model_path) / "point_cloud" / f"iteration_{iteration}" / "point_cloud.ply"
    model.load_ply(ply)
    if model.get_semantic is None:
        raise UserError(f"{ply}: the model has no per-Gaussian features; train with --feature_dim 16 --lambda_feature 1 and a --dino_feature_dir")
    keep = (model.get_opacity.squeeze(-1) >= args.min_opacity).cpu().numpy()
    if not keep.any():
        raise UserError(f"{ply}: no Gaussian has opacity >= --min_opacity {args.min_opacity}")
    feats = model.get_semantic.detach().cpu().numpy()[keep]
    xyz = model.get_xyz.detach().cpu().numpy()[keep]
    x = cluster_space(feats, xyz, args.xyz_weight)
    res = run_clustering(x, args.method, args.k, args.bandwidth, seed=args.seed or 0, min_fraction=args.min_cluster_fraction)
    labels = np.full(model.num_points, -1, np.int64)
    labels[keep] = res.labels
    n_clusters = int(res.labels.max()) + 1
    colors = palette(n_clusters)
    out = Path(args.model_path) / "clusters"
    save_npy(out / "labels.npy", labels)
    sizes = np.bincount(res.labels, minlength=n_clusters)
    summary = {"iteration": iteration, "num_gaussians": model.num_points, "clustered": int(keep.sum()),
               "min_opacity": args.min_opacity, "xyz_weight": args.xyz_weight, "num_clusters": n_clusters,
               "sizes": sizes.tolist(), "centroids": res.centroids.tolist(), "colors": colors.tolist(), **res.info}
    write_json(out / "summary.json", summary)
    colored_copy(model, np.where(labels[:, None] >= 0, colors[np.clip(labels, 0, None)], 0.5)).save_ply(out / "clustered.ply")
    for c in range(n_clusters):
        subset_model(model, torch.from_numpy(labels == c).to(device)).save_ply(out / f"cluster_{c:02d}.ply")
    if not args.quiet:
        print(f"{args.method}: {n_clusters} clusters of {int(keep.sum())} Gaussians in {res.info['seconds']:.2f} s; sizes {sizes.tolist()}")
        if "note" in res.info:
            print(res.info["note"])
    if not args.no_render:
        scene = Scene(args, GaussianModel(device=device), load_iteration=iteration, device=device, load_test_only=True)
        bg = torch.tensor(background_color(args.white_background), device=device)
        render_clusters(out, scene, model, labels, colors, pipe, bg, args.max_views, args.quiet)
    if not args.quiet:
        print(f"Clusters written to {out}")
    return out


def main(argv=None) -> Path:
    parser, lp, pp = build_parser()
    args = get_combined_args(parser, argv if argv is not None else sys.argv[1:])
    return cluster_model(args, pp.extract(args))


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
