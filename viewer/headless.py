"""Drive the viewer from headless Chromium with playwright (the browser test and the README screenshots).

Uses the system's Chromium (Debian's ``chromium``); playwright's own browser downloads are
never needed. Every helper takes a playwright ``Page`` showing the viewer.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAME_TIMEOUT_S = 40.0
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(model: Path, log: Path, *flags: str, timeout_s: float = 120.0, script: str = "view.py"):
    """Run ``script -m model flags --port P`` (P free), its output going to ``log``, until it prints
    'Viewer at'; yields the viewer's URL; stops the script on exit."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / script), "-m", str(model), "--port", str(port), *flags],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + timeout_s
        while "Viewer at " not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{script} did not start its viewer:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def browser_page(url: str, profile_dir: Path, viewport: dict):
    """A headless Chromium page showing the viewer at ``url``, its first full frame drawn and toasts closed."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile_dir), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                       viewport=viewport, device_scale_factor=1)
        try:
            yield open_viewer(context.new_page(), url)
        finally:
            context.close()


def open_viewer(page, url: str, first_frame: str = r"full"):
    """Load the viewer at ``url`` in ``page``; returns it once a frame matching ``first_frame`` is drawn and toasts
    are closed."""
    page.goto(url)
    wait_frame(page, first_frame)
    close_notifications(page)
    return page


def close_notifications(page) -> None:
    """Dismiss toasts (e.g. Chromium's 'software WebGL' notice) that would cover the canvas."""
    for button in page.locator(".mantine-Notification-closeButton").all():
        button.click()
    page.wait_for_timeout(300)


def frame_info(page) -> str:
    """The viewer's frame line: 'frame N · ms · WxH · full|moving · mode · t=… [· camera]'."""
    return page.get_by_text(re.compile(r"^frame \d+ ·")).first.inner_text()


def frame_number(info: str) -> int:
    return int(re.match(r"frame (\d+)", info).group(1))


def wait_frame(page, pattern: str, after: int = 0, timeout_s: float = FRAME_TIMEOUT_S) -> str:
    """Wait for a frame numbered above ``after`` whose info line matches ``pattern``; return the info line."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout_s
    info = ""
    while time.monotonic() < deadline:
        try:
            info = frame_info(page)
        except Error:
            info = ""
        if info and frame_number(info) > after and re.search(pattern, info):
            # the image travels before its info line: let the browser draw it
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            return info
        page.wait_for_timeout(100)
    raise AssertionError(f"no frame matching {pattern!r} after frame {after} within {timeout_s} s; last: {info!r}")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` (a prefix of its text) in the dropdown labelled ``label``."""
    page.get_by_label(label).click()
    page.get_by_role("option", name=option).first.click()
    page.mouse.move(1, 1)  # away from the controls: no tooltip over the screenshot


def canvas_size(page) -> tuple[int, int]:
    box = page.locator("canvas").first.bounding_box()
    return int(box["width"]), int(box["height"])


def screenshot(page, path: Path, width: int, height: int) -> np.ndarray:
    """[H,W,3] uint8 RGB of the page's top-left width x height pixels (the canvas), also written to ``path``."""
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": width, "height": height})
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def slider_thumb(page, label: str):
    """The thumb of the slider labelled ``label`` (focus it and press keys to move it)."""
    target = page.locator("label").filter(has_text=re.compile(f"^{re.escape(label)}$")).first.get_attribute("for")
    return page.locator(f"[id='{target}']").get_by_role("slider")
