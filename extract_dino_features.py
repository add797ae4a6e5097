#!/usr/bin/env python
"""Extract DINO / DINOv2 patch features of every image in a folder (ground truth for training).

    python extract_dino_features.py --image_dir SCENE/images --output_dir SCENE/dino_features \\
        [--model dinov2_vits14] [--layers 11 ...] [--resolution 518] [--fp16] [--pca_dim 64] \\
        [--upsample none|bilinear|hr] [--mask_dir SCENE/masks] [--preview] [--overwrite]

Writes OUTPUT_DIR/<image stem>.npy ([channels, h, w], channels-first, layers concatenated
on the channel axis; float16 with --fp16 else float32; see utils/feature_store.py) and
OUTPUT_DIR/features_meta.json. Interrupted runs resume; settings must then match.
Under ``torchrun --nproc_per_node N`` the image batches are shared out over the ranks
(utils/distributed.py); the files are the same as one process writes.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from tqdm import tqdm

from arguments import parse
from arguments.config import Params, param
from utils import distributed as ddp
from utils.dino_utils import HR_SHIFT_PX, META_CHECKED_FIELDS, DinoExtractor, resolve_device
from utils.errors import UserError, run_cli
from utils.feature_pca import (PCA_FIT_MAX_IMAGES, PCA_MAX_SAMPLES, PCA_SAMPLES_PER_IMAGE, PCA_SEED, basis_tensors,
                               evenly_spaced, fit_pca, fit_preview, preview_rgb, sample_vectors)
from utils.feature_store import FORMAT_VERSION, IMAGE_SUFFIXES, META_NAME, UPSAMPLE_MODES, compute_stored_features
from utils.image_utils import read_image, resize_image, save_image
from utils.io_utils import load_npy, read_json, save_npy, write_json
from utils.perceptual import mask_to_feature_res

RESUME_FIELDS = META_CHECKED_FIELDS + ("dtype", "upsample", "hr", "pca_dim")
MASK_EXCLUDED_MIN = 128  # mask pixels >= this (255 in EndoNeRF) are tools / excluded
PREVIEW_DIR = "preview"
BYTES_WARN = 200 * 2 ** 20  # warn when one upsampled feature file exceeds this size


@dataclass(frozen=True)
class ExtractParams(Params):
    """What extract_dino_features.py computes and where it writes it."""

    GROUP = "DINO feature extraction"
    image_dir: str = param("", "folder of images (searched recursively)", aliases=("--dir_images",))
    output_dir: str = param("", "folder for <image>.npy feature maps and features_meta.json", aliases=("--dir_dst",))
    model: str = param("dinov2_vits14", "short name (dino_vits16, dino_vits8, dinov2_vits14/vitb14/vitl14/vitg14, ..._reg) or a timm name")
    layers: list[int] | None = param(None, "ViT block indices whose patch tokens are concatenated (default: the last block)", ge=0)
    resolution: int | None = param(None, "long side of the ViT input in pixels (default: the model's own)", ge=1)
    norm: bool = param(False, "apply the final LayerNorm to the chosen layers")
    batch_size: int = param(4, "images per ViT forward pass", ge=1)
    fp16: bool = param(False, "store float16 feature files (computation stays float32)")
    pca_dim: int | None = param(None, "project features onto D principal components fitted on the folder", ge=1)
    upsample: Literal[UPSAMPLE_MODES] = param("none", "feature map size: the patch grid, bilinear to the image size, "
                                              "or hr (shifted-copy averaging)")
    hr_shifts: Literal[4, 8] = param(8, "--upsample hr: shift directions")
    hr_flip: bool = param(False, "--upsample hr: also average horizontally flipped copies")
    weights: str | None = param(None, "local .pth/.safetensors state dict (default: the local timm/Hugging Face cache)",
                                aliases=("--model_path",))
    random_init: bool = param(False, "random weights (tests and offline demos only)")
    preview: bool = param(False, "write PCA-to-RGB PNGs into OUTPUT_DIR/preview")
    overwrite: bool = param(False, "recompute everything, ignoring existing files")
    device: Literal["auto", "cpu", "cuda"] = param("auto", "compute device")
    mask_dir: str | None = param(None, "masks (255 = excluded) kept out of the PCA / preview fitting")

    def check(self) -> None:
        for flag in ("image_dir", "output_dir"):
            if not getattr(self, flag):
                raise UserError(f"--{flag} is required")
        if not Path(self.image_dir).is_dir():
            raise UserError(f"--image_dir {self.image_dir}: folder not found")
        if self.mask_dir and not Path(self.mask_dir).is_dir():
            raise UserError(f"--mask_dir {self.mask_dir}: mask folder not found")
        if Path(self.output_dir).resolve() == Path(self.image_dir).resolve():
            raise UserError(f"--output_dir {self.output_dir}: must differ from --image_dir")


def natural_key(name: str) -> list:
    """Sort key that orders '2_color' before '10_color'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(image_dir: str | Path) -> list[Path]:
    """Image files of a folder, natural order; UserError for a missing/empty folder or clashing stems."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found; pass --image_dir with the scene's images folder")
    files = sorted((f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda f: natural_key(f.name))
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found; check --image_dir")
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise UserError(f"{f}: same name as {seen[f.stem].name}; features are named by stem, rename one")
        seen[f.stem] = f
    return files


def read_rgb(path: Path) -> torch.Tensor:
    """Image file -> [3,H,W] float32 in [0,1] (grey expanded, alpha dropped)."""
    img = read_image(path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(img[:, :, :3])).permute(2, 0, 1).float() / 255.0


def read_valid_mask(mask_dir: Path, stem: str, size: tuple[int, int]) -> torch.Tensor:
    """[1,H,W] float validity (1 = usable) of an image from its mask (>= 128 = excluded)."""
    matches = [mask_dir / f"{stem}{ext}" for ext in IMAGE_SUFFIXES if (mask_dir / f"{stem}{ext}").is_file()]
    if not matches:
        raise UserError(f"{mask_dir}: no mask named {stem}.png (or another image type) for image {stem}; "
                        "masks must share the image file names")
    mask = read_image(matches[0])
    mask = mask.max(axis=2) if mask.ndim == 3 else mask
    mask = resize_image(mask, size[1], size[0], nearest=True)
    return torch.from_numpy((mask < MASK_EXCLUDED_MIN).astype(np.float32))[None]


def iter_batches(paths: list[Path], batch_size: int) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """Consecutive images of equal size, at most ``batch_size`` at a time -> (paths, [B,3,H,W])."""
    group: list[Path] = []
    tensors: list[torch.Tensor] = []
    for path in paths:
        img = read_rgb(path)
        if tensors and (len(group) == batch_size or img.shape != tensors[0].shape):
            yield group, torch.stack(tensors)
            group, tensors = [], []
        group.append(path)
        tensors.append(img)
    if tensors:
        yield group, torch.stack(tensors)


def run_settings(extractor: DinoExtractor, args: ExtractParams) -> dict:
    """Flat description of this run (extractor meta + storage options)."""
    settings = extractor.meta()
    settings.update(
        version=FORMAT_VERSION, dtype="float16" if args.fp16 else "float32", upsample=args.upsample,
        hr={"shifts": args.hr_shifts, "shift_px": HR_SHIFT_PX, "flip": bool(args.hr_flip)}
        if args.upsample == "hr" else None,
        pca_dim=args.pca_dim, channels=args.pca_dim or extractor.channels,
        layout="[channels, h, w] channels-first; layers concatenated on the channel axis in 'layers' order",
        spatial="patch grid (h, w) = feature_size(H, W)" if args.upsample == "none" else "image size (H, W)",
        mask_dir=str(args.mask_dir) if args.mask_dir else None,
    )
    return settings


def check_resume(old: dict, settings: dict, meta_path: Path) -> None:
    """UserError naming the first setting where an existing folder differs from this run."""
    if old.get("version") != FORMAT_VERSION:
        raise UserError(f"{meta_path}: written by another format version; pass --overwrite to re-extract")
    for field in RESUME_FIELDS:
        if old.get(field) != settings.get(field):
            raise UserError(f"{meta_path}: existing features use {field}={old.get(field)} but this run asks for "
                            f"{field}={settings.get(field)}; pass --overwrite to re-extract or use the same settings")


def valid_cells(args: ExtractParams, path: Path, image: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
    """[h,w] bool cells free of masked pixels, or None without --mask_dir."""
    if not args.mask_dir:
        return None
    mask = read_valid_mask(Path(args.mask_dir), path.stem, tuple(image.shape[-2:]))
    return mask_to_feature_res(mask, grid)[0] > 0


def fit_feature_pca(extractor: DinoExtractor, files: list[Path], args: ExtractParams) -> dict:
    """PCA basis of the patch features of up to PCA_FIT_MAX_IMAGES images (seeded subsample)."""
    gen = torch.Generator().manual_seed(PCA_SEED)
    chosen = evenly_spaced(files, PCA_FIT_MAX_IMAGES)
    per_image = max(1, min(PCA_SAMPLES_PER_IMAGE, PCA_MAX_SAMPLES // len(chosen)))
    fitted = []  # per batch: [(features [C,h,w], valid cells [h,w] or None)], sampled below in image order
    for paths, imgs in tqdm(list(ddp.shard(iter_batches(chosen, args.batch_size))), desc="PCA fit", unit="batch",
                            disable=not ddp.is_main()):
        with torch.no_grad():
            feats = extractor.features(imgs)
        fitted.append([(f.cpu(), valid_cells(args, path, img, f.shape[-2:])) for path, img, f in zip(paths, imgs, feats)])
    samples = torch.cat([sample_vectors(f, valid, per_image, gen)
                         for batch in ddp.gather_sharded(fitted) for f, valid in batch])
    if samples.shape[0] < 2:
        raise UserError(f"{args.mask_dir}: the masks exclude every feature cell; nothing to fit --pca_dim on")
    if args.pca_dim > min(samples.shape):
        raise UserError(f"--pca_dim {args.pca_dim}: at most {min(samples.shape)} components for these images "
                        f"({samples.shape[0]} samples of {samples.shape[1]} channels)")
    basis = fit_pca(samples, args.pca_dim)
    basis["seed"] = PCA_SEED
    return basis


def image_entry(extractor: DinoExtractor, path: Path, size: tuple[int, int], stored: tuple[int, ...]) -> dict:
    """Per-image record for the meta."""
    return {"file": path.name, "image_size": list(size), "input_size": list(extractor.input_size(*size)),
            "feature_size": list(extractor.feature_size(*size)), "stored_size": list(stored[-2:])}


def extract_all(extractor: DinoExtractor, pending: list[Path], out_dir: Path, settings: dict,
                basis: dict | None, args: ExtractParams) -> dict:
    """Compute and save features of ``pending`` images; returns their meta records."""
    tensors = basis_tensors(basis, extractor.device) if basis else None
    dtype = np.float16 if args.fp16 else np.float32
    batch_entries: list[dict] = []
    warned = False
    total = len(pending) if ddp.world_size() == 1 else None  # a rank's share is known only batch by batch
    with tqdm(total=total, desc="DINO features", unit="img", disable=not ddp.is_main()) as bar:
        for paths, imgs in ddp.shard(iter_batches(pending, args.batch_size)):
            with torch.no_grad():
                feats = compute_stored_features(extractor, imgs.to(extractor.device), settings, tensors)
            arrays = feats.float().cpu().numpy().astype(dtype)
            if not warned and arrays[0].nbytes > BYTES_WARN:
                print(f"note: {arrays[0].nbytes / 2 ** 20:.0f} MiB per feature file; consider --pca_dim or "
                      "--upsample none", file=sys.stderr)
                warned = True
            batch_entries.append({})
            for path, arr in zip(paths, arrays):
                save_npy(out_dir / f"{path.stem}.npy", arr)
                batch_entries[-1][path.stem] = image_entry(extractor, path, tuple(imgs.shape[-2:]), arr.shape)
            bar.update(len(paths))
    return {stem: e for part in ddp.gather_sharded(batch_entries) for stem, e in part.items()}


def write_previews(files: list[Path], out_dir: Path, old_preview: dict | None, patch: int, upsampled: bool) -> dict:
    """PCA-to-RGB PNG per image with one fixed basis for the folder; returns that basis."""
    preview = old_preview
    if preview is None:
        gen = torch.Generator().manual_seed(PCA_SEED)
        chosen = evenly_spaced(files, PCA_FIT_MAX_IMAGES)
        per_image = max(1, PCA_MAX_SAMPLES // len(chosen))
        samples = [sample_vectors(torch.from_numpy(load_npy(out_dir / f"{f.stem}.npy")).float(), None, per_image, gen)
                   for f in chosen]
        preview = fit_preview(torch.cat(samples))
    scale = 1 if upsampled else patch
    for f in tqdm(files, desc="previews", unit="img"):
        feats = torch.from_numpy(load_npy(out_dir / f"{f.stem}.npy")).float()
        save_image(out_dir / PREVIEW_DIR / f"{f.stem}_pca.png", preview_rgb(feats, preview, scale))
    return preview


def main(argv: list[str] | None = None) -> None:
    (args,) = parse((ExtractParams,), sys.argv[1:] if argv is None else argv,
                    "Extract DINO/DINOv2 dense features for a folder of images")
    files = list_images(args.image_dir)
    out_dir = Path(args.output_dir)
    meta_path = out_dir / META_NAME
    device = ddp.init_from_env(resolve_device(args.device))  # torchrun: join the ranks (no-op without)
    extractor = DinoExtractor(args.model, args.layers, args.resolution, args.weights, args.random_init,
                              device, norm=args.norm)
    settings = run_settings(extractor, args)
    if args.pca_dim is not None and args.pca_dim > extractor.channels:
        raise UserError(f"--pca_dim {args.pca_dim}: larger than the {extractor.channels} feature channels")
    old = read_json(meta_path) if meta_path.is_file() and not args.overwrite else None
    if old is not None:
        check_resume(old, settings, meta_path)
    elif not args.overwrite and any(out_dir.glob("*.npy")):
        print(f"note: {out_dir} has .npy files but no {META_NAME}; recomputing them", file=sys.stderr)
        args = args.replace(overwrite=True)
    basis = (old or {}).get("pca") if args.pca_dim else None
    if args.pca_dim and basis is None:
        basis = fit_feature_pca(extractor, files, args)
    entries = dict((old or {}).get("images", {}))
    pending = [f for f in files if args.overwrite or not (out_dir / f"{f.stem}.npy").is_file()]
    ddp.barrier()  # every rank has seen the folder before anything is written to it
    if ddp.is_main():
        write_json(meta_path, {**settings, "pca": basis, "preview": None, "images": entries, "complete": False})
    if len(pending) < len(files) and ddp.is_main():
        print(f"resuming: {len(files) - len(pending)} of {len(files)} images already done", file=sys.stderr)
    entries.update(extract_all(extractor, pending, out_dir, settings, basis, args))  # ends with every rank's files
    if not ddp.is_main():
        ddp.shutdown()  # rank 0 alone writes the meta
        return
    for f in files:  # records of images done by an interrupted run
        if f.stem not in entries:
            arr = load_npy(out_dir / f"{f.stem}.npy")
            entries[f.stem] = image_entry(extractor, f, tuple(read_rgb(f).shape[-2:]), arr.shape)
    preview = write_previews(files, out_dir, (old or {}).get("preview"), extractor.patch_size,
                             args.upsample != "none") if args.preview else None
    write_json(meta_path, {**settings, "pca": basis, "preview": preview, "images": entries, "complete": True})
    print(f"wrote {len(pending)} feature files ({len(files)} total) to {out_dir}")
    ddp.shutdown()


if __name__ == "__main__":
    run_cli(main)
