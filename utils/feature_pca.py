"""PCA of dense feature maps: fitting, projection and PCA-to-RGB previews.

A basis is ``{"mean": [C], "components": [D][C]}`` (plain lists, stored in
features_meta.json). Projection is affine per cell, so it commutes with bilinear
upsampling and with averaging: features can be projected before or after resizing.
"""
from __future__ import annotations

import numpy as np
import torch

PCA_SEED = 0
PCA_SAMPLES_PER_IMAGE = 4096  # feature vectors drawn from each image for fitting
PCA_MAX_SAMPLES = 200_000  # cap on the fitting set (covariance cost is N * C^2)
PCA_FIT_MAX_IMAGES = 16  # images (evenly spaced over the folder) used to fit a basis (each costs a forward pass)
PREVIEW_COMPONENTS = 3  # RGB
PREVIEW_PERCENTILES = (1.0, 99.0)  # colour range of each preview component, robust to outliers


def sample_vectors(feats: torch.Tensor, valid: torch.Tensor | None, count: int,
                   generator: torch.Generator) -> torch.Tensor:
    """[C,h,w] features (+ [h,w] bool valid cells) -> [n,C] random valid vectors, n <= count."""
    vecs = feats.flatten(1).T
    if valid is not None:
        vecs = vecs[valid.flatten().to(vecs.device)]
    if vecs.shape[0] > count:
        idx = torch.randperm(vecs.shape[0], generator=generator)[:count].to(vecs.device)
        vecs = vecs[idx]
    return vecs.float().cpu()


def evenly_spaced(items: list, count: int) -> list:
    """At most ``count`` items spread evenly over ``items`` (first and last included)."""
    if len(items) <= count:
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def fit_pca(samples: torch.Tensor, dim: int) -> dict:
    """[N,C] samples -> basis dict with mean [C], components [D,C] (rows orthonormal),
    explained_variance_ratio [D]. Exact (eigen-decomposition of the covariance, float64);
    each component's sign is fixed so that its largest-magnitude loading is positive."""
    x = samples.double()
    if dim > x.shape[1]:
        raise ValueError(f"PCA dimension {dim} exceeds the feature dimension {x.shape[1]}")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(x.shape[0] - 1, 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:dim]
    comps = evecs[:, order].T
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    total = evals.clamp_min(0).sum().clamp_min(1e-30)
    return {
        "mean": mean.float().tolist(),
        "components": comps.float().tolist(),
        "explained_variance_ratio": (evals[order].clamp_min(0) / total).float().tolist(),
        "num_samples": int(x.shape[0]),
    }


def basis_tensors(basis: dict, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Basis dict -> (mean [C], components [D,C]) float32 tensors."""
    mean = torch.tensor(basis["mean"], dtype=torch.float32, device=device)
    comps = torch.tensor(basis["components"], dtype=torch.float32, device=device)
    return mean, comps


def project(feats: torch.Tensor, mean: torch.Tensor, comps: torch.Tensor) -> torch.Tensor:
    """[...,C,h,w] features -> [...,D,h,w] = components @ (f - mean) per cell (differentiable)."""
    centred = feats - mean.to(feats.dtype).view(-1, 1, 1)
    return torch.einsum("dc,...chw->...dhw", comps.to(feats.dtype), centred)


def fit_preview(samples: torch.Tensor) -> dict:
    """[N,C] samples -> 3-component basis plus a fixed per-component colour range (lo, hi)."""
    basis = fit_pca(samples, min(PREVIEW_COMPONENTS, samples.shape[1]))
    mean, comps = basis_tensors(basis)
    coords = (samples.float() - mean) @ comps.T
    lo = torch.quantile(coords, PREVIEW_PERCENTILES[0] / 100.0, dim=0)
    hi = torch.quantile(coords, PREVIEW_PERCENTILES[1] / 100.0, dim=0)
    basis.update(lo=lo.tolist(), hi=hi.tolist())
    return basis


def preview_rgb(feats: torch.Tensor, preview: dict, scale: int = 1) -> np.ndarray:
    """[C,h,w] features -> [h*scale, w*scale, 3] uint8 colours from a fixed preview basis."""
    mean, comps = basis_tensors(preview)
    coords = project(feats.float().cpu(), mean, comps)
    lo = torch.tensor(preview["lo"]).view(-1, 1, 1)
    hi = torch.tensor(preview["hi"]).view(-1, 1, 1)
    rgb = ((coords - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    if rgb.shape[0] < PREVIEW_COMPONENTS:
        rgb = torch.cat([rgb, rgb[-1:].expand(PREVIEW_COMPONENTS - rgb.shape[0], -1, -1)], dim=0)
    if scale > 1:
        rgb = rgb.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    return (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def feature_colorizer(features: torch.Tensor, max_samples: int = PCA_MAX_SAMPLES):
    """One fixed PCA-to-RGB mapping fitted on [N,D] vectors (e.g. every Gaussian's feature).

    Returns a function [D,H,W] feature map -> [H,W,3] uint8, so colours are stable across
    views and time.
    """
    x = features.detach().float().reshape(-1, features.shape[-1]).cpu()
    if x.shape[0] > max_samples:
        g = torch.Generator().manual_seed(PCA_SEED)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_samples]]
    preview = fit_preview(x)
    return lambda fmap: preview_rgb(fmap, preview)
