"""Shared pytest fixtures: repo root on sys.path, fixed seeds, the shared sample data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# OpenMP threads that spin while waiting make an oversubscribed 2-core machine crawl; yield instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED_DATA = Path(os.environ.get("GS_SHARED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_scene(name: str) -> Path:
    """Path of a scene in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"sample data {path} is absent (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
