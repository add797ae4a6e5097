#!/usr/bin/env python
"""Train a Gaussian Splatting model (classic 3DGS schedule; optional depth, DINO and deformation terms).

    python train.py -s SCENE -m OUT [--eval] [-r 2] [--iterations 30000] [--config FILE.py]

Flags: the parameter groups in arguments/ (loading, optimisation, pipeline) plus ``TrainParams``
below; ``-h`` lists them all with their ranges and defaults.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from arguments import (SAVED_PIPELINE_KEYS, ModelParams, OptimizationParams, PipelineParams, check_model_and_optimization,
                       parse, write_cfg_args)
from arguments.config import Params, param
from gaussian_renderer import render
from scene import Scene, background_color
from scene.dataset_readers import read_scene
from scene.exposure import exposure_setup
from scene.gaussian_model import GaussianModel
from scene.model_folder import ModelFolder
from utils.divergence import check_loss, check_parameters
from utils.errors import UserError, run_cli
from utils.general_utils import seed_everything
from utils.image_utils import psnr
from utils.io_utils import ensure_writable_dir
from utils.system_utils import pick_device
from utils.train_losses import TrainingLosses
from utils.train_utils import CameraSampler, check_checkpoint_matches, evaluate, load_checkpoint, save_checkpoint
from viewer.params import TrainingViewerParams
from viewer.training import TrainingViewer

LOG_EVERY = 10  # progress-bar refresh interval (iterations); the training PSNR is measured on these iterations
DESCRIPTION = "Train a Gaussian Splatting model"


@dataclass(frozen=True)
class TrainParams(Params):
    """What this run saves, tests and resumes from."""

    GROUP = "Training run"
    test_iterations: list[int] = param([7_000, 30_000], "evaluate the test views at these iterations (-1: never)", ge=1, allowed=(-1,))
    save_iterations: list[int] = param([7_000, 30_000], "save point_cloud/iteration_N at these iterations (and always the last)", ge=1, allowed=(-1,))
    checkpoint_iterations: list[int] = param([], "write chkpntN.pth at these iterations", ge=1)
    start_checkpoint: str = param("", "resume from this chkpntN.pth (bit-identical to an uninterrupted run)")
    overwrite: bool = param(False, "replace the outputs of an earlier run found in -m (otherwise that is refused)")
    quiet: bool = param(False, "no progress bars or messages")
    debug_from: int = param(-1, "turn on --debug's checks after iteration N (0 = from the start, -1 = never)", ge=0, allowed=(-1,))
    detect_anomaly: bool = param(False, "run the whole training in autograd's anomaly mode (slow; names the op behind a NaN gradient)")


GROUPS = (ModelParams, OptimizationParams, PipelineParams, TrainParams, TrainingViewerParams)


def deform_basis_for(model: ModelParams, kind: str) -> int:
    """Number of deformation bumps: --deform auto turns deformation on for EndoNeRF scenes only."""
    on = model.deform == "basis" or (model.deform == "auto" and kind == "endonerf")
    return model.deform_basis if on else 0


def prepare_model_folder(model: ModelParams, run: TrainParams) -> None:
    """Refuse to mix two runs in one folder: another run's outputs need --overwrite or --start_checkpoint."""
    folder = ModelFolder(model.model_path)
    ensure_writable_dir(folder.root, "-m/--model_path")
    earlier = folder.run_outputs()
    if not earlier or run.start_checkpoint:
        return
    if not run.overwrite:
        its = folder.saved_iterations()
        what = f"iterations {', '.join(map(str, its))}" if its else ", ".join(p.name for p in earlier[:4])
        raise UserError(f"{folder.root}: holds an earlier run ({what}); pass --overwrite to replace it, "
                        "--start_checkpoint to resume it, or choose another -m")
    folder.remove_run_outputs()


def training(dataset: ModelParams, opt: OptimizationParams, pipe: PipelineParams, run: TrainParams,
             view: TrainingViewerParams = TrainingViewerParams.defaults()) -> dict:
    """Run training; returns the last test metrics (for tests and scripts)."""
    device = pick_device(dataset.device)
    data_device = device if dataset.data_device == "auto" else pick_device(dataset.data_device)
    seed_everything(dataset.seed)
    checkpoint = load_checkpoint(run.start_checkpoint) if run.start_checkpoint else None
    info = read_scene(dataset.source_path, dataset)
    gaussians = GaussianModel(dataset.sh_degree, dataset.feature_dim, deform_basis_for(dataset, info.kind), device)
    if checkpoint is not None:
        shape = {"sh_degree": gaussians.max_sh_degree, "feature_dim": gaussians.feature_dim, "deform_basis": gaussians.deform_basis}
        check_checkpoint_matches(run.start_checkpoint, checkpoint, opt.iterations, shape)
    write_cfg_args(dataset.model_path, dataset, (pipe, SAVED_PIPELINE_KEYS))  # once the run is known to be consistent
    scene = Scene(dataset, gaussians, device=data_device, info=info, quiet=run.quiet)
    train_cams, test_cams, exposures = exposure_setup(dataset.train_test_exp, scene.getTrainCameras(), scene.getTestCameras(),
                                                      opt, device)
    if not train_cams:
        raise UserError(f"{dataset.source_path}: no training images")
    gaussians.training_setup(opt)
    losses = TrainingLosses(dataset, opt, scene, device)
    sampler = CameraSampler(len(train_cams), dataset.seed)
    first_iter = 1
    if checkpoint is not None:
        if exposures is not None and "exposure" not in checkpoint["extra"]:
            raise UserError(f"{run.start_checkpoint}: was written without --train_test_exp; resume without it")
        try:
            gaussians.restore(checkpoint["model"], opt)
            sampler.load_state(checkpoint["sampler"])
            torch.set_rng_state(checkpoint["torch_rng"])
            losses.load_state(checkpoint["extra"])
            if exposures is not None:
                exposures.load_state(checkpoint["extra"]["exposure"])
        except ValueError as exc:  # e.g. optimizer moments of another shape (scene/adam.py names them)
            raise UserError(f"{run.start_checkpoint}: {exc}; this checkpoint cannot be resumed "
                            "(resume from another chkpntN.pth or train anew)") from None
        first_iter = int(checkpoint["iteration"]) + 1

    folder = scene.folder
    save_iterations = set(run.save_iterations) | {opt.iterations}
    bg = torch.tensor(background_color(dataset.white_background), device=device)

    def render_fn(cam, background=bg):
        pkg = render(cam.to(device), gaussians, pipe, background, invdepth=losses.invdepth)
        return pkg if exposures is None else {**pkg, "render": exposures(pkg["render"], cam.image_name)}

    viewer = TrainingViewer.for_training(view, gaussians, pipe, bg, scene)
    progress = tqdm(range(first_iter, opt.iterations + 1), desc="Training", disable=run.quiet, initial=first_iter - 1, total=opt.iterations)
    ema_loss = ema_psnr = None
    shows_psnr = not run.quiet or view.enabled  # the bar and the viewer show it; --quiet without a viewer skips it
    last_metrics: dict = {}
    for iteration in progress:
        gaussians.update_learning_rate(iteration)
        if iteration % opt.sh_increase_interval == 0:
            gaussians.oneup_sh_degree()
        cam = train_cams[sampler.next()].to(device)
        background = torch.rand(3, device=device) if opt.random_background else bg
        if iteration - 1 == run.debug_from:  # graphdeco's --debug_from: checks on from the next iteration
            pipe = pipe.replace(debug=True)
        # --debug: autograd names the forward op behind a NaN gradient; render() checks its tensors
        with torch.autograd.detect_anomaly(check_nan=True) if pipe.debug or run.detect_anomaly else contextlib.nullcontext():
            pkg = render_fn(cam, background)
            loss, terms = losses(iteration, cam, pkg, gaussians)
            loss_value = check_loss(iteration, loss, terms, cam.image_name, opt)
            loss.backward()

        with torch.no_grad():
            ema_loss = loss_value if ema_loss is None else 0.4 * loss_value + 0.6 * ema_loss
            logged = iteration % LOG_EVERY == 0 or iteration == opt.iterations
            if logged and shows_psnr:  # the training PSNR is measured on the logged iterations' views only
                cur_psnr = float(psnr(pkg["render"].clamp(0, 1), cam.original_image, cam.mask))
                ema_psnr = cur_psnr if ema_psnr is None else 0.4 * cur_psnr + 0.6 * ema_psnr
            if logged and not run.quiet:
                progress.set_postfix(loss=f"{ema_loss:.4f}", psnr=f"{ema_psnr:.2f}", n=gaussians.num_points)
            if iteration in run.test_iterations:
                last_metrics = {"iteration": iteration, "test": evaluate(test_cams, render_fn),
                                "train": evaluate(train_cams[:: max(1, len(train_cams) // 5)][:5], render_fn),
                                "num_gaussians": gaussians.num_points}
                if not run.quiet:
                    tqdm.write(f"[ITER {iteration}] test {last_metrics['test']}  train {last_metrics['train']}  "
                               f"Gaussians {gaussians.num_points}")
            if iteration in save_iterations:
                check_parameters(iteration, gaussians, opt)
                scene.save(iteration)
                losses.save(folder.root, iteration)
                if exposures is not None:
                    exposures.save(folder.exposure_json)
                if not run.quiet:
                    tqdm.write(f"[ITER {iteration}] saved {scene.ply_path(iteration)}")

            if iteration < opt.densify_until_iter:
                vis = pkg["visibility_filter"]
                gaussians.update_max_radii(pkg["radii"], vis)
                gaussians.add_densification_stats(pkg["viewspace_points"], vis, cam.image_width, cam.image_height)
                if iteration > opt.densify_from_iter and iteration % opt.densification_interval == 0:
                    size_threshold = opt.max_screen_size if iteration > opt.opacity_reset_interval else None
                    gaussians.densify_and_prune(opt, scene.cameras_extent, size_threshold)
                if iteration % opt.opacity_reset_interval == 0 or (dataset.white_background and iteration == opt.densify_from_iter):
                    gaussians.reset_opacity()

            gaussians.optimizer_step(pkg["visibility_filter"])
            if exposures is not None:
                exposures.step(iteration)
            losses.step()
            if iteration in run.checkpoint_iterations:
                check_parameters(iteration, gaussians, opt)
                extra = losses.state() if exposures is None else {**losses.state(), "exposure": exposures.state()}
                save_checkpoint(folder.checkpoint(iteration), gaussians, iteration, sampler, extra)
        viewer.update(gaussians, iteration, {"loss": ema_loss} if ema_psnr is None else {"loss": ema_loss, "psnr": ema_psnr})
        viewer.wait_while_paused()
    progress.close()
    viewer.close()
    return last_metrics


def parse_args(argv: list[str]) -> tuple[ModelParams, OptimizationParams, PipelineParams, TrainParams, TrainingViewerParams]:
    """Flags, ``--config`` and defaults merged and validated; ``-m`` defaults to output/<scene name>."""
    model, opt, pipe, run, view = parse(GROUPS, argv, DESCRIPTION, config_file=True)
    if not model.source_path:
        raise UserError("-s/--source_path is required (a COLMAP, Blender or EndoNeRF scene folder)")
    check_model_and_optimization(model, opt)
    changes = {"source_path": str(Path(model.source_path).absolute())}
    if not model.model_path:
        changes["model_path"] = str(Path("output") / Path(model.source_path).name)
    return model.replace(**changes), opt, pipe, run, view


def main(argv: list[str] | None = None) -> dict:
    model, opt, pipe, run, view = parse_args(sys.argv[1:] if argv is None else argv)
    prepare_model_folder(model, run)
    if not run.quiet:
        print(f"Output folder: {model.model_path}")
    try:
        metrics = training(model, opt, pipe, run, view)
    except FloatingPointError as exc:  # raised by --debug's checks, after autograd's detail
        raise UserError(f"--debug{'/--debug_from' if run.debug_from >= 0 else ''}: {exc}") from None
    if not run.quiet:
        print("Training complete.")
    return metrics


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
