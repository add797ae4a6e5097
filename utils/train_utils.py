"""Training-loop helpers: camera sampling, checkpoints, evaluation, cfg_args."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from utils.errors import UserError
from utils.image_utils import psnr
from utils.io_utils import atomic_path, write_text
from utils.loss_utils import l1_loss


class CameraSampler:
    """Visits every training camera once per epoch in a seeded random order (resumable)."""

    def __init__(self, n: int, seed: int):
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.stack: list[int] = []

    def next(self) -> int:
        if not self.stack:
            self.stack = torch.randperm(self.n, generator=self.gen).tolist()
        return self.stack.pop()

    def state(self) -> dict:
        return {"gen": self.gen.get_state(), "stack": torch.tensor(self.stack, dtype=torch.long)}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.stack = state["stack"].tolist()


CHECKPOINT_SHAPE_KEYS = ("sh_degree", "feature_dim", "deform_basis")  # must match the run that resumes


def save_checkpoint(path: str | os.PathLike, gaussians, iteration: int, sampler: CameraSampler, extra: dict | None = None) -> None:
    """Everything needed to continue exactly where training stopped (tensors and numbers only)."""
    state = {
        "model": gaussians.capture(),
        "iteration": iteration,
        "sampler": sampler.state(),
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _require(path, state: dict, key: str, kind: type | tuple) -> None:
    if key not in state:
        raise UserError(f"{path}: checkpoint lacks '{key}'; it was not written by this train.py")
    if not isinstance(state[key], kind):
        raise UserError(f"{path}: checkpoint entry '{key}' has the wrong type ({type(state[key]).__name__})")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (weights_only: no code is unpickled), structure checked."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: checkpoint not found (--start_checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}); was it written by this train.py?") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a checkpoint written by this train.py")
    for key, kind in (("model", dict), ("iteration", int), ("sampler", dict), ("torch_rng", torch.Tensor), ("extra", dict)):
        _require(path, state, key, kind)
    for key in ("params", "optimizer", "active_sh_degree", "spatial_lr_scale"):
        _require(path, state["model"], key, object)
    checkpoint_shape(path, state)
    return state


def checkpoint_shape(path, state: dict) -> dict[str, int]:
    """sh_degree, feature_dim and deform_basis of the model saved in a checkpoint (from its tensor shapes)."""
    params = state["model"]["params"]
    try:
        n_sh = params["f_rest"].shape[1] + 1
        return {"sh_degree": round(n_sh ** 0.5) - 1,
                "feature_dim": params["semantic"].shape[1] if "semantic" in params else 0,
                "deform_basis": params["deform"].shape[1] if "deform" in params else 0}
    except (KeyError, AttributeError, IndexError, TypeError):
        raise UserError(f"{path}: checkpoint parameters are incomplete; it was not written by this train.py") from None


def check_checkpoint_matches(path, state: dict, iterations: int, shape: dict[str, int]) -> None:
    """A resumed run must have the checkpoint's model shape and end after its iteration."""
    done = int(state["iteration"])
    if iterations <= done:
        raise UserError(f"--iterations {iterations}: the checkpoint {path} is already at iteration {done}; "
                        f"ask for more iterations to resume")
    saved = checkpoint_shape(path, state)
    for key in CHECKPOINT_SHAPE_KEYS:
        if saved[key] != shape[key]:
            raise UserError(f"--{key} {shape[key]}: the checkpoint {path} was trained with {saved[key]}; "
                            f"resume with --{key} {saved[key]} (or train a new model)")


@torch.no_grad()
def evaluate(cameras, render_fn) -> dict:
    """Mean L1 and PSNR (masked where the camera has a mask) over ``cameras``; ground truth decoded where it renders."""
    if not cameras:
        return {}
    l1s, psnrs = [], []
    for cam in cameras:
        img = render_fn(cam)["render"].clamp(0, 1)
        view = cam.to(img.device)
        l1s.append(float(l1_loss(img, view.original_image, view.mask)))
        psnrs.append(float(psnr(img, view.original_image, view.mask)))
    return {"l1": sum(l1s) / len(l1s), "psnr": sum(psnrs) / len(psnrs)}
