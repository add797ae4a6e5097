"""COLMAP plumbing for convert.py: engine choice, logged step execution, database statistics,
model selection, image pyramids and similarity alignment.

Both engines (backends) run every step as a child process whose output is appended to the
convert log: the ``colmap`` binary directly, or pycolmap through this module's
``__main__`` (``python -m utils.colmap_utils STEP_JSON``). A crash inside COLMAP
(its C++ checks abort the process) then becomes a clear error instead of taking
convert.py down, and both engines leave the same files behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MIN_VERIFIED_INLIERS = 15  # COLMAP's default two-view min_num_inliers
MAPPER_FUNCTION_TOLERANCE = 1e-6  # graphdeco's tighter global bundle-adjustment tolerance
PROGRESS_EVERY_S = 2.0  # console progress refresh while a step runs
ERROR_LINE = re.compile(r"^[EF]\d{8}|Check failed|^\w*(Error|Exception)\b|^ERROR")  # glog E/F, Python, COLMAP 3.x
PROGRESS = re.compile(r"\[(\d+)/(\d+)[,\]]|num_reg_frames=(\d+)|Registering image #\d+ \((\d+)\)")
ENGINES = ("auto", "colmap", "pycolmap")  # --engine: which COLMAP runs first ("auto": the program, else pycolmap)
INSTALL_HINT = {"colmap": "apt-get install colmap", "pycolmap": "pip install pycolmap"}


class EngineFailure(UserError):
    """COLMAP itself failed at a step: it crashed, wrote no model or registered too few images.
    The other engine may succeed; ``reason`` is the message without the log's path."""

    def __init__(self, reason: str, log: Path | None = None):
        self.reason = reason
        super().__init__(f"{reason}; full log: {log}" if log else reason)


@dataclass
class Backend:
    """How COLMAP runs: ``kind`` 'colmap' (binary at ``executable``) or 'pycolmap'."""

    kind: str
    executable: str | None = None
    _help: dict = field(default_factory=dict, repr=False)

    def help_text(self, command: str = "") -> str:
        """Output of ``colmap [command] -h`` (cached); '' if it cannot run."""
        if command not in self._help:
            argv = [self.executable] + ([command] if command else []) + ["-h"]
            try:
                res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
                self._help[command] = res.stdout + res.stderr
            except (OSError, subprocess.TimeoutExpired):
                self._help[command] = ""
        return self._help[command]

    def supports(self, command: str, option: str) -> bool:
        return f"--{option}" in self.help_text(command)

    def has_cuda(self) -> bool:
        return "without CUDA" not in self.help_text()

    @property
    def label(self) -> str:
        """'colmap 3.8 (/usr/bin/colmap)' or 'pycolmap 4.2.1': what the console lines name."""
        if self.kind == "pycolmap":
            import pycolmap

            return f"pycolmap {getattr(pycolmap, '__version__', '(version unknown)')}"
        version = re.search(r"COLMAP (\S+)", self.help_text())
        return f"colmap {version.group(1) if version else '(version unknown)'} ({self.executable})"


def _colmap_program(colmap_executable: str | None) -> Backend | None:
    """The colmap binary named by ``--colmap_executable`` (which must exist) or found on PATH, else None."""
    if colmap_executable:
        exe = shutil.which(colmap_executable)
        if exe is None:
            raise UserError(f"--colmap_executable {colmap_executable}: not found or not executable")
        return Backend("colmap", exe)
    exe = shutil.which("colmap")
    return Backend("colmap", exe) if exe else None


def _pycolmap() -> Backend | None:
    try:
        import pycolmap  # noqa: F401
    except ImportError:
        return None
    return Backend("pycolmap")


def find_engines(colmap_executable: str | None = None, first: str = "auto") -> list[Backend]:
    """The installed COLMAP engines in the order convert.py tries them: ``first`` ('auto': the colmap program,
    then pycolmap), then the other one, which takes over when the first fails. None installed -> UserError."""
    program, python = _colmap_program(colmap_executable), _pycolmap()
    if first == "colmap" and program is None:
        raise UserError("--engine colmap: the colmap program is not on PATH; install it (apt-get install colmap) "
                        "or name it with --colmap_executable")
    if first == "pycolmap" and python is None:
        raise UserError("--engine pycolmap: the Python package pycolmap is not installed; pip install pycolmap")
    engines = [e for e in ((python, program) if first == "pycolmap" else (program, python)) if e is not None]
    if not engines:
        raise UserError(
            "neither the 'colmap' program (on PATH or --colmap_executable) nor the Python package pycolmap is "
            "available: install one (apt-get install colmap, or pip install pycolmap)"
        )
    return engines


# ---------------------------------------------------------------- step commands


def _gpu_option(backend: Backend, command: str, prefixes: tuple[str, ...]) -> list[str]:
    for prefix in prefixes:
        if backend.supports(command, f"{prefix}.use_gpu"):
            return [f"--{prefix}.use_gpu", "0"]
    return []


def step_command(backend: Backend, step: str, spec: dict) -> list[str]:
    """argv of one step. ``spec``: database, image_dir, camera, single_camera, no_gpu, matcher,
    output (sparse folder / undistortion output), model (input model for undistortion)."""
    if backend.kind == "pycolmap":
        return [sys.executable, "-u", "-m", "utils.colmap_utils", json.dumps({"step": step, **spec})]
    exe, no_gpu = backend.executable, spec.get("no_gpu") or not backend.has_cuda()
    if step == "extract":
        cmd = [exe, "feature_extractor", "--database_path", spec["database"], "--image_path", spec["image_dir"],
               "--ImageReader.camera_model", spec["camera"], "--ImageReader.single_camera",
               "1" if spec["single_camera"] else "0"]
        gpu = ("FeatureExtraction", "SiftExtraction")  # option prefix in COLMAP >= 3.12, before
        return cmd + (_gpu_option(backend, "feature_extractor", gpu) if no_gpu else [])
    if step == "match":
        command = f"{spec['matcher']}_matcher"
        cmd = [exe, command, "--database_path", spec["database"]]
        return cmd + (_gpu_option(backend, command, ("FeatureMatching", "SiftMatching")) if no_gpu else [])
    if step == "map":
        cmd = [exe, "mapper", "--database_path", spec["database"], "--image_path", spec["image_dir"],
               "--output_path", spec["output"]]
        if backend.supports("mapper", "Mapper.ba_global_function_tolerance"):
            cmd += [f"--Mapper.ba_global_function_tolerance={MAPPER_FUNCTION_TOLERANCE}"]
        return cmd
    if step == "undistort":
        return [exe, "image_undistorter", "--image_path", spec["image_dir"], "--input_path", spec["model"],
                "--output_path", spec["output"], "--output_type", "COLMAP"]
    raise ValueError(step)


def _pycolmap_step(spec: dict) -> None:
    """Run one step with pycolmap (child-process side)."""
    import pycolmap

    pycolmap.set_random_seed(0)
    device = pycolmap.Device.cpu if spec.get("no_gpu") else pycolmap.Device.auto
    step = spec["step"]
    if step == "extract":
        mode = pycolmap.CameraMode.SINGLE if spec["single_camera"] else pycolmap.CameraMode.AUTO
        reader = pycolmap.ImageReaderOptions(camera_model=spec["camera"])
        pycolmap.extract_features(spec["database"], spec["image_dir"], camera_mode=mode, reader_options=reader,
                                  device=device)
    elif step == "match":
        match = pycolmap.match_sequential if spec["matcher"] == "sequential" else pycolmap.match_exhaustive
        match(spec["database"], device=device)
    elif step == "map":
        Path(spec["output"]).mkdir(parents=True, exist_ok=True)
        options = pycolmap.IncrementalPipelineOptions(ba_global_function_tolerance=MAPPER_FUNCTION_TOLERANCE)
        pycolmap.incremental_mapping(spec["database"], spec["image_dir"], spec["output"], options=options)
    elif step == "undistort":
        pycolmap.undistort_images(spec["output"], spec["model"], spec["image_dir"])
    else:
        raise ValueError(step)


# ---------------------------------------------------------------- running with a log


def _progress(line: str) -> str | None:
    m = PROGRESS.search(line)
    if not m:
        return None
    if m.group(1):
        return f"{m.group(1)}/{m.group(2)}"
    return f"{m.group(3) or m.group(4)} images registered"


def run_logged(cmd: list[str], log_path: Path, label: str) -> None:
    """Run ``cmd``, appending its output to ``log_path`` and printing throttled progress.

    A non-zero exit (or a program that cannot start) is an :class:`EngineFailure`:
    '<label> failed: <last error line>; full log: <log>'.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    last_err, last_print = "", time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"\n$ {shlex.join(cmd)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", env=env, cwd=ROOT)
        except OSError as exc:
            raise EngineFailure(f"{label} failed: cannot start {cmd[0]} ({exc.strerror})") from None
        for line in proc.stdout:
            log.write(line)
            if ERROR_LINE.search(line):
                last_err = line.strip()
            prog = _progress(line)
            if prog and time.monotonic() - last_print > PROGRESS_EVERY_S:
                print(f"    {label}: {prog}", flush=True)
                last_print = time.monotonic()
        code = proc.wait()
    if code != 0:
        why = last_err.split("] ", 1)[-1] if last_err else f"exit code {code}"
        raise EngineFailure(f"{label} failed: {why}", log_path)


def log_mentions(log_path: Path, offset: int, text: str) -> bool:
    """Whether the log, from byte ``offset`` on (one step's output), contains ``text``."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        return any(text.encode() in line for line in log)


# ---------------------------------------------------------------- database and models


def _query(database: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` on a COLMAP database (a read-write handle, closed after: that also removes the
    -wal/-shm side files COLMAP's WAL mode leaves for read-only readers)."""
    if not database.is_file():
        raise EngineFailure(f"{database}: COLMAP database not found; the previous step did not write it")
    try:
        with contextlib.closing(sqlite3.connect(str(database))) as con:
            return con.execute(sql).fetchall()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{database}: unreadable COLMAP database ({exc}); delete SCENE/distorted and re-run") from None


def feature_counts(database: Path) -> dict[str, int]:
    """Image name -> number of SIFT keypoints in a COLMAP database."""
    rows = _query(database, "SELECT images.name, COALESCE(keypoints.rows, 0) FROM images "
                            "LEFT JOIN keypoints ON keypoints.image_id = images.image_id")
    return {name: int(n) for name, n in rows}


def verified_pairs(database: Path) -> tuple[int, int]:
    """(number of geometrically verified image pairs, largest inlier count of any pair)."""
    counts = [r[0] for r in _query(database, "SELECT rows FROM two_view_geometries")]
    good = [c for c in counts if c >= MIN_VERIFIED_INLIERS]
    return len(good), max(counts, default=0)


def model_image_names(model_dir: Path) -> list[str]:
    from scene.colmap_loader import read_colmap_model

    return sorted(img.name for img in read_colmap_model(model_dir).images.values())


def largest_model(sparse_dir: Path) -> tuple[Path, list[str]] | None:
    """The sub-model of ``sparse_dir`` (0, 1, ...) registering the most images, with their names."""
    from scene.colmap_loader import model_extension

    if not sparse_dir.is_dir():
        return None
    models = [d for d in sorted(sparse_dir.iterdir()) if d.is_dir() and model_extension(d)]
    if not models:
        return None
    named = [(d, model_image_names(d)) for d in models]
    return max(named, key=lambda dn: len(dn[1]))


# ---------------------------------------------------------------- files


def replace_dir(src: Path, dst: Path) -> None:
    """Move folder ``src`` onto ``dst``; an existing ``dst`` is swapped out first and deleted after."""
    old = dst.with_name(f".{dst.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)


def resize_images(src_dir: Path, dst_dir: Path, factor: int) -> int:
    """Write every image of ``src_dir`` at 1/``factor`` size (rounded) into ``dst_dir``; returns the count."""
    from scene.reader_utils import list_images
    from utils.image_utils import decode_image, resize_image, write_stored_image
    from utils.io_utils import read_file_bytes

    names = list_images(src_dir)
    for name in names:
        img = decode_image(read_file_bytes(src_dir / name), src_dir / name)  # stored order, never a path to cv2
        h, w = img.shape[:2]
        write_stored_image(dst_dir / name, resize_image(img, max(1, round(w / factor)), max(1, round(h / factor))))
    return len(names)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale s, rotation R [3, 3], translation t [3]) minimising |s R src + t - dst|^2,
    for corresponding points src, dst [N, 3] (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0
    rot = u @ sign @ vt
    var_s = (xs ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ sign) / var_s)
    return scale, rot, mu_d - scale * rot @ mu_s


if __name__ == "__main__":
    _pycolmap_step(json.loads(sys.argv[1]))
