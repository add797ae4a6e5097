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

Fallback: when the first engine fails (a step crashes, the mapper writes no model or
registers fewer than --min_registered of the photos) and the other one is installed,
the other starts again from a new database (COLMAP databases are not compatible both
ways: 3.8 cannot read the database of pycolmap 4.x) and the console says so. The mapper
writes into ``distorted/sparse.tmp``, which becomes ``distorted/sparse`` only once accepted.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arguments import parse
from arguments.config import Params, param
from scene.colmap_loader import MODEL_IDS
from scene.reader_utils import IMAGE_EXTENSIONS, short_list
from utils.colmap_utils import (ENGINES, INSTALL_HINT, Backend, EngineFailure, feature_counts, find_engines,
                                largest_model, log_mentions, replace_dir, resize_images, run_logged, step_command,
                                verified_pairs)
from utils.errors import UserError, run_cli

RESIZE_FACTORS = (2, 4, 8)
MIN_IMAGES = 2
PARALLAX_HINT_INLIERS = 100  # a failed mapping despite this many matches points to missing parallax
NO_INITIAL_PAIR = "No good initial image pair found"  # what both COLMAP 3.x and 4.x mappers log
MANY_PARAMETER_CAMERAS = ("OPENCV", "FULL_OPENCV", "RADIAL")  # a failed mapping suggests a simpler --camera


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
    def sparse_tmp(self) -> Path:
        return self.work / "sparse.tmp"

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
    engine: Literal[ENGINES] = param("auto", "which COLMAP runs first (auto: the colmap program when found, else "
                                     "pycolmap); if it fails, the other one, when installed, starts again")
    min_registered: float = param(0.5, "fraction of the photos the mapper must register; a model with fewer counts "
                                  "as failed (the other COLMAP is tried); 0 accepts any model", ge=0.0, le=1.0)
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


def fresh_database(layout: Layout) -> None:
    """Remove the database and the unaccepted mapper output, for a new engine or a new run."""
    for suffix in ("", "-shm", "-wal"):
        Path(f"{layout.database}{suffix}").unlink(missing_ok=True)
    if layout.sparse_tmp.exists():
        shutil.rmtree(layout.sparse_tmp)


def fresh_workdir(layout: Layout) -> None:
    """Remove the database, models and log of an earlier run (our own outputs) before starting again."""
    fresh_database(layout)
    layout.log.unlink(missing_ok=True)
    for folder in (layout.sparse, layout.undistorted):
        if folder.exists():
            shutil.rmtree(folder)
    layout.work.mkdir(parents=True, exist_ok=True)


def log_note(log_path: Path, text: str) -> None:
    with open(log_path, "a") as log:
        log.write(f"# {text}\n")


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
        log_note(self.layout.log, f"{name}: {summary} ({seconds:.1f} s)")


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


class TooFewRegistered(EngineFailure):
    """The mapper's largest model holds fewer than --min_registered of the photos (``registered`` of them)."""

    def __init__(self, reason: str, log: Path, registered: int):
        super().__init__(reason, log)
        self.registered = registered


class NoInitialPair(EngineFailure):
    """The mapper found no pair of photos to start from; ``inliers``: the best pair's verified matches."""

    def __init__(self, name: str, database: Path, log: Path):
        pairs, self.inliers = verified_pairs(database)
        super().__init__(f"{name} failed: no good initial image pair found ({pairs} verified pairs, best "
                         f"{self.inliers} inlier matches)", log)


def required_images(fraction: float, n_images: int) -> int:
    """How many of ``n_images`` photos --min_registered ``fraction`` asks for (rounded up; 0.07 of 100 is 7)."""
    return math.ceil(fraction * n_images - 1e-9)


def map_scene(steps: Steps, names: list[str]) -> tuple[Path, list[str]]:
    """Run the mapper into distorted/sparse.tmp; move it to distorted/sparse once its largest model registers at
    least --min_registered of the photos. Returns that model's folder and image names; reports the images left
    out. A crash, no model or too few images -> EngineFailure (the folder is left for the caller to remove)."""
    name, layout = "mapping", steps.layout
    layout.sparse_tmp.mkdir(parents=True)
    offset = layout.log.stat().st_size
    try:
        secs = steps.run(name, "map", output=str(layout.sparse_tmp))
        best = largest_model(layout.sparse_tmp)
    except EngineFailure:  # COLMAP 3.8 exits 1 when it finds no initial pair; say why rather than "failed"
        if not log_mentions(layout.log, offset, NO_INITIAL_PAIR):
            raise
        best = None
    if best is None:
        raise NoInitialPair(name, layout.database, layout.log)
    model, registered = best
    need = required_images(steps.args.min_registered, len(names))
    if len(registered) < need:
        raise TooFewRegistered(f"{name} registered only {len(registered)}/{len(names)} images (model {model.name}), "
                               f"fewer than --min_registered {steps.args.min_registered:g} of them ({need})",
                               layout.log, len(registered))
    models = sum(1 for d in layout.sparse_tmp.iterdir() if d.is_dir())
    replace_dir(layout.sparse_tmp, layout.sparse)
    steps.done(name, f"{len(registered)}/{len(names)} images registered in model {model.name}"
               + (f" (largest of {models})" if models > 1 else ""), secs)
    report_unregistered(names, registered, layout.log)
    return layout.sparse / model.name, registered


def advice(args: ConvertParams, failures: list[tuple[Backend, EngineFailure]], engines: list[Backend],
           n_images: int) -> str:
    """What to try after every engine failed: flags that fit the failures, the photos, the missing engine."""
    tips = []
    partial = max((e.registered for _, e in failures if isinstance(e, TooFewRegistered)), default=0)
    if partial >= MIN_IMAGES:
        tips.append(f"--min_registered {math.floor(100 * partial / n_images) / 100:g} to accept the model of "
                    f"{partial}/{n_images} images")
    if args.camera in MANY_PARAMETER_CAMERAS:
        tips.append("a simpler --camera (SIMPLE_RADIAL, or PINHOLE for photos already undistorted)")
    if not args.single_camera:
        tips.append("--single_camera if one camera took every photo at one size")
    inliers = max((e.inliers for _, e in failures if isinstance(e, NoInitialPair)), default=0)
    if inliers >= PARALLAX_HINT_INLIERS:
        tips.append(f"more photos from more viewpoints (pairs match with up to {inliers} inliers, yet none started "
                    "a model: if the camera only rotated between shots, move it)")
    else:
        tips.append("more photos with more overlap")
    if len(engines) == 1:
        other = "pycolmap" if engines[0].kind == "colmap" else "colmap"
        tips.append(f"installing {other} ({INSTALL_HINT[other]}) so that convert.py tries it too")
    return "; try " + ", or ".join(tips)


def reconstruct(engines: list[Backend], layout: Layout, args: ConvertParams,
                names: list[str]) -> tuple[Steps, Path, list[str]]:
    """Feature extraction, matching and mapping with the first engine; when it fails (EngineFailure: a crash, no
    model, too few images), everything again from a new database with the next one, saying so.
    Returns the winning engine's Steps, its model folder and registered image names; all failed -> UserError."""
    failures: list[tuple[Backend, EngineFailure]] = []
    for backend in engines:
        if failures:
            failed, exc = failures[-1]
            line = (f"{failed.label} failed: {exc.reason}; trying {backend.label} instead, from a new database "
                    "(feature extraction, matching, mapping)")
            print(line, flush=True)
            log_note(layout.log, line)
        fresh_database(layout)
        steps = Steps(backend, layout, args, total=4)
        try:
            extract_features(steps, names)
            match_features(steps)
            return (steps, *map_scene(steps, names))
        except EngineFailure as exc:
            failures.append((backend, exc))
        finally:
            if layout.sparse_tmp.exists():  # never leave an unaccepted model behind
                shutil.rmtree(layout.sparse_tmp)
    if len(failures) == 1:
        what = failures[0][1].reason
    else:
        what = "both COLMAP engines failed: " + "; ".join(f"{b.label}: {e.reason}" for b, e in failures)
    raise UserError(f"{what}{advice(args, failures, engines, len(names))}; full log: {layout.log}")


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
    engines = find_engines(args.colmap_executable or None, args.engine)
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
    else:
        names = check_input(layout)
        fresh_workdir(layout)
    using = engines[0].label + (f", then {engines[1].label} if it fails" if len(engines) > 1 and
                                not args.skip_matching else "")
    log_note(layout.log, f"convert.py -s {layout.scene}: {len(names)} images, using {using}")
    print(f"convert: {len(names)} images in {layout.input}, using {using}; log: {layout.log}")
    if args.skip_matching:
        steps = Steps(engines[0], layout, args, total=1)
        made = f"the model of the earlier run ({len(names)} images), undistorted by {engines[0].label}"
    else:
        steps, model, registered = reconstruct(engines, layout, args, names)
        made = f"{steps.backend.label} registered {len(registered)}/{len(names)} images"
        if steps.backend is not engines[0]:
            made += f" ({engines[0].label} failed)"
    undistort(steps, model)
    if args.resize:
        write_pyramid(layout.scene)
    print(f"done: {made}; {layout.scene} is ready for train.py -s {layout.scene}")


if __name__ == "__main__":
    run_cli(main)
