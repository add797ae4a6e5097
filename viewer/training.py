"""Watch training live: the hooks train.py calls (``--viewer`` / ``--ip`` / ``--port``).

    viewer = TrainingViewer.for_training(params, gaussians, pipe, bg, scene)   # params: TrainingViewerParams
    for iteration in ...:
        ...
        viewer.update(gaussians, iteration, {"loss": ..., "psnr": ...})
        viewer.wait_while_paused()
    viewer.close()

With no browser connected :meth:`update` only stores three numbers, so training speed is
unchanged; with one, it copies the Gaussians for display at most every
:data:`SNAPSHOT_EVERY_S` seconds (the copy is what the render threads draw, so training
never waits for a frame).
"""
from __future__ import annotations

import threading
import time

from scene.gaussian_model import GaussianModel, subset_model
from viewer.content import ViewerContent, camera_choices
from viewer.params import ServeParams, TrainingViewerParams

SNAPSHOT_EVERY_S = 1.0  # at most one copy of the Gaussians per second while a browser watches
STATS_EVERY_S = 0.5  # stats panel refresh interval


def snapshot(gaussians: GaussianModel) -> GaussianModel:
    """A detached copy of ``gaussians`` (same SH degree) that training will not change."""
    import torch

    return subset_model(gaussians, torch.ones(gaussians.num_points, dtype=torch.bool, device=gaussians.device))


def stats_text(iteration: int, stats: dict, num_gaussians: int, paused: bool) -> str:
    """The live training line: iteration, loss, PSNR, Gaussian count (and paused)."""
    parts = [f"**iteration {iteration}**"]
    if "loss" in stats:
        parts.append(f"loss {stats['loss']:.4f}")
    if "psnr" in stats:
        parts.append(f"PSNR {stats['psnr']:.2f} dB")
    parts.append(f"{num_gaussians:,} Gaussians")
    if paused:
        parts.append("**paused**")
    return " · ".join(parts)


class TrainingViewer:
    """Serves the current Gaussians while training runs. A disabled one (``server=None``) does nothing."""

    def __init__(self, server=None):
        self.server = server
        self.iteration, self.stats, self.num_gaussians = 0, {}, 0
        self._paused = threading.Event()
        self._last_snapshot = self._last_stats = 0.0
        if server is None:
            return
        gui = server.server.gui
        with gui.add_folder("Training", order=-1):
            self._stats = gui.add_markdown("waiting for the first iteration")
            self._pause = gui.add_button("Pause training")
        self._pause.on_click(lambda _e: self.set_paused(not self.paused))

    @classmethod
    def start(cls, gaussians: GaussianModel, pipe, bg, train_cameras, test_cameras, extent: float,
              options: ServeParams) -> "TrainingViewer":
        """Start the server (a UserError names --ip/--port if it cannot listen) and print its address
        (always: it was asked for)."""
        from viewer.server import ViewerServer  # viser is imported only when a viewer is wanted

        content = ViewerContent(snapshot(gaussians), pipe, bg, camera_choices(train_cameras, test_cameras), float(extent))
        server = ViewerServer(content, options)
        print(f"Viewer at {server.url}", flush=True)
        return cls(server)

    @classmethod
    def for_training(cls, params: TrainingViewerParams, gaussians: GaussianModel, pipe, bg, scene) -> "TrainingViewer":
        """train.py's viewer: serving ``scene``'s cameras when ``params.enabled``, else a disabled one."""
        if not params.enabled:
            return cls()
        return cls.start(gaussians, pipe, bg, scene.getTrainCameras(), scene.getTestCameras(), scene.cameras_extent,
                         params)

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._paused.set()
        else:
            self._paused.clear()
        if self.server is not None:
            self._pause.label = "Resume training" if paused else "Pause training"
            self._show_stats()

    def update(self, gaussians: GaussianModel, iteration: int, stats: dict) -> None:
        """Called every iteration (cheap): record the stats; with a browser connected, refresh what it shows."""
        self.iteration, self.stats = iteration, stats
        if self.server is None or self.server.num_clients == 0:
            return
        now = time.monotonic()
        if now - self._last_stats >= STATS_EVERY_S:
            self._last_stats = now
            self.num_gaussians = gaussians.num_points
            self._show_stats()
        if now - self._last_snapshot >= SNAPSHOT_EVERY_S or self.paused:
            self._last_snapshot = now
            self.server.content.replace_gaussians(snapshot(gaussians))
            self.server.request_frames()

    def _show_stats(self) -> None:
        self._stats.content = stats_text(self.iteration, self.stats, self.num_gaussians, self.paused)

    def wait_while_paused(self, poll_s: float = 0.1) -> None:
        """Block while the pause button is down (the browser keeps showing the Gaussians of the last update())."""
        while self._paused.is_set() and self.server is not None:
            time.sleep(poll_s)

    def close(self) -> None:
        self._paused.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None
