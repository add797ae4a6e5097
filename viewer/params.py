"""The viewer's flags and settings (no viser import: train.py reads these even with the viewer off)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from arguments.config import Params, param


@dataclass(frozen=True)
class ServeParams(Params):
    """Where and how the viewer serves (flags of view.py and train.py)."""

    GROUP = "Web viewer"
    ip: str = param("127.0.0.1", "address the viewer listens on (0.0.0.0: every interface)")
    port: int = param(8080, "port the viewer listens on", ge=1, le=65535)
    image_format: Literal["jpeg", "png"] = param("jpeg", "how frames travel to the browser (png: lossless, larger)")
    jpeg_quality: int = param(90, "JPEG quality of the frames", ge=1, le=100)
    max_resolution: int = param(1024, "initial long side of full-resolution frames, in pixels", ge=16)
    moving_scale: float = param(0.35, "initial resolution factor while the camera moves", gt=0, le=1)
    moving_budget: int = param(30, "initial thousands of Gaussians drawn while the camera moves, the most visible "
                                   "first (0: all)", ge=0, le=1000)


@dataclass(frozen=True)
class TrainingViewerParams(ServeParams):
    """train.py's viewer flags (graphdeco's --ip / --port / --disable_viewer names, plus --viewer)."""

    viewer: bool = param(False, "serve the web viewer while training (open http://IP:PORT): live Gaussians, loss, "
                                "PSNR, pause/resume")
    disable_viewer: bool = param(False, "no viewer, even with --viewer (graphdeco's flag)")

    @property
    def enabled(self) -> bool:
        return self.viewer and not self.disable_viewer
