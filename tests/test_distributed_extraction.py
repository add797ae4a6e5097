"""extract_dino_features.py under torchrun: sharded over 2 CPU ranks (gloo), same files as one process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch.distributed as dist

from tests.cli_helpers import SCRIPT_TIMEOUT_S
from tests.conftest import ROOT
from utils.feature_store import META_NAME
from utils.io_utils import read_json

SIZES = [(48, 64)] * 5 + [(64, 48)] * 2  # 7 images: batches of 2 split by size, an odd count per rank
EXTRACT_ARGS = ["--model", "dino_vits16", "--resolution", "64", "--layers", "3", "11", "--random_init",
                "--device", "cpu", "--batch_size", "2", "--pca_dim", "8", "--preview"]


def write_scene(root: Path) -> tuple[Path, Path]:
    """Random images plus tool masks (a bar of excluded pixels) -> (image dir, mask dir)."""
    rng = np.random.default_rng(0)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i, (h, w) in enumerate(SIZES):
        cv2.imwrite(str(images / f"{i}_color.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        mask = np.zeros((h, w), np.uint8)
        mask[:, : w // 4 + i] = 255
        cv2.imwrite(str(masks / f"{i}_color.png"), mask)
    return images, masks


def extract(prefix: list[str], images: Path, masks: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [*prefix, str(ROOT / "extract_dino_features.py"), "--image_dir", str(images), "--output_dir", str(out),
           "--mask_dir", str(masks), *EXTRACT_ARGS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_torchrun_two_ranks_match_one_process(tmp_path):
    images, masks = write_scene(tmp_path / "scene")
    single, sharded = tmp_path / "single", tmp_path / "torchrun"
    extract([sys.executable], images, masks, single)
    extract([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
            images, masks, sharded)

    names = sorted(p.name for p in single.glob("*.npy"))
    assert len(names) == len(SIZES)
    assert sorted(p.name for p in sharded.glob("*.npy")) == names
    for name in names:
        a, b = np.load(single / name), np.load(sharded / name)
        assert a.dtype == b.dtype == np.float32
        assert a.shape == b.shape and np.array_equal(a, b), name
    assert (single / META_NAME).read_text() == (sharded / META_NAME).read_text()
    meta = read_json(sharded / META_NAME)
    assert meta["complete"] and len(meta["images"]) == len(SIZES) and len(meta["pca"]["components"]) == 8
    for png in sorted((single / "preview").glob("*.png")):
        assert np.array_equal(cv2.imread(str(png)), cv2.imread(str(sharded / "preview" / png.name))), png.name
