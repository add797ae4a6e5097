"""Render modes: what the viewer draws from one :func:`gaussian_renderer.render` call.

Every mode returns an [H,W,3] uint8 image. Feature PCA uses one fixed projection per
model (as render.py); cluster mode colours each Gaussian by its ``clusters/labels.npy``
label and drops hidden clusters.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gaussian_renderer import render
from scene.gaussian_model import GaussianModel, subset_model
from utils.clustering import palette
from utils.image_utils import colorize_depth, to_uint8

RGB, DEPTH, PCA, CLUSTERS = "RGB", "Depth", "Feature PCA", "Clusters"
MODES = (RGB, DEPTH, PCA, CLUSTERS)
UNCLUSTERED_GREY = 0.5  # colour of Gaussians with label -1 (not clustered, e.g. low opacity)
DEPTH_ALPHA_MIN = 0.5  # depth is shown where the accumulated opacity exceeds this


class DisplayModel:
    """``model`` as the viewer draws it: its activated tensors computed once (not per frame), detached,
    and any SH degree up to the model's. Everything else is read from ``model``."""

    def __init__(self, model: GaussianModel, sh_degree: int | None = None):
        self._model = model
        with torch.no_grad():
            self.get_features = model.get_features.detach()
            self.get_opacity = model.get_opacity.detach()
            sem = model.get_semantic
            self.get_semantic = None if sem is None else sem.detach()
            self._static = None if model.is_deformable else tuple(x.detach() for x in model.geometry_at(0.0))
        self.active_sh_degree = model.active_sh_degree if sh_degree is None else min(int(sh_degree), model.max_sh_degree)

    def with_sh_degree(self, sh_degree: int) -> "DisplayModel":
        """The same cached tensors shown with another SH degree."""
        out = copy.copy(self)
        out.active_sh_degree = min(int(sh_degree), self._model.max_sh_degree)
        return out

    def most_visible(self, budget: int) -> "DisplayModel":
        """The ``budget`` Gaussians that cover the most (opacity x squared mean scale), for frames while moving."""
        if budget <= 0 or budget >= self._model.num_points:
            return self
        with torch.no_grad():
            size = self._model.get_scaling.detach().mean(dim=1)
            keep = torch.zeros(self._model.num_points, dtype=torch.bool, device=size.device)
            keep[torch.topk(self.get_opacity[:, 0] * size * size, budget).indices] = True
        return DisplayModel(subset_model(self._model, keep), self.active_sh_degree)

    def geometry_at(self, t: float, kernel=None):
        return self._static if self._static is not None else self._model.geometry_at(t, kernel)

    def __getattr__(self, name):
        if name == "_model" or name.startswith("__"):  # copy.copy probes these before _model exists
            raise AttributeError(name)
        return getattr(self._model, name)


def load_cluster_labels(model_path: str | Path, num_gaussians: int) -> tuple[np.ndarray | None, str]:
    """``MODEL/clusters/labels.npy`` as an [N] int array, or (None, why not)."""
    path = Path(model_path) / "clusters" / "labels.npy"
    if not path.is_file():
        return None, f"{path} not found; run cluster.py -m {model_path} for cluster colours"
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return None, f"{path}: not a readable .npy file ({exc}); rerun cluster.py"
    if labels.ndim != 1 or labels.shape[0] != num_gaussians or not np.issubdtype(labels.dtype, np.integer):
        return None, (f"{path}: {labels.shape} {labels.dtype} labels for a model of {num_gaussians} Gaussians; "
                      f"rerun cluster.py on this iteration")
    return labels.astype(np.int64), ""


@dataclass
class ClusterColours:
    """Per-Gaussian cluster labels [N] (-1 = none), their palette [K,3] and which clusters are shown."""

    labels: np.ndarray
    colours: np.ndarray = field(init=False)
    visible: np.ndarray = field(init=False)

    def __post_init__(self):
        k = int(self.labels.max()) + 1 if self.labels.size and self.labels.max() >= 0 else 0
        self.colours = palette(k)
        self.visible = np.ones(k, bool)

    @property
    def num_clusters(self) -> int:
        return len(self.colours)

    def per_gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """(keep [N] bool: the Gaussian's cluster is shown (unclustered ones always are), colours [N,3])."""
        lab = self.labels
        keep = np.where(lab >= 0, self.visible[np.clip(lab, 0, None)] if self.num_clusters else True, True)
        col = np.where(lab[:, None] >= 0, self.colours[np.clip(lab, 0, None)] if self.num_clusters else UNCLUSTERED_GREY,
                       UNCLUSTERED_GREY)
        return keep, col.astype(np.float32)


@torch.no_grad()
def render_mode(mode: str, camera, model, pipe, bg: torch.Tensor, time: float, projector=None,
                clusters: ClusterColours | None = None) -> np.ndarray:
    """[H,W,3] uint8 image of ``model`` seen from ``camera`` at ``time`` in ``mode``.

    ``projector``: [D,H,W] feature map -> [H,W,3] uint8 (feature PCA); ``clusters``: labels for
    cluster mode. A mode whose input is missing raises ValueError (the caller reports it).
    """
    if mode == PCA:
        if projector is None or model.get_semantic is None:
            raise ValueError("the model has no per-Gaussian features (train with --feature_dim and a --dino_feature_dir)")
        return projector(render(camera, model, pipe, bg, time=time)["feature_map"])
    if mode == CLUSTERS:
        if clusters is None:
            raise ValueError("no clusters/labels.npy for this model (run cluster.py)")
        keep, colours = clusters.per_gaussian()
        keep_t = torch.from_numpy(keep).to(model.device)
        part = model if keep.all() else subset_model(model, keep_t)
        override = torch.from_numpy(colours).to(model.device)[keep_t]
        return to_uint8(render(camera, part, pipe, bg, time=time, override_color=override, render_features=False)["render"])
    pkg = render(camera, model, pipe, bg, time=time, render_features=False)
    if mode == DEPTH:
        return colorize_depth(pkg["depth"], pkg["alpha"] > DEPTH_ALPHA_MIN)
    if mode != RGB:
        raise ValueError(f"unknown render mode {mode!r}; choose one of {', '.join(MODES)}")
    return to_uint8(pkg["render"])
