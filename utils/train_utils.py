"""Training-loop helpers: camera sampling, checkpoints, evaluation, cfg_args."""
from __future__ import annotations

import os
from argparse import Namespace
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


def write_cfg_args(model_path: str, args: Namespace) -> None:
    """Save the parsed arguments as ``cfg_args`` (a Namespace repr that render.py parses as data)."""
    write_text(Path(model_path) / "cfg_args", repr(Namespace(**vars(args))))


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


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (weights_only: no code is unpickled)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: checkpoint not found (--start_checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}); was it written by this train.py?") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path}: not a checkpoint written by this train.py")
    return state


@torch.no_grad()
def evaluate(cameras, render_fn) -> dict:
    """Mean L1 and PSNR (masked where the camera has a mask) over ``cameras``."""
    if not cameras:
        return {}
    l1s, psnrs = [], []
    for cam in cameras:
        img = render_fn(cam)["render"].clamp(0, 1)
        l1s.append(float(l1_loss(img, cam.original_image, cam.mask)))
        psnrs.append(float(psnr(img, cam.original_image, cam.mask)))
    return {"l1": sum(l1s) / len(l1s), "psnr": sum(psnrs) / len(psnrs)}
