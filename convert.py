#!/usr/bin/env python
"""Photos -> undistorted COLMAP scene, following graphdeco's convert.py conventions.

    python convert.py -s SCENE [--camera OPENCV] [--matcher exhaustive|sequential] [--single_camera]
                      [--no_gpu] [--skip_matching] [--resize] [--colmap_executable PATH]

Input: the photos in ``SCENE/input/``. Output: ``SCENE/images/`` (undistorted) and
``SCENE/sparse/0/`` (PINHOLE cameras), plus ``SCENE/images_2|4|8/`` with --resize.
Working files stay in ``SCENE/distorted/``: ``database.db``, the raw models
``sparse/N/`` and ``convert.log`` (every COLMAP message; it is appended while the
steps run so that it survives a failure). Steps: feature extraction, matching,
mapping, undistortion -- run by the ``colmap`` program when it is on PATH (or
given with --colmap_executable), otherwise by pycolmap; the outputs are the same.
"""
from __future__ import annotations

import shutil
import time
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arguments import parse
from arguments.config import Params, param
from scene.colmap_loader import MODEL_IDS
from scene.reader_utils import IMAGE_EXTENSIONS, short_list
from utils.colmap_utils import (Backend, feature_counts, find_backend, largest_model, replace_dir, resize_images,
                                run_logged, step_command, verified_pairs)
from utils.errors import UserError, run_cli

RESIZE_FACTORS = (2, 4, 8)
MIN_IMAGES = 2
PARALLAX_HINT_INLIERS = 100  # a failed mapping despite this many matches points to missing parallax


@dataclass
class Layout:
    """Where everything goes for one scene folder."""

    scene: Path

    @property
    def input(self) -> Path:
        return self.scene / "input"

    @property
    def work(self) -> Path:
        return self.scene / "distorted"

    @property
    def database(self) -> Path:
        return self.work / "database.db"

    @property
    def sparse(self) -> Path:
        return self.work / "sparse"

    @property
    def undistorted(self) -> Path:
        return self.work / "undistorted"

    @property
    def log(self) -> Path:
        return self.work / "convert.log"


CAMERA_MODELS = tuple(sorted(MODEL_IDS))


@dataclass(frozen=True)
class ConvertParams(Params):
    """How convert.py runs COLMAP."""

    GROUP = "COLMAP conversion"
    source_path: str = param("", "scene folder holding the photos in input/", short="s")
    camera: Literal[CAMERA_MODELS] = param("OPENCV", "camera model for calibration")
    colmap_executable: str = param("", "path of the colmap program (default: colmap on PATH, then pycolmap)")
    no_gpu: bool = param(False, "run SIFT extraction and matching on the CPU")
    skip_matching: bool = param(False, "reuse SCENE/distorted/sparse from an earlier run; only undistort")
    resize: bool = param(False, "also write images_2, images_4, images_8")
    magick_executable: str = param("", "accepted for graphdeco's scripts; images are resized in-process, ImageMagick is not used")
    matcher: Literal["exhaustive", "sequential"] = param("exhaustive", "exhaustive (unordered photos) or sequential (video frames)")
    single_camera: bool = param(False, "all photos share one camera (same lens and size)")

    def check(self) -> None:
        if not self.source_path:
            raise UserError("-s/--source_path is required: the scene folder holding input/")


def _unreadable(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or None."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{exc.__class__.__name__}: {exc}".strip()
    return None


def check_input(layout: Layout) -> list[str]:
    """Names (relative to input/) of the photos; refuses a missing folder, unreadable images, too few images.
    Files without an image extension are ignored with a warning."""
    if not layout.scene.is_dir():
        raise UserError(f"{layout.scene}: scene folder not found (check -s/--source_path)")
    if not layout.input.is_dir():
        raise UserError(f"{layout.input}: folder not found; put the photos to reconstruct in SCENE/input/")
    files = sorted(p for p in layout.input.rglob("*") if p.is_file() and not p.name.startswith("."))
    others = [p.relative_to(layout.input).as_posix() for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if others:
        print(f"warning: ignoring {len(others)} non-image file(s) in {layout.input}: {short_list(others)}")
    names = []
    for path in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
        why = _unreadable(path)
        if why:
            raise UserError(f"{path}: unreadable image ({why}); remove or replace it")
        names.append(path.relative_to(layout.input).as_posix())
    if len(names) < MIN_IMAGES:
        raise UserError(f"{layout.input}: found {len(names)} image(s); at least {MIN_IMAGES} overlapping photos are "
                        "needed (a few dozen for a good reconstruction)")
    return names


def fresh_workdir(layout: Layout) -> None:
    """Remove the database, models and log of an earlier run (our own outputs) before starting again."""
    for suffix in ("", "-shm", "-wal"):
        Path(f"{layout.database}{suffix}").unlink(missing_ok=True)
    layout.log.unlink(missing_ok=True)
    for folder in (layout.sparse, layout.undistorted):
        if folder.exists():
            shutil.rmtree(folder)
    layout.work.mkdir(parents=True, exist_ok=True)


class Steps:
    """Numbered, timed steps; progress lines on the console, COLMAP output in the log."""

    def __init__(self, backend: Backend, layout: Layout, args, total: int):
        self.backend, self.layout, self.args, self.total, self.index = backend, layout, args, total, 0

    def run(self, name: str, step: str, **spec) -> float:
        self.index += 1
        print(f"[{self.index}/{self.total}] {name} ...", flush=True)
        start = time.monotonic()
        common = {"database": str(self.layout.database), "image_dir": str(self.layout.input),
                  "no_gpu": self.args.no_gpu}
        run_logged(step_command(self.backend, step, {**common, **spec}), self.layout.log, name)
        return time.monotonic() - start

    def done(self, name: str, summary: str, seconds: float) -> None:
        print(f"[{self.index}/{self.total}] {name}: {summary} ({seconds:.1f} s)", flush=True)
        with open(self.layout.log, "a") as log:
            log.write(f"# {name}: {summary} ({seconds:.1f} s)\n")


def extract_features(steps: Steps, names: list[str]) -> None:
    name = "feature extraction"
    secs = steps.run(name, "extract", camera=steps.args.camera, single_camera=steps.args.single_camera)
    counts = feature_counts(steps.layout.database)
    unread = [n for n in names if n not in counts]
    useful = [n for n, c in counts.items() if c > 0]
    if len(useful) < MIN_IMAGES:
        raise UserError(f"{name} failed: only {len(useful)} image(s) yielded SIFT features "
                        f"(unread by COLMAP: {short_list(unread) or 'none'}); photos need texture; "
                        f"log: {steps.layout.log}")
    if unread:
        print(f"    warning: COLMAP could not read {len(unread)} image(s): {short_list(unread)}")
    mean = sum(counts.values()) / max(len(counts), 1)
    steps.done(name, f"{len(counts)} images, {mean:.0f} features per image", secs)


def match_features(steps: Steps) -> None:
    name = f"feature matching ({steps.args.matcher})"
    secs = steps.run(name, "match", matcher=steps.args.matcher)
    pairs, best = verified_pairs(steps.layout.database)
    if pairs == 0:
        raise UserError(f"{name} failed: no image pair has enough geometrically verified matches (best pair: {best}); "
                        f"the photos need more overlap and texture; log: {steps.layout.log}")
    steps.done(name, f"{pairs} verified image pairs", secs)


def map_scene(steps: Steps, names: list[str]) -> Path:
    """Run the mapper; return the largest model and report the images left out."""
    name, layout = "mapping", steps.layout
    layout.sparse.mkdir(parents=True, exist_ok=True)
    secs = steps.run(name, "map", output=str(layout.sparse))
    best = largest_model(layout.sparse)
    if best is None:
        pairs, inliers = verified_pairs(layout.database)
        why = ("the photos match but show too little parallax (move the camera between shots, do not only "
               "rotate it)" if inliers >= PARALLAX_HINT_INLIERS else "too few matches (take photos with more overlap)")
        raise UserError(f"{name} failed: no good initial image pair: {why}; {pairs} verified pairs, best "
                        f"{inliers} inlier matches; log: {layout.log}")
    model, registered = best
    models = sum(1 for d in layout.sparse.iterdir() if d.is_dir())
    steps.done(name, f"{len(registered)}/{len(names)} images registered in model {model.name}"
               + (f" (largest of {models})" if models > 1 else ""), secs)
    report_unregistered(names, registered, layout.log)
    return model


def report_unregistered(names: list[str], registered: list[str], log_path: Path) -> None:
    left = sorted(set(names) - set(registered))
    if left:
        msg = f"warning: {len(left)} image(s) not registered (not in SCENE/images): {short_list(left)}"
        print(f"    {msg}")
        with open(log_path, "a") as log:
            log.write(f"# {msg}\n# all unregistered: {' '.join(left)}\n")


def undistort(steps: Steps, model: Path) -> int:
    """Undistort into distorted/undistorted, then move images/ and sparse/0/ into the scene."""
    name, layout = "undistortion", steps.layout
    if layout.undistorted.exists():
        shutil.rmtree(layout.undistorted)
    secs = steps.run(name, "undistort", model=str(model), output=str(layout.undistorted))
    images, sparse = layout.undistorted / "images", layout.undistorted / "sparse"
    if not images.is_dir() or not (sparse / "cameras.bin").is_file():
        raise UserError(f"{name} failed: no images/ or sparse/ written in {layout.undistorted}; log: {layout.log}")
    count = sum(1 for p in images.rglob("*") if p.is_file())
    replace_dir(images, layout.scene / "images")
    replace_dir(sparse, layout.scene / "sparse" / "0")
    shutil.rmtree(layout.undistorted)
    steps.done(name, f"{count} images -> {layout.scene / 'images'}, model -> {layout.scene / 'sparse' / '0'}", secs)
    return count


def write_pyramid(scene: Path) -> None:
    for factor in RESIZE_FACTORS:
        tmp = scene / f".images_{factor}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        start = time.monotonic()
        count = resize_images(scene / "images", tmp, factor)
        replace_dir(tmp, scene / f"images_{factor}")
        print(f"resize: {count} images -> images_{factor} ({time.monotonic() - start:.1f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    (args,) = parse((ConvertParams,), sys.argv[1:] if argv is None else argv,
                    "Run COLMAP on SCENE/input/ and write an undistorted scene for train.py")
    layout = Layout(Path(args.source_path).absolute())  # steps run from the repository root
    backend = find_backend(args.colmap_executable or None)
    if args.skip_matching:
        if not layout.scene.is_dir():
            raise UserError(f"{layout.scene}: scene folder not found (check -s/--source_path)")
        best = largest_model(layout.sparse)
        if best is None:
            raise UserError(f"{layout.sparse}: no model from an earlier run; run without --skip_matching")
        if not layout.input.is_dir():
            raise UserError(f"{layout.input}: folder not found; --skip_matching undistorts the photos in input/")
        model, names = best[0], best[1]
        layout.work.mkdir(parents=True, exist_ok=True)
        steps = Steps(backend, layout, args, total=1)
    else:
        names = check_input(layout)
        fresh_workdir(layout)
        steps = Steps(backend, layout, args, total=4)
    with open(layout.log, "a") as log:
        log.write(f"# convert.py -s {layout.scene}: {len(names)} images, backend {backend.kind}"
                  f"{' ' + backend.executable if backend.executable else ''}\n")
    print(f"convert: {len(names)} images in {layout.input}, using {backend.kind}; log: {layout.log}")
    if not args.skip_matching:
        extract_features(steps, names)
        match_features(steps)
        model = map_scene(steps, names)
    undistort(steps, model)
    if args.resize:
        write_pyramid(layout.scene)
    print(f"done: {layout.scene} is ready for train.py -s {layout.scene}")


if __name__ == "__main__":
    run_cli(main)
