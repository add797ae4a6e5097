"""DINO / DINOv2 dense features (timm), shared by feature extraction and training.

One class, :class:`DinoExtractor`, turns images into patch-token maps. Both
``extract_dino_features.py`` (ground truth, stored on disk) and the perceptual loss
(renders, on the fly, differentiable) call it, so the two sides go through exactly the
same resize, normalisation, network and layer selection.

Input rule: an image [B,3,H,W] in [0,1] is resized (bilinear, no antialias) so that its
long side is ``resolution`` pixels rounded to a multiple of the patch size and its short
side keeps the aspect ratio (also a multiple of the patch, at least one patch), then
normalised with the ImageNet mean/std. The output has one cell per patch.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from utils.dino_weights import RANDOM_INIT_SEED, create_dino_model
from utils.errors import UserError

MODEL_ALIASES: dict[str, str] = {
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    "dino_vits8": "vit_small_patch8_224.dino",
    "dino_vitb8": "vit_base_patch8_224.dino",
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vitl14": "vit_large_patch14_dinov2.lvd142m",
    "dinov2_vitg14": "vit_giant_patch14_dinov2.lvd142m",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitl14_reg": "vit_large_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitg14_reg": "vit_giant_patch14_reg4_dinov2.lvd142m",
}
Projection = Callable[[torch.Tensor], torch.Tensor]  # [N,L*C,h,w] -> [N,D,h,w], linear per cell
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_ANTIALIAS = False  # plain bilinear: identical on renders and ground truth, cheap backward
HR_SHIFT_PX = 2  # shift of the HR copies, in ViT-input pixels (a fraction of a patch)
HR_NEIGHBOURS = (4, 8)  # allowed numbers of shift directions for upsample_hr
META_CHECKED_FIELDS = ("model", "layers", "resolution", "norm", "patch_size", "feature_dim", "random_init",
                       "mean", "std")
INPUT_SIZE_RULE = ("long side -> round(resolution / patch) * patch px, short side -> "
                   "max(1, round(short / long * resolution / patch)) * patch px; bilinear, no antialias")


def resolve_model_name(name: str) -> tuple[str, str]:
    """Short alias or timm name -> (timm name, short name); unknown names are a UserError."""
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name], name
    import timm  # noqa: PLC0415

    if timm.is_model(name):
        short = next((k for k, v in MODEL_ALIASES.items() if v == name), name)
        return name, short
    raise UserError(f"unknown DINO model '{name}'; use one of {', '.join(MODEL_ALIASES)} or a timm ViT name")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(device)


def _cells(length: float, patch: int) -> int:
    """Number of whole patches closest to ``length`` pixels (at least one)."""
    return max(1, int(math.floor(length / patch + 0.5)))


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """[B,C,H,W] -> same size, content moved by (dy, dx) pixels; borders replicated.

    ``out[y, x] = in[y - dy, x - dx]``; ``shift_image(shift_image(a, dy, dx), -dy, -dx)``
    restores ``a`` away from the borders.
    """
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0)), mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[..., top:top + h, left:left + w]


def hr_offsets(neighbours: int | Sequence[tuple[int, int]] = 8, shift_px: int = HR_SHIFT_PX) -> list[tuple[int, int]]:
    """(0,0) plus 4 (axis) or 8 (axis + diagonal) neighbour shifts of ``shift_px`` pixels.

    An explicit sequence of (dy, dx) offsets is returned as given.
    """
    if not isinstance(neighbours, int):
        return [(int(dy), int(dx)) for dy, dx in neighbours]
    if neighbours not in HR_NEIGHBOURS:
        raise ValueError(f"neighbours must be one of {HR_NEIGHBOURS}, got {neighbours}")
    axis = [(-shift_px, 0), (shift_px, 0), (0, -shift_px), (0, shift_px)]
    diag = [(-shift_px, -shift_px), (-shift_px, shift_px), (shift_px, -shift_px), (shift_px, shift_px)]
    return [(0, 0)] + axis + (diag if neighbours == 8 else [])


def _flat_or_projected(feats: torch.Tensor, project: Projection | None) -> torch.Tensor:
    """[B,L,C,h,w] unchanged, or [B,1,D,h,w] = project([B,L*C,h,w]) when a projection is given."""
    if project is None:
        return feats
    return project(feats.flatten(1, 2)).unsqueeze(1)


class DinoExtractor:
    """Frozen DINO/DINOv2 ViT returning dense patch features of chosen layers.

    Args:
        model: short name (``dinov2_vits14``, ``dino_vits16``, ...; see MODEL_ALIASES) or timm name.
        layers: block indices (negative counts from the end); default: the last block.
        resolution: long side of the ViT input in pixels; default: the model's own input size.
        weights: local state-dict file; default: the offline timm / torch hub cache.
        random_init: seeded random weights instead (features meaningless; tests/demos only).
        device: torch device string or 'auto'.
        norm: apply the final LayerNorm to the intermediates (timm's default is False).
    """

    def __init__(self, model: str = "dinov2_vits14", layers: Sequence[int] | None = None,
                 resolution: int | None = None, weights: str | os.PathLike | None = None,
                 random_init: bool = False, device: str | torch.device = "cpu", norm: bool = False,
                 origin: str | None = None):
        self._origin = origin
        self.timm_name, self.short_name = resolve_model_name(model)
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.random_init = bool(random_init)
        self.weights = str(weights) if weights else None
        self.model = create_dino_model(self.timm_name, weights, random_init).to(self.device)
        self.norm = bool(norm)
        self.patch_size = int(self.model.patch_embed.patch_size[0])
        self.depth = len(self.model.blocks)
        self.layers = self._check_layers(layers)
        default_res = int(self.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        self.resolution = int(resolution) if resolution else default_res
        if self.resolution < self.patch_size:
            raise UserError(f"{self._setting('resolution')} {self.resolution}: must be at least the patch size {self.patch_size}")
        self.feature_dim = int(self.model.embed_dim)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _setting(self, key: str) -> str:
        """How a setting is named in messages: the flag, or the key of the file it was read from."""
        return f"--{key}" if self._origin is None else f"{self._origin}: key '{key}'"

    @classmethod
    def from_meta(cls, meta: dict, weights: str | os.PathLike | None = None, random_init: bool | None = None,
                  device: str | torch.device = "cpu", origin: str | None = None) -> "DinoExtractor":
        """Extractor with the settings recorded in a features_meta.json dict (``origin``: that file, for messages)."""
        rand = bool(meta.get("random_init", False)) if random_init is None else random_init
        return cls(model=meta["model"], layers=meta["layers"], resolution=meta["resolution"], weights=weights,
                   random_init=rand, device=device, norm=bool(meta.get("norm", False)), origin=origin)

    def _check_layers(self, layers: Sequence[int] | None) -> list[int]:
        """Absolute, validated block indices."""
        if layers is None or len(layers) == 0:
            return [self.depth - 1]
        out = []
        for i in layers:
            idx = int(i) + self.depth if int(i) < 0 else int(i)
            if not 0 <= idx < self.depth:
                raise UserError(f"{self._setting('layers')} {i}: {self.timm_name} has blocks 0..{self.depth - 1}")
            out.append(idx)
        return out

    @property
    def channels(self) -> int:
        """Channels of the flattened output (layers x feature_dim)."""
        return len(self.layers) * self.feature_dim

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(h_in, w_in) pixels the ViT sees for an H x W image (multiples of the patch)."""
        p, long_side = self.patch_size, max(height, width)
        long_cells = _cells(self.resolution, p)
        short_cells = _cells(min(height, width) / long_side * self.resolution, p)
        if height >= width:
            return long_cells * p, short_cells * p
        return short_cells * p, long_cells * p

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) patch grid of an H x W image."""
        h_in, w_in = self.input_size(height, width)
        return h_in // self.patch_size, w_in // self.patch_size

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> [B,3,h_in,w_in] resized and normalised (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        size = self.input_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=RESIZE_ANTIALIAS)
        return (x - self._mean) / self._std

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input [B,3,h_in,w_in] -> [B,L,C,h,w]."""
        feats = self.model.forward_intermediates(x, indices=self.layers, norm=self.norm,
                                                 intermediates_only=True, output_fmt="NCHW")
        return torch.stack(feats, dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> [B,L,C,h,w] patch features; gradients flow to ``images``."""
        return self._forward(self.preprocess(images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,L*C,h,w]: layers concatenated on the channel axis (the stored layout)."""
        return self(images).flatten(1, 2)

    def cls(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B,C] class token of the last block after the final norm."""
        return self.model.forward_features(self.preprocess(images))[:, 0]

    def upsample_bilinear(self, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                          project: Projection | None = None) -> torch.Tensor:
        """[B,3,H,W] -> [B,L,C,H',W'] patch features resized bilinearly (default: to H x W).

        ``project`` (optional, linear per cell, e.g. a PCA) maps the flattened low-res
        [B,L*C,h,w] to [B,D,h,w] before upsampling; the result is then [B,1,D,H',W'].
        """
        low = _flat_or_projected(self(images), project)
        size = tuple(out_size) if out_size else tuple(images.shape[-2:])
        up = F.interpolate(low.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
        return up.view(*low.shape[:3], *size)

    def upsample_hr(self, images: torch.Tensor, out_size: tuple[int, int] | None = None,
                    shifts: int | Sequence[tuple[int, int]] = 8, shift_px: int = HR_SHIFT_PX, flip: bool = False,
                    project: Projection | None = None) -> torch.Tensor:
        """[B,3,H,W] -> [B,L,C,H',W'] shift-and-average high-resolution features.

        The ViT runs once on a batch of K = 1 + ``shifts`` (x2 with ``flip``) copies of
        the input shifted by ``shift_px`` ViT-input pixels (or by the explicit (dy, dx)
        offsets when ``shifts`` is a sequence); each low-res map is upsampled
        bilinearly to the input size, un-shifted (and un-flipped) and the K maps are
        averaged, then resized to ``out_size`` (default H x W). ``project`` as in
        :meth:`upsample_bilinear` (applied to each low-res map; output [B,1,D,H',W']).
        """
        x = self.preprocess(images)
        b, (h_in, w_in) = x.shape[0], x.shape[-2:]
        views = [(dy, dx, False) for dy, dx in hr_offsets(shifts, shift_px)]
        if flip:
            views += [(dy, dx, True) for dy, dx, _ in views]
        batch = torch.cat([shift_image(x.flip(-1) if fl else x, dy, dx) for dy, dx, fl in views], dim=0)
        feats = _flat_or_projected(self._forward(batch), project)
        n_layers = feats.shape[1]
        acc = None
        for k, (dy, dx, fl) in enumerate(views):
            low = feats[k * b:(k + 1) * b].flatten(0, 1)
            up = shift_image(F.interpolate(low, size=(h_in, w_in), mode="bilinear", align_corners=False), -dy, -dx)
            up = up.flip(-1) if fl else up
            acc = up if acc is None else acc + up
        mean = acc / len(views)
        size = tuple(out_size) if out_size else tuple(images.shape[-2:])
        if tuple(mean.shape[-2:]) != size:
            mean = F.interpolate(mean, size=size, mode="bilinear", align_corners=False)
        return mean.view(b, n_layers, -1, *size)

    def meta(self) -> dict:
        """JSON-ready description of what this extractor computes (checked before training)."""
        if self.random_init:
            weights = f"random_init(seed={RANDOM_INIT_SEED})"
        else:
            weights = f"file:{os.path.basename(self.weights)}" if self.weights else "pretrained (timm cache)"
        return {
            "model": self.timm_name, "short_name": self.short_name, "layers": list(self.layers),
            "norm": self.norm, "norm_note": "final LayerNorm applied to intermediates" if self.norm
            else "raw block outputs (timm forward_intermediates default norm=False)",
            "patch_size": self.patch_size, "resolution": self.resolution, "input_size_rule": INPUT_SIZE_RULE,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "feature_dim": self.feature_dim,
            "num_layers": len(self.layers), "random_init": self.random_init, "weights": weights,
        }

    def check_meta(self, meta: dict, path: str | os.PathLike) -> None:
        """UserError naming ``path`` and the first field where ``meta`` differs from this extractor."""
        mine = self.meta()
        for field in META_CHECKED_FIELDS:
            if field not in meta:
                raise UserError(f"{path}: field '{field}' is missing; re-run extract_dino_features.py --overwrite")
            theirs, ours = meta[field], mine[field]
            if isinstance(ours, list):
                same = isinstance(theirs, list) and len(theirs) == len(ours) and all(
                    math.isclose(float(a), float(b), rel_tol=1e-6) for a, b in zip(theirs, ours))
            else:
                same = theirs == ours
            if not same:
                raise UserError(f"{path}: features were extracted with {field}={theirs} but the extractor uses "
                                f"{field}={ours}; re-extract with matching settings (extract_dino_features.py "
                                "--overwrite) or change the training settings")
