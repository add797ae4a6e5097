"""The Gaussian model: per-Gaussian parameters, activations, densification and I/O.

Every per-Gaussian tensor lives in ``self.params`` (name -> nn.Parameter, rows =
Gaussians) and has an Adam group of the same name, so pruning, cloning and
splitting treat all attributes - colour, optional features, deformation - alike.

Stored (pre-activation) values: ``xyz`` [N,3]; ``f_dc`` [N,1,3] and ``f_rest``
[N,K-1,3] SH; ``opacity`` [N,1] logit; ``scaling`` [N,3] log; ``rotation`` [N,4]
(w first); optional ``semantic`` [N,D]; optional ``deform`` [N,B,10].
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from scene import optim_utils
from scene.deformation import DEFORM_CHANNELS, gaussian_geometry
from scene.ply_io import read_gaussian_ply, write_gaussian_ply
from utils.errors import UserError
from utils.general_utils import inverse_sigmoid, normalize, quat_to_rotmat
from utils.sh_utils import num_sh_bases, rgb_to_sh

INIT_OPACITY = 0.1
RESET_OPACITY = 0.01
MIN_INIT_SCALE = 1e-7  # squared-distance floor so coincident points get a finite scale
SPLIT_COUNT = 2  # children per split Gaussian
SPLIT_SCALE_DIV = 0.8 * SPLIT_COUNT  # children are shrunk by this factor
WORLD_SIZE_PRUNE = 0.1  # prune Gaussians wider than this fraction of the scene extent


def nearest_neighbour_scale(points: np.ndarray, k: int = 3) -> np.ndarray:
    """[N] initial scale: sqrt of the mean squared distance to the ``k`` nearest neighbours."""
    if len(points) < 2:
        return np.full(len(points), 0.01, np.float32)
    kk = min(k, len(points) - 1)
    dist, _ = cKDTree(points).query(points, k=kk + 1)
    d2 = (dist[:, 1:] ** 2).mean(axis=1)
    return np.sqrt(np.maximum(d2, MIN_INIT_SCALE)).astype(np.float32)


class GaussianModel:
    """A set of 3D Gaussians with SH colour, optional features and optional deformation."""

    def __init__(self, sh_degree: int = 3, feature_dim: int = 0, deform_basis: int = 0, device: str | torch.device = "cpu"):
        self.max_sh_degree = sh_degree
        self.active_sh_degree = 0
        self.feature_dim = feature_dim
        self.deform_basis = deform_basis
        self.device = torch.device(device)
        self.params: dict[str, nn.Parameter] = {}
        self.optimizer: optim_utils.Adam | None = None
        self.spatial_lr_scale = 1.0
        self._reset_stats(0)

    # ------------------------------------------------------------------ construction
    def create_from_pcd(self, points: np.ndarray, colors: np.ndarray, spatial_lr_scale: float) -> None:
        """Initialise one Gaussian per point: SH DC from colour, isotropic scale from kNN distance."""
        if len(points) == 0:
            raise UserError("the scene's initial point cloud is empty; cannot initialise Gaussians")
        self.spatial_lr_scale = float(spatial_lr_scale)
        n = len(points)
        xyz = torch.tensor(points, dtype=torch.float32)
        sh = torch.zeros(n, num_sh_bases(self.max_sh_degree), 3)
        sh[:, 0, :] = rgb_to_sh(torch.tensor(colors, dtype=torch.float32))
        scale = torch.tensor(nearest_neighbour_scale(points))
        rot = torch.zeros(n, 4)
        rot[:, 0] = 1.0
        values = {
            "xyz": xyz,
            "f_dc": sh[:, :1],
            "f_rest": sh[:, 1:],
            "opacity": inverse_sigmoid(torch.full((n, 1), INIT_OPACITY)),
            "scaling": torch.log(scale)[:, None].repeat(1, 3),
            "rotation": rot,
        }
        if self.feature_dim > 0:
            values["semantic"] = torch.zeros(n, self.feature_dim)
        if self.deform_basis > 0:
            values["deform"] = torch.zeros(n, self.deform_basis, DEFORM_CHANNELS)
        self._set_params(values)

    def _set_params(self, values: dict[str, torch.Tensor]) -> None:
        self.params = {k: nn.Parameter(v.to(self.device).float().contiguous()) for k, v in values.items()}
        self._reset_stats(self.num_points)

    def _reset_stats(self, n: int) -> None:
        self.xyz_gradient_accum = torch.zeros(n, 1, device=self.device)
        self.denom = torch.zeros(n, 1, device=self.device)
        self.max_radii2D = torch.zeros(n, device=self.device)

    # ------------------------------------------------------------------ activated views
    @property
    def num_points(self) -> int:
        return self.params["xyz"].shape[0] if self.params else 0

    @property
    def get_xyz(self) -> torch.Tensor:
        return self.params["xyz"]

    @property
    def get_scaling(self) -> torch.Tensor:
        return torch.exp(self.params["scaling"])

    @property
    def get_rotation(self) -> torch.Tensor:
        return normalize(self.params["rotation"])

    @property
    def get_opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.params["opacity"])

    @property
    def get_features(self) -> torch.Tensor:
        """[N, K, 3] SH coefficients."""
        return torch.cat([self.params["f_dc"], self.params["f_rest"]], dim=1)

    @property
    def get_semantic(self) -> torch.Tensor | None:
        return self.params.get("semantic")

    @property
    def is_deformable(self) -> bool:
        return "deform" in self.params

    def geometry_at(self, t: float, kernel=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positions [N,3], scales [N,3] and unit quaternions [N,4] at time ``t``.

        ``kernel``: a backend's fused version of :func:`scene.deformation.gaussian_geometry` (same signature), or
        None for that torch code.
        """
        p = self.params
        return (kernel or gaussian_geometry)(p["xyz"], p["scaling"], p["rotation"], p.get("deform"), t)

    def oneup_sh_degree(self) -> None:
        self.active_sh_degree = min(self.active_sh_degree + 1, self.max_sh_degree)

    # ------------------------------------------------------------------ optimisation
    def training_setup(self, opt) -> None:
        """Adam with one group per attribute (3DGS learning rates)."""
        lrs = {
            "xyz": opt.position_lr_init * self.spatial_lr_scale,
            "f_dc": opt.feature_lr,
            "f_rest": opt.feature_lr / 20.0,
            "opacity": opt.opacity_lr,
            "scaling": opt.scaling_lr,
            "rotation": opt.rotation_lr,
            "semantic": opt.semantic_lr,
            "deform": opt.deform_lr,
        }
        groups = [{"params": [p], "lr": lrs[name], "name": name} for name, p in self.params.items()]
        self.optimizer = optim_utils.make_optimizer(groups, opt.optimizer_type, lr=0.0, eps=1e-15)
        self._opt = opt
        self._reset_stats(self.num_points)

    def optimizer_step(self, visible: torch.Tensor) -> None:
        """One optimizer step; ``visible`` [N] bool (the view's visibility) limits sparse_adam to the seen Gaussians."""
        if isinstance(self.optimizer, optim_utils.SparseGaussianAdam):
            self.optimizer.step(visible)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def update_learning_rate(self, iteration: int) -> float:
        """Exponential position schedule (scaled by the scene extent); returns the xyz lr."""
        o = self._opt
        lr = optim_utils.exponential_lr(
            iteration, o.position_lr_init * self.spatial_lr_scale, o.position_lr_final * self.spatial_lr_scale,
            o.position_lr_max_steps, delay_mult=o.position_lr_delay_mult,
        )
        for group in self.optimizer.param_groups:
            if group["name"] == "xyz":
                group["lr"] = lr
        return lr

    # ------------------------------------------------------------------ densification
    def add_densification_stats(self, viewspace_points: torch.Tensor, visibility: torch.Tensor, width: int, height: int) -> None:
        """Accumulate the norm of the screen-space mean gradient (in NDC units, as 3DGS thresholds expect)."""
        grad = viewspace_points.grad
        if grad is None:
            return
        # Dense, without boolean indexing (nonzero + gather + scatter cost ~5 ms per iteration at 30k Gaussians):
        # the hidden rows add exactly 0 to these non-negative sums, so the values are those of the indexed update.
        scale = torch.tensor([0.5 * width, 0.5 * height], device=grad.device, dtype=grad.dtype)
        g = (grad * scale).norm(dim=-1, keepdim=True)
        seen = visibility[:, None]
        self.xyz_gradient_accum += torch.where(seen, g, 0.0)
        self.denom += seen

    def update_max_radii(self, radii: torch.Tensor, visibility: torch.Tensor) -> None:
        """max_radii2D = max(max_radii2D, radii) where visible (dense, like add_densification_stats)."""
        seen = torch.where(visibility, radii.to(self.max_radii2D.dtype), self.max_radii2D)
        torch.maximum(self.max_radii2D, seen, out=self.max_radii2D)

    def _prune(self, keep: torch.Tensor) -> None:
        self.params = optim_utils.prune_params(self.optimizer, self.params, keep)
        self.xyz_gradient_accum = self.xyz_gradient_accum[keep]
        self.denom = self.denom[keep]
        self.max_radii2D = self.max_radii2D[keep]

    def _append(self, extra: dict[str, torch.Tensor]) -> None:
        n_new = extra["xyz"].shape[0]
        self.params = optim_utils.append_params(self.optimizer, self.params, extra)
        pad = lambda t: torch.cat([t, torch.zeros((n_new,) + t.shape[1:], device=t.device, dtype=t.dtype)])  # noqa: E731
        self.xyz_gradient_accum = pad(self.xyz_gradient_accum)
        self.denom = pad(self.denom)
        self.max_radii2D = pad(self.max_radii2D)

    def _clone(self, grads: torch.Tensor, threshold: float, extent: float, percent_dense: float) -> None:
        """Duplicate small Gaussians with large view-space gradients (under-reconstruction)."""
        sel = (grads >= threshold) & (self.get_scaling.max(dim=1).values <= percent_dense * extent)
        self._append({k: p.detach()[sel] for k, p in self.params.items()})

    def _split(self, grads: torch.Tensor, threshold: float, extent: float, percent_dense: float) -> None:
        """Replace large Gaussians with large gradients by SPLIT_COUNT smaller samples from them."""
        n = self.num_points
        g = torch.zeros(n, device=self.device)
        g[: grads.shape[0]] = grads
        sel = (g >= threshold) & (self.get_scaling.max(dim=1).values > percent_dense * extent)
        if not sel.any():
            return
        stds = self.get_scaling[sel].repeat(SPLIT_COUNT, 1)
        samples = torch.normal(torch.zeros_like(stds), stds)
        rots = quat_to_rotmat(self.params["rotation"][sel]).repeat(SPLIT_COUNT, 1, 1)
        extra = {k: p.detach()[sel].repeat((SPLIT_COUNT,) + (1,) * (p.dim() - 1)) for k, p in self.params.items()}
        extra["xyz"] = (rots @ samples[..., None]).squeeze(-1) + extra["xyz"]
        extra["scaling"] = torch.log(stds / SPLIT_SCALE_DIV)
        self._append(extra)
        keep = torch.cat([~sel, torch.ones(SPLIT_COUNT * int(sel.sum()), dtype=torch.bool, device=self.device)])
        self._prune(keep)

    def densify_and_prune(self, opt, extent: float, max_screen_size: float | None) -> None:
        """Clone, split, then prune transparent or oversized Gaussians (3DGS rules)."""
        grads = (self.xyz_gradient_accum / self.denom).nan_to_num(0.0).squeeze(-1)
        self._clone(grads, opt.densify_grad_threshold, extent, opt.percent_dense)
        self._split(grads, opt.densify_grad_threshold, extent, opt.percent_dense)
        prune = (self.get_opacity < opt.min_opacity).squeeze(-1)
        if max_screen_size:
            prune |= self.max_radii2D > max_screen_size
            prune |= self.get_scaling.max(dim=1).values > WORLD_SIZE_PRUNE * extent
        if prune.all():
            prune[:] = False  # never delete the whole model; the next step's gradients decide
        self._prune(~prune)
        self._reset_stats(self.num_points)

    def reset_opacity(self) -> None:
        """Clamp every opacity to at most RESET_OPACITY (3DGS's periodic reset)."""
        value = inverse_sigmoid(torch.minimum(self.get_opacity, torch.full_like(self.get_opacity, RESET_OPACITY)))
        self.params["opacity"] = optim_utils.reset_param(self.optimizer, "opacity", value.detach())

    # ------------------------------------------------------------------ persistence
    def non_finite(self) -> dict[str, int]:
        """{parameter name: number of Gaussians with a NaN/inf value} for the parameters that have any."""
        out = {}
        for name, p in self.params.items():
            bad = int((~torch.isfinite(p.detach().reshape(p.shape[0], -1))).any(dim=1).sum())
            if bad:
                out[name] = bad
        return out

    def save_ply(self, path) -> None:
        arrays = {k: p.detach().cpu().numpy() for k, p in self.params.items()}
        write_gaussian_ply(path, arrays)

    def load_ply(self, path) -> None:
        arrays = read_gaussian_ply(path)
        self.max_sh_degree = int(arrays.pop("sh_degree"))
        self.active_sh_degree = self.max_sh_degree
        values = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if v is not None}
        if "deform" in values:
            self.deform_basis = values["deform"].shape[1] // DEFORM_CHANNELS
            values["deform"] = values["deform"].reshape(-1, self.deform_basis, DEFORM_CHANNELS)
        self.feature_dim = values["semantic"].shape[1] if "semantic" in values else 0
        self._set_params(values)

    def capture(self) -> dict:
        """Everything needed to resume training exactly (tensors only, loadable with weights_only=True)."""
        return {
            "params": {k: p.detach().clone() for k, p in self.params.items()},
            "active_sh_degree": self.active_sh_degree,
            "spatial_lr_scale": self.spatial_lr_scale,
            "xyz_gradient_accum": self.xyz_gradient_accum,
            "denom": self.denom,
            "max_radii2D": self.max_radii2D,
            "optimizer": self.optimizer.state_dict(),
        }

    def restore(self, state: dict, opt) -> None:
        """Inverse of :meth:`capture` (sets up the optimizer too)."""
        self._set_params(state["params"])
        if bad := self.non_finite():  # named here, not as a divergence at the first step
            listed = ", ".join(f"{k} ({n} Gaussians)" for k, n in bad.items())
            raise ValueError(f"saved Gaussian parameters hold NaN or inf: {listed}")
        self.active_sh_degree = int(state["active_sh_degree"])
        self.spatial_lr_scale = float(state["spatial_lr_scale"])
        self.training_setup(opt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.xyz_gradient_accum = state["xyz_gradient_accum"].to(self.device)
        self.denom = state["denom"].to(self.device)
        self.max_radii2D = state["max_radii2D"].to(self.device)


def subset_model(model: GaussianModel, keep: torch.Tensor) -> GaussianModel:
    """A detached copy holding only the Gaussians where ``keep`` [N] bool is True (for rendering parts)."""
    out = GaussianModel(model.max_sh_degree, model.feature_dim, model.deform_basis, model.device)
    out.active_sh_degree = model.active_sh_degree
    out._set_params({k: p.detach()[keep] for k, p in model.params.items()})
    return out
