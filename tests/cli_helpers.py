"""Run the real command-line scripts in a subprocess and check how they fail.

Every bad-input test feeds its input to the script a user would run (``train.py``,
``render.py``, ...) and asserts the project's contract for bad input: exit code 2, one
``error:`` line on stderr that names the culprit, and no traceback.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

USER_ERROR_EXIT = 2
SCRIPT_TIMEOUT_S = 300


def run_script(script: str, *args: str | os.PathLike, cwd: str | os.PathLike = ROOT,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python ROOT/script args...``; returns the completed process (text stdout/stderr)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [sys.executable, str(Path(ROOT) / script), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert exit 2, exactly one ``error:`` line, no traceback, and every needle in that line; return it."""
    err = proc.stderr
    assert proc.returncode == USER_ERROR_EXIT, f"exit {proc.returncode}, expected 2\nstderr:\n{err}\nstdout:\n{proc.stdout}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, f"expected one 'error:' line, got {len(lines)}:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]
