"""Ground-truth DINO features on disk, as written by extract_dino_features.py.

On-disk format (one folder):

* ``<image stem>.npy``: one array per image, ``[channels, h, w]`` channels-first, the
  layers concatenated on the channel axis in the order of ``layers`` (channels =
  num_layers * feature_dim), or ``[pca_dim, h, w]`` after PCA. (h, w) is the patch grid
  (``DinoExtractor.feature_size``) for ``upsample = none``, the image size otherwise.
  float16 with --fp16, else float32 (features are always computed in float32).
* ``features_meta.json``: the extractor settings (``DinoExtractor.meta()`` fields at the
  top level) plus dtype, channels, upsample / hr settings, the PCA basis, per-image sizes,
  and ``complete`` (false while an extraction is running or was interrupted).

:func:`compute_stored_features` is the single definition of "what is stored"; the store
uses it for on-the-fly ground truth and the training loop for renders.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from utils.dino_utils import DinoExtractor
from utils.errors import UserError
from utils.feature_pca import basis_tensors, project
from utils.image_utils import IMAGE_EXTENSIONS as IMAGE_SUFFIXES  # the one list of image extensions
from utils.io_utils import is_json_type, load_npy, read_json_object

META_NAME = "features_meta.json"
FORMAT_VERSION = 1
UPSAMPLE_MODES = ("none", "bilinear", "hr")
# features_meta.json keys every reader relies on, with their JSON types (checked at load, named on error)
META_FIELD_TYPES = {"complete": bool, "model": str, "layers": list, "resolution": int, "norm": bool, "channels": int,
                    "upsample": str, "patch_size": int, "feature_dim": int, "mean": list, "std": list, "images": dict}


def image_stem(name: str) -> str:
    """'0_color.png' or '0_color' -> '0_color' (only known image suffixes are stripped)."""
    base = os.path.basename(name)
    root, ext = os.path.splitext(base)
    return root if ext.lower() in IMAGE_SUFFIXES else base


def compute_stored_features(extractor: DinoExtractor, images: torch.Tensor, settings: dict,
                            basis: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """[B,3,H,W] in [0,1] -> [B,channels,h',w'] features in the stored space (differentiable).

    ``settings``: ``upsample`` ('none' | 'bilinear' | 'hr') and, for hr, ``hr`` =
    {shifts, shift_px, flip}. ``basis``: (mean [C], components [D,C]) PCA, applied on the
    patch grid (it commutes with the upsampling).
    """
    proj = None if basis is None else (lambda f: project(f, basis[0], basis[1]))
    mode = settings.get("upsample", "none")
    if mode == "none":
        feats = extractor.features(images)
        return feats if proj is None else proj(feats)
    if mode == "bilinear":
        return extractor.upsample_bilinear(images, project=proj).flatten(1, 2)
    if mode == "hr":
        hr = settings.get("hr") or {}
        return extractor.upsample_hr(images, shifts=int(hr.get("shifts", 8)), shift_px=int(hr.get("shift_px", 2)),
                                     flip=bool(hr.get("flip", False)), project=proj).flatten(1, 2)
    raise ValueError(f"unknown upsample mode '{mode}'; use one of {', '.join(UPSAMPLE_MODES)}")


def read_feature_meta(feature_dir: str | os.PathLike) -> tuple[Path, dict]:
    """(meta path, meta dict) of a finished feature folder; UserError when absent or unfinished."""
    folder = Path(feature_dir)
    hint = f"run: python extract_dino_features.py --image_dir IMAGES --output_dir {folder}"
    if not folder.is_dir():
        raise UserError(f"{folder}: DINO feature folder not found; {hint}")
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        what = "is empty" if not any(folder.iterdir()) else f"has no {META_NAME}"
        raise UserError(f"{folder}: feature folder {what}; {hint}")
    meta = read_json_object(meta_path, {"version": int})
    if meta["version"] != FORMAT_VERSION:
        raise UserError(f"{meta_path}: unsupported feature format version {meta['version']} (expected {FORMAT_VERSION}); "
                        "re-extract with --overwrite")
    check_meta_types(meta_path, meta)
    if not meta["complete"]:
        raise UserError(f"{meta_path}: extraction did not finish; re-run extract_dino_features.py (it resumes)")
    return meta_path, meta


def check_meta_types(meta_path: Path, meta: dict) -> None:
    """One-line UserError naming the file and key of the first field of the wrong type or value."""
    fix = "re-extract with --overwrite"
    read_json_object(meta_path, META_FIELD_TYPES)
    numbers = lambda v, n=None: isinstance(v, list) and all(is_json_type(x, (int, float)) for x in v) and (n is None or len(v) == n)  # noqa: E731
    checks = {
        "layers": (numbers(meta["layers"]) and all(is_json_type(x, int) and x >= 0 for x in meta["layers"]) and meta["layers"],
                   "a non-empty list of block indices"),
        "resolution": (meta["resolution"] > 0, "a positive pixel size"),
        "channels": (meta["channels"] > 0, "a positive channel count"),
        "feature_dim": (meta["feature_dim"] > 0, "a positive channel count"),
        "patch_size": (meta["patch_size"] > 0, "a positive pixel size"),
        "upsample": (meta["upsample"] in UPSAMPLE_MODES, f"one of {', '.join(UPSAMPLE_MODES)}"),
        "mean": (numbers(meta["mean"], 3), "3 numbers"),
        "std": (numbers(meta["std"], 3) and all(x > 0 for x in meta["std"]), "3 positive numbers"),
    }
    for key, (ok, what) in checks.items():
        if not ok:
            raise UserError(f"{meta_path}: key '{key}' must be {what}, got {meta[key]!r}; {fix}")
    pca = meta.get("pca")
    if pca is not None:
        raw = meta["feature_dim"] * len(meta["layers"])
        ok = (isinstance(pca, dict) and numbers(pca.get("mean"), raw) and isinstance(pca.get("components"), list)
              and len(pca["components"]) == meta["channels"] and all(numbers(r, raw) for r in pca["components"]))
        if not ok:
            raise UserError(f"{meta_path}: key 'pca' must hold mean [{raw}] and components [{meta['channels']}][{raw}]; {fix}")


class DinoFeatureStore:
    """Stored ground-truth features of one folder, checked against ``extractor`` at construction.

    ``get(name, gt_image)`` returns [channels,h,w] float32 on the extractor's device.
    A missing file is computed from ``gt_image`` (warned once, counted in
    ``gt_extractor_calls``); a corrupt or wrongly shaped file is a UserError.
    """

    def __init__(self, feature_dir: str | os.PathLike, extractor: DinoExtractor, cache: bool = True):
        self.folder = Path(feature_dir)
        self.meta_path, self.meta = read_feature_meta(self.folder)
        extractor.check_meta(self.meta, self.meta_path)
        self.extractor = extractor
        self.channels = self.meta["channels"]
        self.upsample = self.meta.get("upsample", "none")
        pca = self.meta.get("pca")
        self.basis = basis_tensors(pca, extractor.device) if pca else None
        self.cache = cache
        self.gt_extractor_calls = 0
        self._warned_missing = False
        self._memory: dict[str, torch.Tensor] = {}

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """[...,L*C,h,w] raw features -> [...,channels,h,w] in the stored space (PCA if any)."""
        return features if self.basis is None else project(features, *self.basis)

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] renders -> [B,channels,h',w'] features exactly as stored (differentiable)."""
        return compute_stored_features(self.extractor, images, self.meta, self.basis)

    def expected_size(self, height: int, width: int) -> tuple[int, int]:
        """Stored spatial size for an H x W ground-truth image."""
        return self.extractor.feature_size(height, width) if self.upsample == "none" else (height, width)

    def get(self, image_name: str, gt_image: torch.Tensor | None = None) -> torch.Tensor:
        """Features of ``image_name`` (stem or file name) -> [channels,h,w] float32.

        ``gt_image`` [3,H,W] in [0,1] lets the spatial size be checked and stands in when
        the file is missing.
        """
        stem = image_stem(image_name)
        if stem in self._memory:
            return self._memory[stem]
        path = self.folder / f"{stem}.npy"
        if path.is_file():
            feats = self._load(path, stem, gt_image)
        elif gt_image is None:
            raise UserError(f"{path}: feature file missing and no ground-truth image to compute it from; "
                            "re-run extract_dino_features.py on the image folder")
        else:
            feats = self._compute_missing(path, gt_image)
        if self.cache:
            self._memory[stem] = feats
        return feats

    def _load(self, path: Path, stem: str, gt_image: torch.Tensor | None) -> torch.Tensor:
        """Read and shape-check one stored array."""
        arr = load_npy(path)
        if arr.ndim != 3 or arr.shape[0] != self.channels:
            raise UserError(f"{path}: shape {arr.shape} but {self.meta_path.name} says [{self.channels}, h, w]; "
                            "delete it and re-run extract_dino_features.py")
        if not np.issubdtype(arr.dtype, np.floating):
            raise UserError(f"{path}: dtype {arr.dtype} is not floating point; delete it and re-extract")
        if not np.isfinite(arr).all():
            raise UserError(f"{path}: holds NaN/inf feature values; delete it and re-run extract_dino_features.py")
        expected = self._expected_from(stem, gt_image)
        if expected is not None and tuple(arr.shape[1:]) != expected:
            raise UserError(f"{path}: spatial size {tuple(arr.shape[1:])} but this image needs {expected} "
                            f"(model {self.extractor.short_name}, resolution {self.extractor.resolution}); the "
                            "training images differ from the extracted ones: re-extract with --overwrite")
        return torch.from_numpy(arr.astype(np.float32, copy=False)).to(self.extractor.device)

    def _expected_from(self, stem: str, gt_image: torch.Tensor | None) -> tuple[int, int] | None:
        """Spatial size implied by the ground-truth image, else by the meta's per-image record."""
        if gt_image is not None:
            return self.expected_size(*gt_image.shape[-2:])
        entry = self.meta.get("images", {}).get(stem)
        return tuple(entry["stored_size"]) if entry and "stored_size" in entry else None

    def _compute_missing(self, path: Path, gt_image: torch.Tensor) -> torch.Tensor:
        """On-the-fly ground truth for a missing file (warned once per store)."""
        if not self._warned_missing:
            warnings.warn(f"{path}: DINO features missing; computing ground truth on the fly (slower). "
                          "Re-run extract_dino_features.py to fill the folder", stacklevel=3)
            self._warned_missing = True
        self.gt_extractor_calls += 1
        with torch.no_grad():
            return self.compute(gt_image.unsqueeze(0))[0].float()


def open_feature_store(feature_dir: str | os.PathLike, weights: str | os.PathLike | None = None,
                       random_init: bool | None = None, device: str | torch.device = "cpu") -> DinoFeatureStore:
    """Store plus an extractor built from the folder's own meta (model, layers, resolution, norm)."""
    meta_path, meta = read_feature_meta(feature_dir)
    extractor = DinoExtractor.from_meta(meta, weights=weights, random_init=random_init, device=device, origin=str(meta_path))
    return DinoFeatureStore(feature_dir, extractor)
