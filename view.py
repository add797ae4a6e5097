#!/usr/bin/env python
"""Serve a trained model in an interactive web viewer (viser; open the printed address in a browser).

    python view.py -m OUT [--iteration N] [--ip 127.0.0.1] [--port 8080]

Render modes RGB / depth / feature PCA / cluster colours, a time slider for deformable
(EndoNeRF) models, snapping to any training/test camera. Rendering uses render() with
the model's backend (cpu on a CPU, gsplat on CUDA); frames are low-resolution while the
camera moves and full-resolution once it stops. Ctrl-C stops the server.
"""
from __future__ import annotations

import utils.omp_policy  # noqa: F401  (first: sets OpenMP waiting before torch loads)
import sys
import threading
from dataclasses import dataclass

from arguments import ModelParams, PipelineParams, parse
from arguments.config import param
from utils.errors import run_cli
from viewer.params import ServeParams

DESCRIPTION = "Interactive web viewer for a trained model"


@dataclass(frozen=True)
class ViewParams(ServeParams):
    """What view.py serves, and where."""

    iteration: int = param(-1, "saved iteration to show (-1 = the latest)", ge=1, allowed=(-1,))
    quiet: bool = param(False, "print only the viewer's address")


GROUPS = (ModelParams, PipelineParams, ViewParams)


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> None:
    dataset, pipe, opts = parse(GROUPS, sys.argv[1:] if argv is None else argv, DESCRIPTION, from_model=True)
    from viewer.content import load_model_folder
    from viewer.server import ViewerServer, check_port_free

    check_port_free(opts.ip, opts.port)  # before the (slow) model load
    content = load_model_folder(dataset, pipe, opts.iteration, opts.quiet)
    server = ViewerServer(content, opts)
    print(f"Viewer at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.stop()


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
