#!/usr/bin/env python
"""Screenshots of the web viewer in each render mode (for the README), taken in headless Chromium.

    python scripts/viewer_screenshots.py -m MODEL [--out docs/viewer] [--camera "test 0"] [--size 760x420] [-r 4]

Starts view.py on MODEL, snaps to --camera and saves the whole page (canvas and controls)
as OUT/<mode>.png for RGB, depth, feature PCA and clusters (those the model supports),
plus time_end.png (time slider at its end) for deformable models.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import utils.omp_policy  # noqa: E402,F401  (before torch)

from utils.errors import parse_size, run_cli  # noqa: E402
from viewer.headless import browser_page, choose, frame_number, serve, slider_thumb, wait_frame  # noqa: E402

MODES = {"RGB": "rgb", "Depth": "depth", "Feature PCA": "feature_pca", "Clusters": "clusters"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model_path", required=True, help="trained model folder")
    ap.add_argument("--out", default="docs/viewer", help="folder for the PNGs")
    ap.add_argument("--camera", default="test 0", help="camera to snap to (start of its label)")
    ap.add_argument("--size", default="760x420", help="browser window WIDTHxHEIGHT")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES), help="modes to capture")
    ap.add_argument("-r", "--resolution", default=None, help="view.py -r (camera resolution)")
    a = ap.parse_args(argv)
    w, h = parse_size(a.size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    flags = ["--image_format", "png", "--quiet"] + (["-r", a.resolution] if a.resolution else [])
    with TemporaryDirectory() as tmp, serve(Path(a.model_path), Path(tmp) / "view.log", *flags) as url, \
            browser_page(url, Path(tmp) / "profile", {"width": w, "height": h}) as page:
        choose(page, "Snap to camera", a.camera)
        info = wait_frame(page, rf"full · RGB .*{a.camera}")
        for mode in a.modes:
            if mode != "RGB":  # RGB is already showing
                choose(page, "Render mode", mode)
                info = wait_frame(page, rf"full · {mode} ", frame_number(info))
            page.screenshot(path=str(out / f"{MODES[mode]}.png"))
            print(out / f"{MODES[mode]}.png")
        if "Time" in page.content():
            if a.modes[-1] != "RGB":
                choose(page, "Render mode", "RGB")
                info = wait_frame(page, r"full · RGB ", frame_number(info))
            thumb = slider_thumb(page, "Time")
            thumb.focus()
            thumb.press("End")
            wait_frame(page, r"full · RGB · t=1\.000", frame_number(info))
            page.screenshot(path=str(out / "time_end.png"))
            print(out / "time_end.png")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
