"""One browser tab: its controls and its render loop (a thread that never blocks the UI).

The loop renders at ``moving scale`` x the full resolution while the camera moves (or
the time plays) and at full resolution once the camera has been still for
:data:`SETTLE_S`. viser callbacks only record what changed and wake the loop.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import viser

from utils.errors import one_line
from viewer.camera import ViewPose, camera_pose, render_size, same_pose, view_camera
from viewer.content import ViewerContent, warn
from viewer.modes import CLUSTERS, MODES, PCA, RGB, render_mode

SETTLE_S = 0.25  # camera still this long -> full-resolution frame
SNAP_GRACE_S = 1.0  # after snapping, stale camera messages from the browser do not un-snap it
SNAP_POS_TOL = 1e-3  # un-snap when the camera centre moves more than this fraction of the scene extent
SNAP_ANGLE_TOL = 2e-3  # ... or turns more than this (radians)
TIME_STEP = 0.001  # time slider step; a snapped camera's own time is used while the slider is within a step of it
PLAY_LOOP_S = 6.0  # the play button runs through the whole time range in this many seconds
FREE = "(free camera)"


class ClientView:
    """Controls and render loop of one connected browser (``options``: see :class:`viewer.params.ServeParams`)."""

    def __init__(self, client: viser.ClientHandle, content: ViewerContent, options):
        self.client, self.content, self.options = client, content, options
        self._wake, self._stop = threading.Event(), threading.Event()
        self._dirty = True
        self._last_move = 0.0
        self._low_shown = False
        self._shown_version = -1
        self._snapped = None
        self._snap_pose: ViewPose | None = None
        self._snap_time = 0.0
        self.playing = False
        self._started = False
        self.frames = 0
        self._build_gui()
        client.camera.on_update(self._on_camera)
        self._thread = threading.Thread(target=self._loop, name=f"viewer-client-{client.client_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ controls
    def _build_gui(self) -> None:
        gui, content = self.client.gui, self.content
        with gui.add_folder("View"):
            self.mode = gui.add_dropdown("Render mode", MODES, initial_value=RGB)
            self.snap = gui.add_dropdown("Snap to camera", [FREE] + [label for label, _ in content.cameras], initial_value=FREE)
            self.max_res = gui.add_slider("Max resolution", 64, 2048, 16, self.options.max_resolution,
                                          hint="long side of the full-resolution frame, in pixels")
            self.moving_scale = gui.add_slider("Moving scale", 0.1, 1.0, 0.05, self.options.moving_scale,
                                               hint="resolution factor while the camera moves")
            self.moving_budget = gui.add_slider("Moving budget (k)", 0, 1000, 10, self.options.moving_budget,
                                                hint="while moving, draw only this many thousand of the most visible Gaussians (0: all)")
            max_sh = content.gaussians.max_sh_degree
            self.sh_degree = gui.add_slider("SH degree", 0, max(max_sh, 1), 1, max_sh, disabled=max_sh == 0)
            self.info = gui.add_markdown("waiting for the first frame")
        times = content.times
        deformable = content.gaussians.is_deformable or len(times) > 1
        with gui.add_folder("Time", visible=deformable):
            self.time = gui.add_slider("Time", 0.0, 1.0, TIME_STEP, times[0] if times else 0.0)
            self.play = gui.add_button("Play")
        self.cluster_boxes = []
        if content.clusters is not None:
            sizes = np.bincount(content.clusters.labels[content.clusters.labels >= 0], minlength=content.clusters.num_clusters)
            with gui.add_folder("Clusters", expand_by_default=False):
                for k in range(content.clusters.num_clusters):
                    box = gui.add_checkbox(f"Cluster {k} ({sizes[k]})", True)
                    box.on_update(lambda _e, k=k, box=box: self._set_cluster(k, box.value))
                    self.cluster_boxes.append(box)
        for handle in (self.max_res, self.moving_scale, self.moving_budget, self.sh_degree, self.time):
            handle.on_update(lambda _e: self.request())
        self.mode.on_update(lambda _e: self._on_mode())
        self.snap.on_update(lambda _e: self._on_snap())
        self.play.on_click(lambda _e: self._toggle_play())

    def _set_cluster(self, k: int, shown: bool) -> None:
        self.content.clusters.visible[k] = shown
        self.request()

    def _on_mode(self) -> None:
        mode = self.mode.value
        why = None
        if mode == PCA and self.content.gaussians.get_semantic is None:
            why = "feature PCA: the model has no per-Gaussian features (train with --feature_dim and a --dino_feature_dir)"
        elif mode == CLUSTERS and self.content.clusters is None:
            why = f"cluster colours: {self.content.clusters_note}"
        if why:
            self.report(why)
            self.mode.value = RGB
        self.request()

    def _on_snap(self) -> None:
        self.snap_to(self.snap.value)

    def snap_to(self, label: str) -> None:
        """Look through the dataset camera called ``label`` (its pose, intrinsics and time); FREE releases it."""
        cam = dict(self.content.cameras).get(label)
        if self.snap.value != label:
            self.snap.value = label
        if cam is None:
            self._snapped = self._snap_pose = None
            return
        pose = camera_pose(cam)
        self._snapped, self._snap_pose, self._snap_time = cam, pose, time.monotonic()
        with self.client.atomic():
            self.client.camera.wxyz = pose.wxyz
            self.client.camera.position = pose.position
            self.client.camera.fov = pose.fov
        self.time.value = float(cam.time)
        self.request()

    def _toggle_play(self) -> None:
        self.playing = not self.playing
        self.play.label = "Pause" if self.playing else "Play"
        self.request()

    def _on_camera(self, _camera) -> None:
        if not self._started and self.content.cameras:  # first message: start looking through the first camera
            self._started = True
            self.snap_to(self.content.cameras[0][0])
        self._last_move = time.monotonic()
        self.request()

    def report(self, message: str) -> None:
        """One warning line on the server and a notification in this browser; the viewer stays up."""
        warn(message)
        self.client.add_notification("Viewer", message, auto_close_seconds=8.0, color="yellow")

    def request(self) -> None:
        """Ask for a new frame."""
        self._dirty = True
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ render loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=0.0 if self.playing else (SETTLE_S if self._low_shown else 0.5))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._step()
            except Exception as exc:  # a failed frame is reported; the viewer stays up
                self.report(f"frame failed: {one_line(exc)}")
                self._dirty = False
                self.mode.value = RGB

    def _pose(self) -> ViewPose | None:
        cam = self.client.camera
        try:
            return ViewPose(tuple(cam.wxyz), tuple(cam.position), float(cam.fov))
        except AssertionError:  # no camera message from the browser yet
            return None

    def _step(self) -> None:
        now = time.monotonic()
        moving = now - self._last_move < SETTLE_S
        _, version = self.content.current()
        if not (self._dirty or self.playing or version != self._shown_version or (self._low_shown and not moving)):
            return
        pose = self._pose()
        if pose is None:
            return
        self._dirty = False
        if self.playing:
            self.time.value = (self.time.value + (now - getattr(self, "_last_play", now)) / PLAY_LOOP_S) % 1.0
        self._last_play = now
        low = moving or self.playing
        snapped = self._check_snap(pose, now)
        cam = self.client.camera
        w, h = render_size(cam.image_width, cam.image_height, self.max_res.value, self.moving_scale.value if low else 1.0)
        t = self.time.value
        if snapped is not None and abs(t - snapped.time) <= TIME_STEP:
            t = float(snapped.time)
        shown = self.content.display(self.moving_budget.value * 1000 if low else 0).with_sh_degree(self.sh_degree.value)
        view = view_camera(pose, w, h, t, snapped).to(shown.device)
        t0 = time.perf_counter()
        image = render_mode(self.mode.value, view, shown, self.content.pipe, self.content.bg, t,
                            self.content.projector() if self.mode.value == PCA else None, self.content.clusters)
        ms = (time.perf_counter() - t0) * 1000.0
        fmt = self.options.image_format
        self.client.scene.set_background_image(image, format=fmt, jpeg_quality=self.options.jpeg_quality if fmt == "jpeg" else None)
        self.frames += 1
        self._low_shown, self._shown_version = low, version
        where = f" · {self.snap.value}" if snapped is not None else ""
        self.info.content = (f"frame {self.frames} · {ms:.0f} ms · {w}x{h} · {'moving' if low else 'full'} · "
                             f"{self.mode.value} · t={t:.3f}{where}")

    def _check_snap(self, pose: ViewPose, now: float):
        """The snapped dataset camera while the browser still looks through it, else None (and un-snap)."""
        if self._snapped is None:
            return None
        if now - self._snap_time < SNAP_GRACE_S or same_pose(pose, self._snap_pose, SNAP_POS_TOL * self.content.extent,
                                                              SNAP_ANGLE_TOL):
            return self._snapped
        self._snapped = self._snap_pose = None
        self.snap.value = FREE
        return None
