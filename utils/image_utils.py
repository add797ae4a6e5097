"""Image reading/writing and image-space metrics helpers."""
from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

import cv2
import numpy as np
import torch

from utils.errors import UserError
from utils.io_utils import atomic_path, read_file_bytes, shown_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # compared lower-case
JPEG_SOS, JPEG_EOI = b"\xff\xda", b"\xff\xd9"  # start-of-scan / end-of-image markers
PNG_SIGNATURE, PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"  # file start / last chunk (type + CRC)
DECODER_DAMAGE = ("corrupt jpeg data", "premature end")  # libjpeg warnings after which the picture is damaged
MAX_DECODER_NOTE = 120  # characters of a decoder's own message quoted in ours
_STDERR_LOCK = threading.Lock()


def truncation_problem(data: bytes) -> str | None:
    """Why a JPEG/PNG file's bytes are cut short (no end marker), or None (also for other formats)."""
    if data[:2] == b"\xff\xd8":
        sos = data.rfind(JPEG_SOS)
        if sos < 0 or data.find(JPEG_EOI, sos) < 0:
            return "truncated JPEG (no end-of-image marker after the image data)"
    elif data[:8] == PNG_SIGNATURE and data.rfind(PNG_IEND) < 0:
        return "truncated PNG (no IEND chunk)"
    return None


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where libjpeg/libpng/OpenCV print) into a list of lines for the block."""
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as tmp:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(ln.strip() for ln in tmp.read().decode("utf-8", "replace").splitlines() if ln.strip())


def decode_image(data: bytes, path: str | os.PathLike) -> np.ndarray:
    """Decode an image file's bytes as stored (BGR(A) order, any bit depth), or a UserError naming ``path``.

    Truncated JPEG/PNG files and decoder warnings about corrupt data are errors; the decoders' own
    messages never reach the terminal.
    """
    problem = truncation_problem(data)
    if problem is None:
        with _captured_stderr() as noise:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        damaged = [ln for ln in noise if any(k in ln.lower() for k in DECODER_DAMAGE)]
        if img is None or img.size == 0:
            problem = f"cannot decode image ({(noise or ['corrupt or unsupported format'])[-1][:MAX_DECODER_NOTE]})"
        elif damaged:
            problem = f"corrupt image data ({damaged[0][:MAX_DECODER_NOTE]})"
    if problem:
        raise UserError(f"{shown_path(path)}: {problem}; re-export or replace the file")
    return img


def read_image(path: str | os.PathLike, unchanged: bool = False) -> np.ndarray:
    """Read an image file as a numpy array (RGB/RGBA order, uint8 or uint16).

    ``unchanged`` keeps the stored bit depth and channel count (for depth/mask PNGs).
    The file is read in Python and decoded from memory (a path is never handed to OpenCV, which
    crashes on non-UTF-8 names). A missing, unreadable, truncated or undecodable file is a
    :class:`UserError` naming the path.
    """
    img = decode_image(read_file_bytes(path), path)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    if not unchanged and img.dtype != np.uint8:
        img = (img.astype(np.float64) / np.iinfo(img.dtype).max * 255).round().astype(np.uint8)
    return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels.

    Reads the whole file, so that a missing, unreadable or truncated file is a UserError naming it
    already here (readers call this for every file while reading the scene).
    """
    from PIL import Image, UnidentifiedImageError

    data = read_file_bytes(path)
    problem = truncation_problem(data)
    if problem is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            problem = "cannot read the image header (corrupt, unsupported or too large a file)"
    raise UserError(f"{shown_path(path)}: {problem}; re-export or replace the file")


def resize_image(img: np.ndarray, width: int, height: int, nearest: bool = False) -> np.ndarray:
    """Resize to (width, height); area filtering when shrinking, nearest for masks."""
    if img.shape[1] == width and img.shape[0] == height:
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR)
    return cv2.resize(img, (width, height), interpolation=interp)


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """[C,H,W] float tensor in [0,1] (or [H,W,C] array) -> [H,W,C] uint8."""
    if isinstance(image, torch.Tensor):
        arr = image.detach().float().clamp(0, 1).cpu().numpy()
        if arr.ndim == 3:
            arr = arr.transpose(1, 2, 0)
    else:
        arr = np.clip(image, 0, 1)
    return (arr * 255.0 + 0.5).astype(np.uint8)


def save_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> None:
    """Save an RGB image ([C,H,W] float tensor in [0,1], or uint8 [H,W,C]) as PNG, atomically."""
    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    write_stored_image(path, arr)


def write_stored_image(path: str | os.PathLike, arr: np.ndarray) -> None:
    """Write an array in OpenCV's stored order ([H,W] or [H,W,3|4] BGR(A), uint8/uint16), format from the
    extension, atomically. Encoded in memory and written in Python: any path works, non-UTF-8 included."""
    try:
        ok, encoded = cv2.imencode(os.path.splitext(os.fsdecode(path))[1] or ".png", arr)
    except cv2.error:
        ok = False
    if not ok:
        raise UserError(f"{shown_path(path)}: could not encode the image (unsupported extension?)")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(encoded.tobytes())


def colorize_depth(depth: torch.Tensor, mask: torch.Tensor | None = None) -> np.ndarray:
    """[1,H,W] depth -> [H,W,3] uint8 turbo colour map (near = warm), robust to outliers."""
    d = depth.detach().float().cpu().numpy()[0]
    valid = d > 0 if mask is None else (mask.detach().cpu().numpy()[0] > 0.5) & (d > 0)
    if valid.any():
        lo, hi = np.percentile(d[valid], [1, 99])
    else:
        lo, hi = 0.0, 1.0
    norm = np.clip((d - lo) / max(hi - lo, 1e-8), 0, 1)
    norm = ((1.0 - norm) * 255).astype(np.uint8)
    color = cv2.applyColorMap(norm, cv2.COLORMAP_TURBO)
    color[~valid] = 0
    return cv2.cvtColor(color, cv2.COLOR_BGR2RGB)


def psnr(img: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB of images in [0,1]; ``mask`` [1,H,W] (1 = counted) restricts the pixels."""
    diff2 = (img - gt).square_()  # squared and masked in place on the fresh difference (same values, no new tensors)
    if mask is None:
        mse = diff2.mean()
    else:
        m = mask.expand_as(diff2)
        mse = diff2.mul_(m).sum() / m.sum().clamp_min(1.0)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))
