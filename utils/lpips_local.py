"""LPIPS only when its backbone weights are already on disk (no downloads, ever)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

LpipsNet = Literal["vgg", "alex"]
# torchvision's ImageNet checkpoints of the LPIPS backbones (the lpips package ships only its linear layers)
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def _backbone_weights(net: LpipsNet) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]
    return path if path.is_file() else None


def load_lpips(device, net: LpipsNet = "vgg") -> tuple[object | None, str]:
    """(LPIPS model with the ``net`` backbone or None, reason). Never touches the network."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "the 'lpips' package is not installed (pip install lpips)"
    if _backbone_weights(net) is None:
        return None, (f"the {net} weights ({BACKBONE_FILES[net]}) are not in the local torch cache "
                      f"({Path(torch.hub.get_dir()) / 'checkpoints'}); download them once with network access to enable LPIPS")
    import lpips

    os.environ.setdefault("TORCH_HOME", str(Path(torch.hub.get_dir()).parent))
    model = lpips.LPIPS(net=net, verbose=False).to(device).eval()
    return model, f"LPIPS({net})"
