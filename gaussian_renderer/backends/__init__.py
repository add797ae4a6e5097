"""Compositing backends behind one signature.

Every backend provides ``rasterize(means2d, conics, opacities, colors, depths, radii,
width, height) -> (image [C,H,W], alpha [1,H,W])`` with the semantics documented in
:mod:`gaussian_renderer.backends.common`, differentiable w.r.t. means2d, conics,
opacities and colors.

Backends: ``torch`` (reference, any device), ``cpu`` (C++/OpenMP extension in
submodules/cpu_rasterizer), ``gsplat`` (CUDA). ``auto`` picks gsplat on CUDA
tensors when it is installed, else cpu when its extension builds, else torch.

A backend may also bring its own fused projection and SH colour (gsplat and cpu do, to save
hundreds of small ops and kernel launches per iteration); they follow the conventions of
:func:`gaussian_renderer.projection.project_gaussians` and :func:`utils.sh_utils.eval_sh`,
which the tests hold them to. :func:`get_backend` returns all three.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

from utils.errors import UserError

BACKENDS = ("auto", "torch", "cpu", "gsplat")
_warned: set[str] = set()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, stacklevel=3)


def _load(name: str) -> Callable | None:
    """Return the backend's rasterize function, or None if it cannot run here."""
    if name == "torch":
        from gaussian_renderer.backends.torch_backend import rasterize

        return rasterize
    if name == "cpu":
        try:
            from gaussian_renderer.backends.cpu_backend import rasterize, extension_available
        except ImportError:
            return None
        return rasterize if extension_available() else None
    if name == "gsplat":
        try:
            from gaussian_renderer.backends.gsplat_backend import rasterize, gsplat_available
        except ImportError:
            return None
        return rasterize if gsplat_available() else None
    raise UserError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class Backend:
    """A resolved backend: its compositing, and its fused projection / SH colour where it has them.

    project: same signature and :class:`~gaussian_renderer.projection.Projected` result as
        ``project_gaussians``; None = use the torch projection.
    sh_to_color: same signature and result as ``eval_sh``; None = use the torch SH.
    geometry: same signature and result as ``scene.deformation.gaussian_geometry``; None = use that torch code.
    finish: same signature and result as ``common.finish_outputs``; None = use that torch code.
    """

    rasterize: Callable
    project: Callable | None = None
    sh_to_color: Callable | None = None
    geometry: Callable | None = None
    finish: Callable | None = None


def get_backend(name: str, device_type: str) -> Backend:
    """Resolve a backend name for tensors on ``device_type`` ('cpu' or 'cuda')."""
    resolved, rasterize = _resolve(name, device_type)
    if resolved == "gsplat":
        from gaussian_renderer.backends import gsplat_backend

        return Backend(rasterize, gsplat_backend.project, gsplat_backend.sh_to_color)
    if resolved == "cpu":
        from gaussian_renderer.backends import cpu_projection

        from gaussian_renderer.backends import cpu_image_ops

        return Backend(rasterize, cpu_projection.project, cpu_projection.sh_to_color, cpu_projection.geometry,
                       cpu_image_ops.finish)
    return Backend(rasterize)


def get_rasterizer(name: str, device_type: str) -> Callable:
    """Resolve a backend name for tensors on ``device_type`` ('cpu' or 'cuda'): its compositing function."""
    return _resolve(name, device_type)[1]


def _resolve(name: str, device_type: str) -> tuple[str, Callable]:
    """(the backend that will run, its rasterize function)."""
    if name == "auto":
        order = ("gsplat", "torch") if device_type == "cuda" else ("cpu", "torch")
        for cand in order:
            fn = _load(cand)
            if fn is not None:
                if cand == "torch":
                    fast = "gsplat" if device_type == "cuda" else "C++ CPU rasterizer"
                    _warn_once(f"auto-torch-{device_type}", f"{fast} unavailable; using the slow torch backend")
                return cand, fn
        raise AssertionError("torch backend always loads")
    if name == "gsplat" and device_type != "cuda":
        raise UserError("--backend gsplat needs a CUDA device; use --device cuda or --backend cpu")
    if name == "cpu" and device_type != "cpu":
        raise UserError("--backend cpu needs --device cpu; use --backend gsplat or torch on CUDA")
    fn = _load(name)
    if fn is None:
        _warn_once(f"fallback-{name}", f"backend '{name}' is not available here; falling back to the torch backend")
        return "torch", _load("torch")
    return name, fn
