"""Creating DINO / DINOv2 backbones with timm, strictly offline.

Three ways to get weights, in order of precedence:

* ``weights=PATH``: a local state dict (``.pth`` / ``.pt`` / ``.bin`` read with
  ``torch.load(weights_only=True)``, or ``.safetensors``). Both timm-format and the
  original facebookresearch checkpoints work (timm's own key conversion is applied).
* the local caches: timm's Hugging Face cache (``timm.create_model(pretrained=True)``
  with the hub forced offline) and, failing that, the torch hub checkpoint folder
  (``$TORCH_HOME/hub/checkpoints/<file of the original URL>``).
* ``random_init=True``: the same architecture with seeded random weights (features are
  meaningless; for tests and demos only).

Nothing here ever touches the network.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch

from utils.errors import UserError

RANDOM_INIT_SEED = 0  # random weights are seeded so extraction and training build the same network
INIT_STD = 0.02  # std of random weights (timm's ViT default scale)
IGNORED_KEY_PREFIXES = ("head.", "fc_norm.", "mask_token")  # classifier / training-only entries
MAX_KEYS_IN_MESSAGE = 3


@contextlib.contextmanager
def hf_hub_offline() -> Iterator[None]:
    """Force the Hugging Face hub client offline for the duration of the block.

    ``HF_HUB_OFFLINE`` is read by huggingface_hub when it is imported, so besides the
    environment variable the already-imported module constant is switched too (and both
    are restored afterwards).
    """
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    old_flag = None
    try:
        import huggingface_hub.constants as constants  # noqa: PLC0415 (optional dependency)

        old_flag = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except ImportError:
        constants = None
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_flag
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a weights file as a flat ``{name: tensor}`` dict, never unpickling objects.

    Accepts a bare state dict or one nested under ``model`` / ``state_dict`` / ``teacher``.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: weights file not found; pass --weights with an existing .pth/.safetensors file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file  # noqa: PLC0415

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoding failure of a user file is a user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{p}: cannot read weights ({type(exc).__name__}: {first[:200]}); "
                        "expected a plain state dict saved as .pth/.bin or .safetensors") from None
    for key in ("model", "state_dict", "teacher"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{p}: not a state dict of tensors; save the backbone with torch.save(model.state_dict(), PATH)")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in obj.items()}


def load_weights_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Convert ``state_dict`` with timm's ViT filter and load it strictly (classifier keys aside)."""
    from timm.models.vision_transformer import checkpoint_filter_fn  # noqa: PLC0415

    try:
        converted = checkpoint_filter_fn(dict(state_dict), model)
    except Exception as exc:  # conversion fails on checkpoints of another architecture
        raise UserError(f"{source}: weights do not fit this model ({type(exc).__name__}: {str(exc)[:160]}); "
                        "check --model") from None
    converted = {k: v for k, v in converted.items() if not k.startswith(IGNORED_KEY_PREFIXES)}
    own = model.state_dict()
    missing = [k for k in own if k not in converted and not k.startswith(IGNORED_KEY_PREFIXES)]
    unexpected = [k for k in converted if k not in own]
    wrong = [k for k in converted if k in own and converted[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {', '.join(keys[:MAX_KEYS_IN_MESSAGE])}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise UserError(f"{source}: weights do not match the model ({'; '.join(parts)}); check --model")
    model.load_state_dict(converted, strict=False)


def _torch_hub_checkpoint(timm_name: str) -> Path | None:
    """Path of the original-URL checkpoint in the torch hub cache, if it is there."""
    import timm  # noqa: PLC0415

    cfg = timm.models.get_pretrained_cfg(timm_name)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not url:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return path if path.is_file() else None


def _new_model(timm_name: str, pretrained: bool) -> torch.nn.Module:
    """timm ViT without classifier head, accepting any input size that is a multiple of the patch.

    timm's own initialisation is skipped (it takes seconds, and minutes for ViT-g): every
    caller either loads all weights strictly or runs :func:`seeded_random_init`.
    """
    import timm  # noqa: PLC0415

    try:
        return timm.create_model(timm_name, pretrained=pretrained, num_classes=0, dynamic_img_size=True,
                                 weight_init="skip")
    except TypeError:
        raise UserError(f"model {timm_name}: not a timm VisionTransformer; use a DINO/DINOv2 ViT name") from None


def seeded_random_init(model: torch.nn.Module, seed: int = RANDOM_INIT_SEED) -> None:
    """Deterministic random weights: matrices, tokens and position embeddings ~ N(0, INIT_STD^2),
    biases 0, other vectors (LayerNorm scales, layer-scale gammas) 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * INIT_STD)
            elif name.endswith("bias"):
                param.zero_()
            else:
                param.fill_(1.0)


def _cached_pretrained(timm_name: str) -> torch.nn.Module:
    """Pretrained model from the local caches only; UserError telling how to fill them."""
    try:
        with hf_hub_offline():
            return _new_model(timm_name, pretrained=True)
    except UserError:
        raise
    except Exception as exc:  # offline misses surface as several hub/OS error types
        reason = f"{type(exc).__name__}"
    hub_file = _torch_hub_checkpoint(timm_name)
    if hub_file is not None:
        model = _new_model(timm_name, pretrained=False)
        load_weights_into(model, read_state_dict(hub_file), str(hub_file))
        return model
    raise UserError(
        f"pretrained weights for {timm_name} are not in the local cache ({reason}); download them once with network: "
        f"python -c \"import timm; timm.create_model('{timm_name}', pretrained=True)\", or pass --weights PATH "
        "(a local .pth/.safetensors state dict)")


def create_dino_model(timm_name: str, weights: str | os.PathLike | None = None,
                      random_init: bool = False) -> torch.nn.Module:
    """Build the frozen backbone ``timm_name`` (eval mode, no parameter gradients)."""
    if random_init and weights:
        raise UserError(f"{weights}: --weights and --random_init exclude each other; pass one of them")
    if random_init:
        warnings.warn(f"{timm_name}: RANDOM weights (random_init) -- features are meaningless; "
                      "use this for tests and demos only", stacklevel=3)
        model = _new_model(timm_name, pretrained=False)
        seeded_random_init(model)
    elif weights:
        model = _new_model(timm_name, pretrained=False)
        load_weights_into(model, read_state_dict(weights), str(weights))
    else:
        model = _cached_pretrained(timm_name)
    model.eval()
    model.requires_grad_(False)
    return model
