#!/usr/bin/env python
"""Serve a trained model in an interactive web viewer (viser; open the printed address in a browser).

    python view.py -m OUT [--iteration N] [--ip 127.0.0.1] [--port 8080]

Render modes RGB / depth / feature PCA / cluster colours, a time slider for deformable
(EndoNeRF) models, snapping to any training/test camera. Rendering uses render() with
the model's backend (cpu on a CPU, gsplat on CUDA); frames are low-resolution while the
camera moves and full-resolution once it stops. Ctrl-C stops the server.
"""
from __future__ import annotations

import sys
import threading
from argparse import ArgumentParser

from arguments import ModelParams, PipelineParams, get_combined_args
from utils.errors import UserError, run_cli
from viewer.server import IMAGE_FORMATS, ViewerOptions


def build_parser() -> tuple[ArgumentParser, ModelParams, PipelineParams]:
    parser = ArgumentParser(description="Interactive web viewer for a trained model")
    lp, pp = ModelParams(parser, sentinel=True), PipelineParams(parser)
    parser.add_argument("--iteration", default=-1, type=int, help="iteration to load (default: the last saved)")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", default=8080, type=int, help="port to listen on")
    parser.add_argument("--image_format", default="jpeg", choices=IMAGE_FORMATS,
                        help="how frames travel to the browser (png: lossless, larger)")
    parser.add_argument("--jpeg_quality", default=90, type=int, help="JPEG quality 1-100")
    parser.add_argument("--max_resolution", default=1024, type=int, help="initial long side of full-resolution frames (px)")
    parser.add_argument("--moving_scale", default=0.35, type=float, help="initial resolution factor while the camera moves")
    parser.add_argument("--moving_budget", default=30, type=int,
                        help="initial thousands of Gaussians drawn while the camera moves, the most visible first (0: all)")
    parser.add_argument("--quiet", action="store_true", help="print only the viewer's address")
    return parser, lp, pp


def options_from(args) -> ViewerOptions:
    """Viewer options from parsed flags, checked."""
    if not 1 <= args.jpeg_quality <= 100:
        raise UserError(f"--jpeg_quality {args.jpeg_quality}: choose 1-100")
    if not 0.0 < args.moving_scale <= 1.0:
        raise UserError(f"--moving_scale {args.moving_scale}: choose a factor in (0, 1]")
    if not 0 <= args.moving_budget <= 1000:
        raise UserError(f"--moving_budget {args.moving_budget}: choose 0 (all) to 1000 thousand Gaussians")
    if args.max_resolution < 16:
        raise UserError(f"--max_resolution {args.max_resolution}: choose at least 16 px")
    return ViewerOptions(args.ip, args.port, args.image_format, args.jpeg_quality, args.max_resolution, args.moving_scale,
                         args.moving_budget)


def main(argv: list[str] | None = None, stop: threading.Event | None = None) -> None:
    parser, lp, pp = build_parser()
    args = get_combined_args(parser, argv if argv is not None else sys.argv[1:])
    options = options_from(args)
    from viewer.content import load_model_folder
    from viewer.server import ViewerServer, check_port_free

    check_port_free(options.host, options.port)  # before the (slow) model load
    content = load_model_folder(lp.extract(args), pp.extract(args), args.iteration, args.quiet)
    server = ViewerServer(content, options)
    print(f"Viewer at {server.url} (Ctrl-C to stop)", flush=True)
    try:
        (stop or threading.Event()).wait()
    finally:
        server.stop()


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
