"""Model-folder helpers: finding saved iterations, choosing the device."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from utils.errors import UserError

if TYPE_CHECKING:
    import torch

_ITER = re.compile(r"^iteration_(\d+)$")


def saved_iterations(model_path: str | os.PathLike) -> list[int]:
    """Sorted iterations with a saved ``point_cloud/iteration_N/point_cloud.ply``."""
    root = Path(model_path) / "point_cloud"
    if not root.is_dir():
        return []
    its = []
    for d in root.iterdir():
        m = _ITER.match(d.name)
        if m and (d / "point_cloud.ply").is_file():
            its.append(int(m.group(1)))
    return sorted(its)


def resolve_iteration(model_path: str | os.PathLike, iteration: int) -> int:
    """``iteration`` if saved (-1 = latest); otherwise a UserError listing what exists."""
    its = saved_iterations(model_path)
    if not its:
        raise UserError(f"{Path(model_path) / 'point_cloud'}: no saved point clouds; train the model first (train.py -m {model_path})")
    if iteration == -1:
        return its[-1]
    if iteration not in its:
        raise UserError(f"{model_path}: iteration {iteration} was not saved; available: {', '.join(map(str, its))}")
    return iteration


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without CUDA is a UserError."""
    import torch  # here, so that the folder helpers above load without torch (full_eval.py's driver)

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: choose auto, cpu or cuda")
    return torch.device(name)
