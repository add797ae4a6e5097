#!/usr/bin/env python
"""Train a Gaussian Splatting model (classic 3DGS schedule; optional depth, DINO and deformation terms).

    python train.py -s SCENE -m OUT [--eval] [-r 2] [--iterations 30000] [--config FILE.py]
"""
from __future__ import annotations

import contextlib
import sys
from argparse import ArgumentParser
from pathlib import Path

import torch
from tqdm import tqdm

from arguments import ModelParams, OptimizationParams, PipelineParams, add_config_flag, parse_with_config
from gaussian_renderer import render
from scene import Scene, background_color
from scene.gaussian_model import GaussianModel
from utils.errors import UserError, run_cli
from utils.general_utils import seed_everything
from utils.image_utils import psnr
from utils.system_utils import pick_device
from utils.train_losses import TrainingLosses
from utils.train_utils import CameraSampler, evaluate, load_checkpoint, save_checkpoint, write_cfg_args

LOG_EVERY = 10  # progress-bar refresh interval (iterations)


def build_parser() -> tuple[ArgumentParser, ModelParams, OptimizationParams, PipelineParams]:
    parser = ArgumentParser(description="Train a Gaussian Splatting model")
    lp, op, pp = ModelParams(parser), OptimizationParams(parser), PipelineParams(parser)
    parser.add_argument("--test_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--save_iterations", nargs="+", type=int, default=[7_000, 30_000])
    parser.add_argument("--checkpoint_iterations", nargs="+", type=int, default=[])
    parser.add_argument("--start_checkpoint", type=str, default=None)
    parser.add_argument("--quiet", action="store_true")
    add_config_flag(parser)
    return parser, lp, op, pp


def deform_basis_for(dataset, kind: str) -> int:
    """Number of deformation bumps: --deform auto turns deformation on for EndoNeRF scenes only."""
    mode = dataset.deform
    if mode not in ("auto", "basis", "none"):
        raise UserError(f"--deform {mode}: choose auto, basis or none")
    on = mode == "basis" or (mode == "auto" and kind == "endonerf")
    return dataset.deform_basis if on else 0


def make_model_and_scene(dataset, device) -> tuple[GaussianModel, Scene]:
    from scene.dataset_readers import detect_format

    kind = detect_format(dataset.source_path)
    gaussians = GaussianModel(dataset.sh_degree, dataset.feature_dim, deform_basis_for(dataset, kind), device)
    return gaussians, Scene(dataset, gaussians, device=device)


def training(dataset, opt, pipe, test_iterations, save_iterations, checkpoint_iterations, checkpoint, quiet=False) -> dict:
    """Run training; returns the last test metrics (for tests and scripts)."""
    device = pick_device(dataset.device)
    seed_everything(dataset.seed)
    gaussians, scene = make_model_and_scene(dataset, device)
    train_cams = scene.getTrainCameras()
    if not train_cams:
        raise UserError(f"{dataset.source_path}: no training images")
    gaussians.training_setup(opt)
    losses = TrainingLosses(dataset, opt, scene, device)
    sampler = CameraSampler(len(train_cams), dataset.seed)
    first_iter = 1
    if checkpoint:
        state = load_checkpoint(checkpoint)
        gaussians.restore(state["model"], opt)
        sampler.load_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        losses.load_state(state["extra"])
        first_iter = int(state["iteration"]) + 1

    bg = torch.tensor(background_color(dataset.white_background), device=device)
    render_fn = lambda cam: render(cam, gaussians, pipe, bg)  # noqa: E731
    progress = tqdm(range(first_iter, opt.iterations + 1), desc="Training", disable=quiet, initial=first_iter - 1, total=opt.iterations)
    ema_loss = ema_psnr = None
    last_metrics: dict = {}
    for iteration in progress:
        gaussians.update_learning_rate(iteration)
        if iteration % opt.sh_increase_interval == 0:
            gaussians.oneup_sh_degree()
        cam = train_cams[sampler.next()]
        background = torch.rand(3, device=device) if opt.random_background else bg
        # --debug: autograd names the forward op behind a NaN gradient; render() checks its tensors
        with torch.autograd.detect_anomaly(check_nan=True) if pipe.debug else contextlib.nullcontext():
            pkg = render(cam, gaussians, pipe, background)
            loss, terms = losses(iteration, cam, pkg, gaussians)
            if pipe.debug and not torch.isfinite(loss):
                raise FloatingPointError(f"iteration {iteration}: loss is {float(loss)} ({ {k: float(v) for k, v in terms.items()} }) on camera '{cam.image_name}'")
            loss.backward()

        with torch.no_grad():
            cur_psnr = float(psnr(pkg["render"].clamp(0, 1), cam.original_image, cam.mask))
            ema_loss = float(loss) if ema_loss is None else 0.4 * float(loss) + 0.6 * ema_loss
            ema_psnr = cur_psnr if ema_psnr is None else 0.4 * cur_psnr + 0.6 * ema_psnr
            if iteration % LOG_EVERY == 0 or iteration == opt.iterations:
                progress.set_postfix(loss=f"{ema_loss:.4f}", psnr=f"{ema_psnr:.2f}", n=gaussians.num_points)
            if iteration in test_iterations:
                last_metrics = {"iteration": iteration, "test": evaluate(scene.getTestCameras(), render_fn),
                                "train": evaluate(train_cams[:: max(1, len(train_cams) // 5)][:5], render_fn),
                                "num_gaussians": gaussians.num_points}
                if not quiet:
                    tqdm.write(f"[ITER {iteration}] test {last_metrics['test']}  train {last_metrics['train']}  "
                               f"Gaussians {gaussians.num_points}")
            if iteration in save_iterations:
                scene.save(iteration)
                losses.save(Path(dataset.model_path), iteration)
                if not quiet:
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

            gaussians.optimizer.step()
            gaussians.optimizer.zero_grad(set_to_none=True)
            losses.step()
            if iteration in checkpoint_iterations:
                save_checkpoint(Path(dataset.model_path) / f"chkpnt{iteration}.pth", gaussians, iteration, sampler, losses.state())
    progress.close()
    return last_metrics


def main(argv: list[str] | None = None) -> dict:
    parser, lp, op, pp = build_parser()
    args = parse_with_config(parser, argv)
    args.save_iterations = sorted(set(args.save_iterations + [args.iterations]))
    if not args.source_path:
        raise UserError("-s/--source_path is required (a COLMAP, Blender or EndoNeRF scene folder)")
    if not args.model_path:
        args.model_path = str(Path("output") / Path(args.source_path).name)
    Path(args.model_path).mkdir(parents=True, exist_ok=True)
    dataset = lp.extract(args)
    write_cfg_args(args.model_path, dataset)
    if not args.quiet:
        print(f"Output folder: {args.model_path}")
    metrics = training(dataset, op.extract(args), pp.extract(args), args.test_iterations, args.save_iterations,
                       args.checkpoint_iterations, args.start_checkpoint, args.quiet)
    if not args.quiet:
        print("Training complete.")
    return metrics


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
