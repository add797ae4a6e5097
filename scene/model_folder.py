"""The model folder layout (graphdeco's), named once.

::

    MODEL/cfg_args                                   loading parameters (arguments.files)
    MODEL/cameras.json, MODEL/input.ply              written when training starts
    MODEL/point_cloud/iteration_N/point_cloud.ply    saved Gaussians (+ feature_decoder.pt)
    MODEL/exposure.json                              per-image exposures (--train_test_exp), rewritten with each save
    MODEL/chkpntN.pth                                checkpoints (--checkpoint_iterations)
    MODEL/{train,test}/ours_N/{renders,gt,depth,masks,features}/, mask_source.json,
                                                     render_timing.json   render.py
    MODEL/video/ours_N/                              render.py --video
    MODEL/results.json, MODEL/per_view.json          metrics.py (graphdeco's schema: numbers only)
    MODEL/results_info.json                          metrics.py: mask, protocol, view count, LPIPS net
    MODEL/results_train.json, per_view_train.json, results_info_train.json    metrics.py --split train
    MODEL/clusters/                                  cluster.py
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

CFG_ARGS = "cfg_args"
MASK_SOURCE_FILE = "mask_source.json"  # in ours_N/: which mask the masks/ folder holds (render.py -> metrics.py)
RENDER_TIMING_FILE = "render_timing.json"  # in ours_N/: views and seconds spent in render() (render.py -> full_eval.py)
_ITERATION_DIR = re.compile(r"^iteration_(\d+)$")
_CHECKPOINT = re.compile(r"^chkpnt(\d+)\.pth$")
SPLITS = ("train", "test")
RESULTS_INFO_STEM = "results_info"  # beside results.json: what graphdeco's numbers-only schema cannot hold


@dataclass(frozen=True)
class ModelFolder:
    """Paths inside one model folder."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    @property
    def cfg_args(self) -> Path:
        return self.root / CFG_ARGS

    @property
    def cameras_json(self) -> Path:
        return self.root / "cameras.json"

    @property
    def input_ply(self) -> Path:
        return self.root / "input.ply"

    @property
    def exposure_json(self) -> Path:
        return self.root / "exposure.json"

    @property
    def point_cloud_dir(self) -> Path:
        return self.root / "point_cloud"

    def iteration_dir(self, iteration: int) -> Path:
        return self.point_cloud_dir / f"iteration_{iteration}"

    def ply(self, iteration: int) -> Path:
        return self.iteration_dir(iteration) / "point_cloud.ply"

    def checkpoint(self, iteration: int) -> Path:
        return self.root / f"chkpnt{iteration}.pth"

    def renders_dir(self, split: str, iteration: int) -> Path:
        return self.root / split / f"ours_{iteration}"

    def video_dir(self, iteration: int) -> Path:
        return self.root / "video" / f"ours_{iteration}"

    def _metrics_file(self, stem: str, split: str) -> Path:
        """``stem.json`` for the test split (graphdeco's names), ``stem_<split>.json`` for another."""
        return self.root / (f"{stem}.json" if split == "test" else f"{stem}_{split}.json")

    def results_json(self, split: str = "test") -> Path:
        """method -> {SSIM, PSNR, LPIPS} numbers (graphdeco's schema)."""
        return self._metrics_file("results", split)

    def per_view_json(self, split: str = "test") -> Path:
        """method -> metric -> view name -> value (graphdeco's schema)."""
        return self._metrics_file("per_view", split)

    def results_info_json(self, split: str = "test") -> Path:
        """method -> how the results were scored (mask, protocol, view count, LPIPS net)."""
        return self._metrics_file(RESULTS_INFO_STEM, split)

    @property
    def clusters_dir(self) -> Path:
        return self.root / "clusters"

    def saved_iterations(self) -> list[int]:
        """Sorted iterations with a saved point cloud."""
        if not self.point_cloud_dir.is_dir():
            return []
        found = (_ITERATION_DIR.match(d.name) for d in self.point_cloud_dir.iterdir())
        return sorted(int(m.group(1)) for m in found if m and self.ply(int(m.group(1))).is_file())

    def checkpoint_iterations(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _CHECKPOINT.match(p.name)))

    def resolve_iteration(self, iteration: int) -> int:
        """``iteration`` if saved (-1 = latest); otherwise a UserError listing what exists."""
        its = self.saved_iterations()
        if not its:
            raise UserError(f"{self.point_cloud_dir}: no saved point clouds; train the model first (train.py -m {self.root})")
        if iteration == -1:
            return its[-1]
        if iteration not in its:
            raise UserError(f"--iteration {iteration}: not saved in {self.root}; available: {', '.join(map(str, its))}")
        return iteration

    def run_outputs(self) -> list[Path]:
        """What a training run (and the scripts after it) wrote here: removed by ``train.py --overwrite``."""
        fixed = [self.cfg_args, self.cameras_json, self.input_ply, self.exposure_json, self.point_cloud_dir, self.root / "video",
                 *(f(s) for s in SPLITS for f in (self.results_json, self.per_view_json, self.results_info_json)),
                 self.clusters_dir, *(self.root / s for s in SPLITS)]
        checkpoints = [self.checkpoint(i) for i in self.checkpoint_iterations()]
        return [p for p in fixed + checkpoints if p.exists() or p.is_symlink()]

    def remove_run_outputs(self) -> None:
        for p in self.run_outputs():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
