#!/usr/bin/env python
"""Reproduce an experiment's table with one command: every scene of a suite through
(extract_dino_features.py ->) train.py -> render.py -> metrics.py, then results.{md,csv,png}.

    python full_eval.py --suite suites/endonerf.json --data_root DATA --output_path eval
    python full_eval.py --suite suites/synthetic.json                       # built-in scenes, offline
    python full_eval.py --suite suites/backbones.json --random_init        # offline backbone comparison
    python full_eval.py --suite ... --launcher ray [--address auto]         # one Ray task per scene

Each scene's model lands in OUTPUT/SCENE (OUTPUT/BACKBONE/SCENE for backbone suites). Steps are
resumable: a step whose outputs are complete is skipped, so rerunning an interrupted command
continues where it stopped. ``--skip_training/--skip_rendering/--skip_metrics`` leave a step out.
The suite file format is described in utils/eval_suite.py; examples are in suites/.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import logging
import sys
from argparse import ArgumentParser, Namespace
from pathlib import Path

from tqdm import tqdm

from utils.errors import UserError, run_cli
from utils.eval_report import write_reports
from utils.eval_steps import child_env, run_child, run_steps
from utils.eval_suite import Run, Suite, generate_command, load_suite, plan_runs, scene_source, uses_random_init
from utils.io_utils import write_json

GENERATED_STAMP = ".full_eval_generated.json"  # written into a generated scene once it is complete
RAY_INSTALL_HINT = "pip install ray==2.60.0 (or pip install -r requirements.txt)"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description="Run a suite of scenes and tabulate the results (graphdeco full_eval.py)")
    p.add_argument("--suite", required=True, help="suite file (JSON), e.g. suites/endonerf.json")
    p.add_argument("--output_path", default="./eval", help="one folder per scene is made in here")
    p.add_argument("--data_root", default=None, help="folder that relative source_path entries are resolved against "
                                                     "(default: the suite file's folder)")
    p.add_argument("--skip_training", action="store_true", help="leave out feature extraction and training")
    p.add_argument("--skip_rendering", action="store_true")
    p.add_argument("--skip_metrics", action="store_true")
    p.add_argument("--random_init", action="store_true",
                   help="DINO backbones with random weights (offline runs; said in the table's title)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of each script (OMP/MKL); 0 = inherit (Ray sets one per requested CPU)")
    p.add_argument("--launcher", choices=("local", "ray"), default="local",
                   help="local: scenes one after another; ray: one Ray task per scene")
    p.add_argument("--address", default=None,
                   help="ray: address of a running cluster (e.g. auto); default: start a private local instance")
    p.add_argument("--num_cpus", type=int, default=1, help="ray: CPUs each scene requests when there is no GPU")
    p.add_argument("--ray_cpus", type=int, default=None, help="ray: CPUs of the private local instance (default: all)")
    p.add_argument("--quiet", action="store_true")
    return p


def validate_args(args: Namespace) -> None:
    if args.threads < 0:
        raise UserError(f"--threads {args.threads}: must be 0 (inherit) or more")
    if args.num_cpus < 1:
        raise UserError(f"--num_cpus {args.num_cpus}: each scene needs at least one CPU")
    if args.ray_cpus is not None and args.ray_cpus < 1:
        raise UserError(f"--ray_cpus {args.ray_cpus}: must be at least 1")
    if args.launcher != "ray" and (args.address or args.ray_cpus):
        raise UserError("--address/--ray_cpus apply to --launcher ray only")
    if args.address and args.ray_cpus:
        raise UserError("--ray_cpus sizes a private local instance; a cluster given by --address has its own CPUs")


def skipped_steps(args: Namespace) -> tuple[str, ...]:
    skip = []
    if args.skip_training:
        skip += ["extract", "train"]
    if args.skip_rendering:
        skip.append("render")
    if args.skip_metrics:
        skip.append("metrics")
    return tuple(skip)


def generate_scenes(suite: Suite, out_dir: Path, threads: int, quiet: bool) -> None:
    """Write the suite's synthetic scenes that are not complete yet (scene scripts as subprocesses)."""
    for scene in suite.scenes:
        if "generate" not in scene:
            continue
        folder = scene_source(suite, scene, out_dir)
        if (folder / GENERATED_STAMP).is_file():
            continue
        args = generate_command(scene["generate"], folder)
        if scene["generate"]["kind"] == "endonerf" and folder.is_dir():
            args.append("--overwrite")  # an interrupted generation left some frames
        log = out_dir / "scenes" / f"{scene['name']}.log"
        seconds, _ = run_child(args, log, child_env(threads), f"generating scene {scene['name']}")
        write_json(folder / GENERATED_STAMP, {"command": ["python", *args], "seconds": seconds})
        if not quiet:
            print(f"[{scene['name']}] generated in {seconds:.1f} s: {folder}", flush=True)


def run_local(runs: list[Run], skip: tuple[str, ...], threads: int, quiet: bool) -> list[dict]:
    return [run_steps(run, skip, threads, quiet) for run in tqdm(runs, desc="Scenes", unit="scene", disable=quiet)]


def import_ray():
    """The ray module, or a one-line error saying how to install it (Ray is optional)."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--launcher ray: Ray is not installed; {RAY_INSTALL_HINT}, or use --launcher local") from None
    return ray


def run_ray(runs: list[Run], skip: tuple[str, ...], args: Namespace) -> list[dict]:
    """One Ray task per run (1 GPU each when the cluster has GPUs, else ``--num_cpus`` CPUs); rows in suite order."""
    ray = import_ray()
    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=not args.quiet)
    else:
        ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=not args.quiet)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(run_steps).options(**({"num_gpus": 1} if gpus else {"num_cpus": args.num_cpus}))
        pending = {task.remote(run, skip, args.threads, args.quiet): i for i, run in enumerate(runs)}
        rows: list[dict | None] = [None] * len(runs)
        with tqdm(total=len(runs), desc="Scenes (ray)", unit="scene", disable=args.quiet) as bar:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(ref)
                try:
                    rows[index] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    for other in pending:
                        ray.cancel(other)
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, UserError):
                        raise UserError(str(cause)) from None
                    raise
                bar.update(1)
        return rows
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    validate_args(args)
    suite = load_suite(args.suite, args.data_root)  # every suite error surfaces here, before anything runs
    if args.launcher == "ray":
        import_ray()
    out_dir = Path(args.output_path).resolve()
    runs = plan_runs(suite, out_dir, args.random_init)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.skip_training:
        generate_scenes(suite, out_dir, args.threads, args.quiet)
    skip = skipped_steps(args)
    rows = run_local(runs, skip, args.threads, args.quiet) if args.launcher == "local" else run_ray(runs, skip, args)
    paths = write_reports(out_dir, suite, rows, uses_random_init(suite, args.random_init), args.launcher)
    if not args.quiet:
        print(paths[1].read_text())
        print("Wrote " + ", ".join(str(p) for p in paths))
    return rows


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
