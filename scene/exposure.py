"""Per-image exposure (``--train_test_exp``, graphdeco's appearance compensation).

Every image gets a 3x4 affine colour transform ``E`` (identity at the start), learned with Adam
beside the Gaussians: ``out[c] = sum_k render[k] * E[k, c] + E[c, 3]`` (graphdeco's convention,
so its ``exposure.json`` and ours are interchangeable). Test views are compensated as graphdeco
does: each test image is also trained on, through its left half only (which fits its exposure),
and scored on its right half.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch

from scene.adam import Adam
from scene.cameras import Camera
from scene.optim_utils import exponential_lr
from utils.errors import UserError
from utils.io_utils import read_json_object, write_json


def half_view(cam: Camera, keep: str) -> Camera:
    """``cam`` whose mask also excludes one half: ``keep`` = "left" (trained on) or "right" (scored)."""
    w = cam.image_width
    half = torch.zeros(1, cam.image_height, w, dtype=torch.bool, device=cam.K.device)
    if keep == "left":
        half[..., : w // 2] = True
    else:
        half[..., w // 2:] = True
    return cam.with_mask(half if cam.mask is None else (cam.mask > 0) & half)


def split_test_views(train: list[Camera], test: list[Camera]) -> tuple[list[Camera], list[Camera]]:
    """(train views + the left halves of the test views, the right halves of the test views)."""
    return train + [half_view(c, "left") for c in test], [half_view(c, "right") for c in test]


def apply_exposure(image: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """[3,H,W] image through the [3,4] affine ``exposure`` (graphdeco's order of the matrix)."""
    return torch.einsum("khw,kc->chw", image, exposure[:, :3]) + exposure[:, 3, None, None]


class Exposures:
    """One learned [3,4] exposure per image name, with its own Adam and learning-rate schedule."""

    def __init__(self, names: Sequence[str], device, opt=None):
        self.index = {name: i for i, name in enumerate(dict.fromkeys(names))}
        eye = torch.eye(3, 4, device=device)[None].repeat(len(self.index), 1, 1)
        self.param = torch.nn.Parameter(eye)
        self.opt = opt
        self.optimizer = Adam([self.param], lr=0.0) if opt is not None else None

    def __call__(self, image: torch.Tensor, name: str) -> torch.Tensor:
        if name not in self.index:
            raise UserError(f"no exposure for image {name}: it was not among the training images of --train_test_exp")
        return apply_exposure(image, self.param[self.index[name]])

    def step(self, iteration: int) -> None:
        """Adam step at ``iteration``'s learning rate (graphdeco's schedule over --iterations)."""
        o = self.opt
        lr = exponential_lr(iteration, o.exposure_lr_init, o.exposure_lr_final, o.iterations,
                            o.exposure_lr_delay_steps, o.exposure_lr_delay_mult)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state(self) -> dict:
        return {"param": self.param.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        if tuple(state["param"].shape) != tuple(self.param.shape):
            raise UserError(f"checkpoint's exposures are for {state['param'].shape[0]} images, this scene has {len(self.index)}")
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])

    def save(self, path: str | os.PathLike) -> None:
        """``exposure.json``: {image name: [[3x4]]} (graphdeco's file)."""
        write_json(path, {name: self.param[i].detach().cpu().tolist() for name, i in self.index.items()})

    @classmethod
    def load(cls, path: str | os.PathLike, device) -> "Exposures":
        """Read ``exposure.json`` (render.py); every value must be a finite 3x4 matrix."""
        data = read_json_object(path, {})
        out = cls(list(data), device)
        for name, value in data.items():
            try:
                e = torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError):
                e = torch.empty(0)
            if e.shape != (3, 4) or not torch.isfinite(e).all():
                raise UserError(f"{path}: exposure of {name} is not a finite 3x4 matrix; retrain with --train_test_exp")
            with torch.no_grad():
                out.param[out.index[name]] = e.to(device)
        return out


def exposure_setup(enabled: bool, train: list[Camera], test: list[Camera], opt, device
                   ) -> tuple[list[Camera], list[Camera], Exposures | None]:
    """train.py's views and exposures: unchanged views and None unless ``--train_test_exp``."""
    if not enabled:
        return train, test, None
    train, test = split_test_views(train, test)
    return train, test, Exposures([c.image_name for c in train], device, opt)


def right_half(image: torch.Tensor) -> torch.Tensor:
    """[C,H,W] -> [C,H,W - W//2]: the part of a test image scored under --train_test_exp (graphdeco's crop)."""
    return image[..., image.shape[-1] // 2:]
