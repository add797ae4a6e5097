"""Atomic file output and safe data-file input.

Every file the toolkit writes goes through :func:`atomic_path`: data is written
to a temporary file in the same folder and renamed over the target only once it
is complete, so a crash never leaves a half-written PLY, PNG or feature file.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from utils.errors import UserError


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _os_error(path: Path, exc: OSError) -> UserError:
    """A one-line UserError for a failed write to ``path``."""
    if isinstance(exc, PermissionError):
        why = "permission denied; choose a folder you can write to"
    elif isinstance(exc, (NotADirectoryError, FileExistsError)):
        why = "a path component is an existing file, not a folder; choose another output path"
    elif isinstance(exc, IsADirectoryError):
        why = "is an existing folder; choose a file path"
    else:
        why = f"{exc.strerror or exc} (read-only or full file system?)"
    return UserError(f"{path}: cannot write: {why}")


def ensure_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Create folder ``path`` if needed and check a file can be written there; a UserError naming ``what`` if not."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: is an existing file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write_test.")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise UserError(f"{what} {_os_error(path, exc)}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    ``suffix`` defaults to the target's own extension so that libraries choosing
    the format by extension (cv2.imwrite, np.save) keep working. The file gets the
    permissions a plain ``open()`` would give it (0666 minus the umask), not mkstemp's 0600.
    A failure to create the folder or the file is a one-line UserError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix)
    except OSError as exc:
        raise _os_error(path, exc) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise _os_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def clear_folder(path: str | os.PathLike) -> Path:
    """Empty (or create) output folder ``path``, so files of an earlier run cannot mix with the new ones."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        raise UserError(f"{path}: expected an output folder, found a file or link; move it away")
    try:
        if path.is_dir():
            shutil.rmtree(path)
        path.mkdir(parents=True)
    except OSError as exc:
        raise _os_error(path, exc) from None
    return path


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (never pickled)."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """Load a ``.npy`` file as data (no pickles); a bad file is a :class:`UserError`."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc}); delete it and regenerate it") from None


def shown_path(path: str | os.PathLike) -> str:
    """A path for messages: non-UTF-8 bytes shown as \\xNN escapes, so printing it can never fail."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file_bytes(path: str | os.PathLike, what: str = "image") -> bytes:
    """The bytes of ``path`` read in Python (any path, non-UTF-8 included); unreadable -> UserError naming it."""
    shown = shown_path(path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise UserError(f"{shown}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{shown}: is a folder where the {what} file should be; remove or rename it") from None
    except PermissionError:
        raise UserError(f"{shown}: permission denied reading the {what} file; fix its permissions "
                        "(chmod u+r)") from None
    except OSError as exc:
        raise UserError(f"{shown}: cannot read the {what} file ({exc.strerror or exc})") from None


def read_text(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> str:
    """A UTF-8 text file's content; unreadable, oversized or non-UTF-8 -> UserError naming it."""
    if max_bytes is not None and os.path.isfile(path) and os.path.getsize(path) > max_bytes:
        raise UserError(f"{shown_path(path)}: {what} is larger than {max_bytes} bytes; not a file this toolkit reads")
    try:
        return read_file_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{shown_path(path)}: {what} is not UTF-8 text") from None


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a malformed file is a :class:`UserError` naming it."""
    text = read_text(path, "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{shown_path(path)}: invalid JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{shown_path(path)}: JSON nested too deeply; not a file this toolkit writes") from None


def is_json_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    """``isinstance(value, kind)``, except that JSON's true/false never count as numbers."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kind) and not (isinstance(value, bool) and bool not in kinds)


def read_json_object(path: str | os.PathLike, required: dict[str, type | tuple[type, ...]]) -> dict:
    """A JSON file that must hold an object with the ``required`` keys of the given types (one-line errors)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, kind in required.items():
        if key not in data:
            raise UserError(f"{path}: missing key '{key}'")
        if not is_json_type(data[key], kind):
            raise UserError(f"{path}: key '{key}' has the wrong type ({type(data[key]).__name__})")
    return data
