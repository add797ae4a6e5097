"""Gaussian PLY files in the layout 3DGS viewers expect.

Order of vertex properties: x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity
scale_0..2 rot_0..3, then our extras: semantic_0..D-1 (per-Gaussian features) and
deform_0..M-1 (deformation weights). Opacity is stored pre-sigmoid, scales as log,
quaternions w first, normals zero. f_rest is channel-major (all R coefficients,
then G, then B), as in the reference implementation.
"""
from __future__ import annotations

import os
import re

import numpy as np
from plyfile import PlyData, PlyElement

from scene.deformation import DEFORM_CHANNELS
from utils.errors import UserError
from utils.io_utils import atomic_path


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{i}" for i in range(n)]


def write_gaussian_ply(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write a Gaussian PLY atomically.

    Args:
        arrays: ``xyz`` [N,3], ``f_dc`` [N,1,3], ``f_rest`` [N,K-1,3], ``opacity`` [N,1] (logit),
            ``scaling`` [N,3] (log), ``rotation`` [N,4]; optional ``semantic`` [N,D], ``deform`` [N,B,10].
    """
    n = arrays["xyz"].shape[0]
    cols: list[tuple[str, np.ndarray]] = []
    cols += list(zip(["x", "y", "z"], arrays["xyz"].T))
    cols += list(zip(["nx", "ny", "nz"], np.zeros((3, n), np.float32)))
    cols += list(zip(_names("f_dc", 3), arrays["f_dc"].reshape(n, 3).T))
    f_rest = np.transpose(arrays["f_rest"], (0, 2, 1)).reshape(n, -1)
    cols += list(zip(_names("f_rest", f_rest.shape[1]), f_rest.T))
    cols.append(("opacity", arrays["opacity"].reshape(n)))
    cols += list(zip(_names("scale", 3), arrays["scaling"].T))
    cols += list(zip(_names("rot", 4), arrays["rotation"].T))
    for extra in ("semantic", "deform"):
        if arrays.get(extra) is not None and arrays[extra].size:
            flat = arrays[extra].reshape(n, -1)
            cols += list(zip(_names(extra, flat.shape[1]), flat.T))
    data = np.empty(n, dtype=[(name, "f4") for name, _ in cols])
    for name, col in cols:
        data[name] = col
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(data, "vertex")]).write(tmp)


def _stack(v, names: list[str], path) -> np.ndarray:
    try:
        return np.stack([np.asarray(v[name], dtype=np.float32) for name in names], axis=1)
    except (KeyError, ValueError):
        raise UserError(f"{path}: missing Gaussian attribute(s) {names[0]}..{names[-1]}; not a 3DGS point cloud") from None


def _count(props: list[str], prefix: str, path) -> int:
    """Number of ``prefix_i`` columns; they must be exactly ``prefix_0 .. prefix_{n-1}``."""
    pat = re.compile(rf"^{prefix}_(\d+)$")
    idx = sorted(int(m.group(1)) for p in props if (m := pat.match(p)))
    if idx != list(range(len(idx))):
        missing = sorted(set(range(max(idx) + 1)) - set(idx))
        what = f"{prefix}_{missing[0]} is missing" if missing else f"{prefix}_* columns repeat"
        raise UserError(f"{path}: inconsistent {prefix}_* columns ({what}); the PLY was edited or written by another tool")
    return len(idx)


def check_finite(path, arrays: dict[str, np.ndarray | None]) -> None:
    """UserError naming the first attribute of a Gaussian PLY that holds NaN or inf."""
    for name, arr in arrays.items():
        if arr is None or not np.issubdtype(np.asarray(arr).dtype, np.floating):
            continue
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1) if arr.ndim else np.array([])
        if bad.any():
            raise UserError(f"{path}: attribute {name} holds NaN/inf in {int(bad.sum())} of {len(arr)} Gaussians "
                            f"(first: vertex {int(np.argmax(bad))}); the training run diverged: retrain (--debug finds the cause)")


def read_gaussian_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Gaussian PLY into the arrays of :func:`write_gaussian_ply` (+ ``sh_degree``)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: point cloud not found")
    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"]
    except Exception as exc:  # plyfile raises many types for corrupt files
        raise UserError(f"{path}: not a readable PLY file ({type(exc).__name__}: {exc})") from None
    props = [p.name for p in v.properties]
    n = v.count
    if n == 0:
        raise UserError(f"{path}: the PLY holds no Gaussians; retrain the model")
    n_rest = _count(props, "f_rest", path)
    if n_rest % 3:
        raise UserError(f"{path}: {n_rest} f_rest attributes is not a multiple of 3")
    k = n_rest // 3 + 1
    sh_degree = int(round(np.sqrt(k))) - 1
    if (sh_degree + 1) ** 2 != k:
        raise UserError(f"{path}: {n_rest} f_rest attributes do not match any SH degree")
    out = {
        "xyz": _stack(v, ["x", "y", "z"], path),
        "f_dc": _stack(v, _names("f_dc", 3), path).reshape(n, 1, 3),
        "f_rest": _stack(v, _names("f_rest", n_rest), path).reshape(n, 3, k - 1).transpose(0, 2, 1).copy()
        if n_rest
        else np.zeros((n, 0, 3), np.float32),
        "opacity": _stack(v, ["opacity"], path),
        "scaling": _stack(v, _names("scale", 3), path),
        "rotation": _stack(v, _names("rot", 4), path),
        "sh_degree": np.array(sh_degree),
    }
    for extra in ("semantic", "deform"):
        m = _count(props, extra, path)
        out[extra] = _stack(v, _names(extra, m), path) if m else None
    if out["deform"] is not None and out["deform"].shape[1] % DEFORM_CHANNELS:
        raise UserError(f"{path}: {out['deform'].shape[1]} deform_* columns is not a multiple of {DEFORM_CHANNELS} "
                        "(position 3 + rotation 4 + scale 3 per basis function)")
    check_finite(path, out)
    return out
