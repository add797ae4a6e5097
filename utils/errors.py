"""User-facing errors: one clear line, no traceback.

Code that detects bad input raises :class:`UserError` with a message that names
the offending file and says how to fix it. Command-line entry points wrap their
``main`` with :func:`run_cli`, which prints ``error: <message>`` and exits 2.
"""
from __future__ import annotations

import sys
from typing import Callable


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed, at most ``limit`` characters)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


class UserError(Exception):
    """Bad input or configuration that the user can fix (shown as one line)."""


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """A command-line ``WIDTHxHEIGHT`` value as (width, height) in pixels, or a one-line error."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected WIDTHxHEIGHT, e.g. 80x64") from None
    if w <= 0 or h <= 0:
        raise UserError(f"{flag} {text!r}: width and height must be positive")
    return w, h


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main()``; turn a :class:`UserError` into a one-line message and exit code 2."""
    try:
        main()
    except UserError as exc:
        msg = " ".join(str(exc).split("\n"))
        from tqdm import tqdm

        tqdm.write(f"error: {msg}", file=sys.stderr)  # on a line of its own, even under a progress bar
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
