"""The one rendering entry point: :func:`render`.

render() = deform (optional) -> project -> colour from SH -> composite (backend) -> finish
(background, depth normalisation). Geometry (deformation, activations), projection, SH and the
finish run in PyTorch, or in the backend's fused kernels where it has them (gsplat on CUDA, the
C++ extension on the CPU). All channels (RGB, optional per-Gaussian features, depth, optional
inverse depth) are composited in one backend pass.
``pipe.antialiasing`` scales each opacity by the projection's compensation.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (before torch; see that module)

import torch  # noqa: E402

from gaussian_renderer.backends import get_backend  # noqa: E402
from gaussian_renderer.backends.common import finish_outputs  # noqa: E402
from gaussian_renderer.projection import NEAR_PLANE, project_gaussians  # noqa: E402
from utils.general_utils import normalize  # noqa: E402
from utils.sh_utils import eval_sh  # noqa: E402


def render(
    camera,
    gaussians,
    pipe,
    bg_color: torch.Tensor,
    scaling_modifier: float = 1.0,
    time: float | None = None,
    override_color: torch.Tensor | None = None,
    render_features: bool = True,
    backend: str | None = None,
    invdepth: bool = False,
) -> dict:
    """Render one view.

    Args:
        camera: :class:`scene.cameras.Camera` (viewmat, K, image size, time).
        gaussians: :class:`scene.gaussian_model.GaussianModel`.
        pipe: pipeline parameters (``pipe.backend``, ``pipe.antialiasing``, ``pipe.debug``).
        bg_color: [3] background colour.
        time: normalised time in [0, 1] for deformable scenes (default: the camera's).
        override_color: [N, 3] colours to use instead of SH (e.g. cluster colours).
        render_features: also composite per-Gaussian feature vectors when the model has them.
        invdepth: also composite 1/z (one more channel; for ``-d`` depth regularisation).
    Returns:
        dict with ``render`` [3,H,W], ``depth`` [1,H,W] (alpha-normalised expected depth),
        ``alpha`` [1,H,W], ``feature_map`` [D,H,W] or None, ``invdepth`` [1,H,W] (sum of
        weight x 1/z, not alpha-normalised, as graphdeco's) or None, ``viewspace_points`` [N,2]
        (screen means; their ``.grad`` drives densification), ``visibility_filter`` [N] bool,
        ``radii`` [N] int.
    """
    t = camera.time if time is None else time
    engine = get_backend(backend or pipe.backend, gaussians.get_xyz.device.type)
    means, scales, quats = gaussians.geometry_at(t, engine.geometry)
    if scaling_modifier != 1.0:
        scales = scales * scaling_modifier
    W, H = camera.image_width, camera.image_height
    project = engine.project or project_gaussians
    proj = project(means, scales, quats, camera.viewmat, camera.K, W, H, antialiased=pipe.antialiasing)
    means2d = proj.means2d
    if means2d.requires_grad:
        means2d.retain_grad()

    if override_color is not None:
        colors = override_color
    else:
        dirs = means.detach() - camera.camera_center[None, :]
        if engine.sh_to_color is not None:
            colors = engine.sh_to_color(gaussians.active_sh_degree, gaussians.get_features, dirs)
        else:
            colors = eval_sh(gaussians.active_sh_degree, gaussians.get_features, normalize(dirs))
    channels = [colors]
    feats = gaussians.get_semantic if render_features else None
    if feats is not None:
        channels.append(feats)
    channels.append(proj.depths[:, None])
    if invdepth:  # culled Gaussians (z <= near plane) are never composited; the clamp keeps their 1/z finite
        channels.append(1.0 / proj.depths.clamp_min(NEAR_PLANE)[:, None])
    stacked = torch.cat(channels, dim=1)

    opacities = gaussians.get_opacity.squeeze(-1)
    if proj.compensation is not None:
        opacities = opacities * proj.compensation
    debug = pipe.debug
    if debug:
        check_finite(camera, means2d=means2d, conics=proj.conics, opacities=opacities, colors=stacked)
    tiles = {} if proj.tile_radii is None else {"tile_radii": proj.tile_radii}  # a fused projection's own binning
    out, alpha = engine.rasterize(means2d, proj.conics, opacities, stacked, proj.depths, proj.radii, W, H, **tiles)
    if debug:
        check_finite(camera, rasterizer_output=out, rasterizer_alpha=alpha)
    finish = engine.finish or finish_outputs
    image, feature_map, depth, inv = finish(out, alpha, bg_color, out.shape[0] - 1 - int(invdepth), invdepth)
    return {
        "render": image,
        "depth": depth,
        "alpha": alpha,
        "feature_map": feature_map if feats is not None else None,
        "invdepth": inv,
        "viewspace_points": means2d,
        "visibility_filter": proj.radii > 0,
        "radii": proj.radii,
    }


def check_finite(camera, **tensors: torch.Tensor) -> None:
    """``--debug``: stop at the first rasterizer input or output holding NaN / inf.

    Args:
        camera: the view being rendered (named in the message).
        tensors: name -> tensor; the first row-indexed dimension is reported as Gaussians.
    Raises:
        FloatingPointError naming the tensor, the camera and how many rows are affected.
    """
    for name, t in tensors.items():
        bad = ~torch.isfinite(t.detach())
        if bad.any():
            rows = int(bad.reshape(t.shape[0], -1).any(dim=1).sum()) if t.ndim else 1
            raise FloatingPointError(
                f"render(): {name} has non-finite values in {rows} of {t.shape[0] if t.ndim else 1} rows "
                f"(camera '{camera.image_name}'); the Gaussians or the learning rates have diverged"
            )
