"""LPIPS only when its backbone weights are already on disk (no downloads, ever)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet checkpoint name


def _alexnet_weights() -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    return path if path.is_file() else None


def load_lpips(device) -> tuple[object | None, str]:
    """(lpips model or None, reason). Never touches the network."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "the 'lpips' package is not installed (pip install lpips)"
    weights = _alexnet_weights()
    if weights is None:
        return None, (f"AlexNet weights are not in the local torch cache ({Path(torch.hub.get_dir()) / 'checkpoints'}); "
                      "download them once with network access to enable LPIPS")
    import lpips

    os.environ.setdefault("TORCH_HOME", str(Path(torch.hub.get_dir()).parent))
    model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
    return model, "LPIPS(alex)"
