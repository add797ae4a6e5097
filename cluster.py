#!/usr/bin/env python
"""Group a trained model's Gaussians by their per-Gaussian features.

    python cluster.py -m OUT --method kmeans|meanshift [--k 4] [--bandwidth auto|X]
                      [--iteration N] [--min_opacity 0.05] [--xyz_weight 0.0] [--min_cluster_fraction 0.01]

Writes OUT/clusters/ (or --save_path DIR): labels.npy ([N] int, -1 = not clustered), summary.json,
clustered.ply (colour = cluster), cluster_XX.ply (one per cluster), and renders of
the test views coloured by cluster (renders/all/) and of each cluster alone
(renders/cluster_XX/).
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

from arguments import ModelParams, PipelineParams, parse
from arguments.config import Params, param
from gaussian_renderer import render
from scene import Scene, background_color
from scene.gaussian_model import GaussianModel, subset_model
from utils.clustering import cluster_space, palette, run_clustering
from utils.errors import UserError, run_cli
from utils.image_utils import save_image
from scene.model_folder import ModelFolder
from utils.io_utils import clear_folder, save_npy, write_json
from utils.sh_utils import rgb_to_sh
from utils.system_utils import pick_device


@dataclass(frozen=True)
class ClusterParams(Params):
    """How cluster.py groups the Gaussians."""

    GROUP = "Clustering"
    method: Literal["kmeans", "meanshift"] = param("kmeans", "clustering algorithm")
    k: int = param(4, "k-means: number of clusters", ge=1)
    bandwidth: str = param("auto", "mean shift: kernel bandwidth in feature units, or auto (estimated)")
    iteration: int = param(-1, "saved iteration to cluster (-1 = the latest)", ge=1, allowed=(-1,))
    min_opacity: float = param(0.05, "cluster only Gaussians at least this opaque", ge=0, le=1)
    xyz_weight: float = param(0.0, "weight of the (normalised) position beside the feature", ge=0)
    min_cluster_fraction: float = param(0.01, "mean shift: modes with fewer points than this fraction are merged into "
                                        "the nearest larger mode", ge=0, le=1)
    max_views: int = param(8, "test views rendered per cluster image set", ge=0)
    no_render: bool = param(False, "write labels and PLYs only, no images")
    save_path: str = param("", "write the clusters to this folder instead of MODEL/clusters (replaced if it holds an "
                           "earlier clustering; refused if it holds other files)")
    quiet: bool = param(False, "no progress bars or messages")

    def check(self) -> None:
        if self.bandwidth != "auto":
            try:
                value = float(self.bandwidth)
            except ValueError:
                value = float("nan")
            if not (value > 0 and value < float("inf")):
                raise UserError(f"--bandwidth {self.bandwidth}: expected auto or a positive number")


GROUPS = (ModelParams, PipelineParams, ClusterParams)
CLUSTER_SUMMARY = "summary.json"  # marks a folder as cluster.py output (--save_path may replace it)


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


def output_folder(folder: ModelFolder, save_path: str) -> Path:
    """MODEL/clusters, or ``--save_path`` when it is new, empty or an earlier clustering (it is replaced)."""
    if not save_path:
        return folder.clusters_dir
    out = Path(save_path)
    if out.is_dir() and any(out.iterdir()) and not (out / CLUSTER_SUMMARY).is_file():
        raise UserError(f"--save_path {out}: folder holds other files (no {CLUSTER_SUMMARY} of an earlier clustering); "
                        "choose a new or empty folder")
    return out


def cluster_model(dataset: ModelParams, pipe: PipelineParams, args: ClusterParams) -> Path:
    device = pick_device(dataset.device)
    folder = ModelFolder(dataset.model_path)
    out_dir = output_folder(folder, args.save_path)
    iteration = folder.resolve_iteration(args.iteration)
    model = GaussianModel(device=device)
    ply = folder.ply(iteration)
    model.load_ply(ply)
    if model.get_semantic is None:
        raise UserError(f"{ply}: the model has no per-Gaussian features; train with --feature_dim 16 --lambda_feature 1 and a --dino_feature_dir")
    keep = (model.get_opacity.squeeze(-1) >= args.min_opacity).cpu().numpy()
    if not keep.any():
        raise UserError(f"{ply}: no Gaussian has opacity >= --min_opacity {args.min_opacity}")
    feats = model.get_semantic.detach().cpu().numpy()[keep]
    xyz = model.get_xyz.detach().cpu().numpy()[keep]
    x = cluster_space(feats, xyz, args.xyz_weight)
    res = run_clustering(x, args.method, args.k, args.bandwidth, seed=dataset.seed, min_fraction=args.min_cluster_fraction)
    labels = np.full(model.num_points, -1, np.int64)
    labels[keep] = res.labels
    n_clusters = int(res.labels.max()) + 1
    colors = palette(n_clusters)
    out = clear_folder(out_dir)  # no file of an earlier clustering may stay beside the new ones
    save_npy(out / "labels.npy", labels)
    sizes = np.bincount(res.labels, minlength=n_clusters)
    summary = {"iteration": iteration, "num_gaussians": model.num_points, "clustered": int(keep.sum()),
               "min_opacity": args.min_opacity, "xyz_weight": args.xyz_weight, "num_clusters": n_clusters,
               "sizes": sizes.tolist(), "centroids": res.centroids.tolist(), "colors": colors.tolist(), **res.info}
    write_json(out / CLUSTER_SUMMARY, summary)
    colored_copy(model, np.where(labels[:, None] >= 0, colors[np.clip(labels, 0, None)], 0.5)).save_ply(out / "clustered.ply")
    for c in range(n_clusters):
        subset_model(model, torch.from_numpy(labels == c).to(device)).save_ply(out / f"cluster_{c:02d}.ply")
    if not args.quiet:
        print(f"{args.method}: {n_clusters} clusters of {int(keep.sum())} Gaussians in {res.info['seconds']:.2f} s; sizes {sizes.tolist()}")
        if "note" in res.info:
            print(res.info["note"])
    if not args.no_render:
        scene = Scene(dataset, GaussianModel(device=device), load_iteration=iteration, device=device, load_test_only=True,
                      quiet=args.quiet)
        bg = torch.tensor(background_color(dataset.white_background), device=device)
        render_clusters(out, scene, model, labels, colors, pipe, bg, args.max_views, args.quiet)
    if not args.quiet:
        print(f"Clusters written to {out}")
    return out


def main(argv=None) -> Path:
    dataset, pipe, args = parse(GROUPS, sys.argv[1:] if argv is None else argv, "Cluster Gaussians by their features",
                                from_model=True)
    return cluster_model(dataset, pipe, args)


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
