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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from arguments import parse
from arguments.config import Params, param
from utils.errors import UserError, run_cli
from utils.eval_report import write_reports
from utils.eval_steps import child_env, run_child, run_steps
from utils.eval_suite import Run, Suite, generate_command, load_suite, plan_runs, scene_source, uses_random_init
from utils.io_utils import write_json

GENERATED_STAMP = ".full_eval_generated.json"  # written into a generated scene once it is complete
RAY_INSTALL_HINT = "pip install ray==2.60.0 (or pip install -r requirements.txt)"


@dataclass(frozen=True)
class FullEvalParams(Params):
    """What full_eval.py runs and where."""

    GROUP = "Suite"
    suite: str = param("", "suite file (JSON), e.g. suites/endonerf.json")
    output_path: str = param("./eval", "one folder per scene is made in here")
    data_root: str | None = param(None, "folder that relative source_path entries are resolved against (default: the suite file's folder)")
    skip_training: bool = param(False, "leave out feature extraction and training")
    skip_rendering: bool = param(False, "leave out render.py")
    skip_metrics: bool = param(False, "leave out metrics.py")
    random_init: bool = param(False, "DINO backbones with random weights (offline runs; said in the table's title)")
    threads: int = param(0, "CPU threads of each script (OMP/MKL); 0 = inherit (Ray sets one per requested CPU)", ge=0)
    launcher: Literal["local", "ray"] = param("local", "local: scenes one after another; ray: one Ray task per scene")
    address: str | None = param(None, "ray: address of a running cluster (e.g. auto); default: start a private local instance")
    num_cpus: int = param(1, "ray: CPUs each scene requests when there is no GPU", ge=1)
    ray_cpus: int | None = param(None, "ray: CPUs of the private local instance (default: all)", ge=1)
    quiet: bool = param(False, "no progress bars or messages")

    def check(self) -> None:
        if not self.suite:
            raise UserError("--suite is required: a suite file such as suites/synthetic.json")
        if self.launcher != "ray" and (self.address or self.ray_cpus):
            raise UserError("--address/--ray_cpus apply to --launcher ray only")
        if self.address and self.ray_cpus:
            raise UserError("--ray_cpus sizes a private local instance; a cluster given by --address has its own CPUs")


def skipped_steps(args: FullEvalParams) -> tuple[str, ...]:
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


def run_ray(runs: list[Run], skip: tuple[str, ...], args: FullEvalParams) -> list[dict]:
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
    (args,) = parse((FullEvalParams,), sys.argv[1:] if argv is None else argv,
                    "Run a suite of scenes and tabulate the results (graphdeco full_eval.py)")
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
