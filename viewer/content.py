"""What the viewer shows: the Gaussians (replaceable while training), cameras to snap to, colourings.

:class:`ViewerContent` is shared by the render threads; :func:`load_model_folder` builds
one from a trained model folder (as render.py and cluster.py load it).
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

import torch

from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from viewer.modes import ClusterColours, DisplayModel, load_cluster_labels


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (the viewer keeps running)."""
    print(f"warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


@dataclass
class ViewerContent:
    """The model being shown and what goes with it.

    cameras: (label, camera) pairs the browser can snap to; extent: scene radius (snap tolerance);
    projector(): the fixed feature-PCA colouring of the current Gaussians (None without features);
    clusters: cluster labels or None, with
    ``clusters_note`` saying why not.
    """

    gaussians: GaussianModel
    pipe: object
    bg: torch.Tensor
    cameras: list[tuple[str, Camera]] = field(default_factory=list)
    extent: float = 1.0
    clusters: ClusterColours | None = None
    clusters_note: str = "no clusters/labels.npy for this model (run cluster.py)"
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)  # name -> (version it was built for, value)

    @property
    def times(self) -> list[float]:
        """Sorted distinct camera times (several only for deformable scenes)."""
        return sorted({float(c.time) for _, c in self.cameras})

    def replace_gaussians(self, gaussians: GaussianModel) -> None:
        """Show another set of Gaussians (training snapshots); render threads pick it up at their next frame."""
        with self.lock:
            self.gaussians = gaussians
            self.version += 1

    def current(self) -> tuple[GaussianModel, int]:
        with self.lock:
            return self.gaussians, self.version

    def _cached(self, name: str, build):
        """``build(gaussians)`` for the current Gaussians, computed once per version."""
        gaussians, version = self.current()
        with self.lock:
            if self._cache.get(name, (-1, None))[0] != version:
                self._cache[name] = (version, build(gaussians))
            return self._cache[name][1]

    def display(self, budget: int = 0) -> DisplayModel:
        """The current Gaussians with their activated tensors cached (see :class:`DisplayModel`);
        ``budget`` > 0: only that many of the most visible ones (frames while moving)."""
        full = self._cached("display", DisplayModel)
        if budget <= 0 or budget >= full.num_points:
            return full
        return self._cached(f"display_{budget}", lambda _g: full.most_visible(budget))

    def projector(self):
        """[D,H,W] feature map -> [H,W,3] uint8 with one PCA fitted on every Gaussian's feature
        (refitted only when the Gaussians are replaced), or None when they have no features."""
        from utils.feature_pca import feature_colorizer

        return self._cached("projector", lambda g: None if g.get_semantic is None else feature_colorizer(g.get_semantic))


def camera_choices(train: list[Camera], test: list[Camera]) -> list[tuple[str, Camera]]:
    """Labelled cameras: 'test 3: name' first (what render.py scores), then 'train 0: name'."""
    return [(f"test {i}: {c.image_name}", c) for i, c in enumerate(test)] + \
           [(f"train {i}: {c.image_name}", c) for i, c in enumerate(train)]


def load_model_folder(args, pipe, iteration: int, quiet: bool = False) -> ViewerContent:
    """Load a trained model folder (merged ``cfg_args`` in ``args``) for viewing."""
    from scene import Scene, background_color
    from utils.system_utils import pick_device

    device = pick_device(args.device)
    gaussians = GaussianModel(args.sh_degree, device=device)
    scene = Scene(args, gaussians, load_iteration=iteration, device=device, quiet=quiet)
    content = ViewerContent(gaussians, pipe, torch.tensor(background_color(args.white_background), device=device),
                            camera_choices(scene.getTrainCameras(), scene.getTestCameras()), float(scene.cameras_extent))
    content.projector()  # fit the feature PCA now rather than at the first PCA frame
    labels, why = load_cluster_labels(args.model_path, gaussians.num_points)
    if labels is not None:
        content.clusters = ClusterColours(labels)
    else:
        content.clusters_note = why
    if not quiet:
        print(f"Loaded {gaussians.num_points} Gaussians (iteration {scene.loaded_iter}) and {len(content.cameras)} cameras "
              f"from {args.model_path}")
    return content
