"""Optimizer-state surgery for a changing number of Gaussians.

Per-Gaussian parameters live in a dict ``name -> nn.Parameter`` whose names equal the
Adam param-group names. When Gaussians are pruned, cloned or reset, the Adam moments
must follow their rows; these helpers do that once for every attribute.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from scene.adam import Adam


def make_adam(groups: list[dict], **kwargs) -> Adam:
    """Adam with torch's fused kernel where this build has one for the parameters' device (see scene/adam.py)."""
    return Adam(groups, fused=True, **kwargs)


class SparseGaussianAdam(Adam):
    """Adam that, given the view's visibility, updates only the visible Gaussians (``--optimizer_type sparse_adam``).

    Every param group holds one per-Gaussian tensor [N, ...]. ``step(visible)`` moves the moments
    and values of the rows where ``visible`` [N] bool is True with Adam's rule (bias correction by the
    group's step count, which advances every step); rows of Gaussians not seen in the view keep their
    values and moments untouched, as in graphdeco's SparseGaussianAdam. ``step()`` without
    ``visible`` is plain Adam. The state has the dense Adam's layout, so checkpoints and the row
    surgery below work unchanged.
    """

    @torch.no_grad()
    def step(self, visible: torch.Tensor | None = None):  # type: ignore[override]
        if visible is None:
            return super().step()
        for group in self.param_groups:
            (param,) = group["params"]
            if param.grad is None:  # replaced by densification or an opacity reset this iteration
                continue
            if param.shape[0] != visible.shape[0]:
                raise ValueError(f"{group['name']}: {param.shape[0]} rows but visibility of {visible.shape[0]} Gaussians")
            state = self.state.setdefault(param, self._new_state(param))
            state["step"] += 1
            t = float(state["step"])
            (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
            rows = visible.nonzero().squeeze(1)  # gather/scatter: the cost follows the visible count
            grad = param.grad[rows]
            m = state["exp_avg"][rows].mul_(b1).add_(grad, alpha=1 - b1)
            v = state["exp_avg_sq"][rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            state["exp_avg"][rows], state["exp_avg_sq"][rows] = m, v
            denom = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(eps)
            param[rows] = param[rows] - (lr / (1 - b1 ** t)) * m / denom
        return None


def make_optimizer(groups: list[dict], kind: str = "default", **kwargs) -> Adam:
    """``--optimizer_type``: Adam over every Gaussian (default) or only the visible ones (sparse_adam)."""
    return SparseGaussianAdam(groups, **kwargs) if kind == "sparse_adam" else make_adam(groups, **kwargs)


def _replace(optimizer: Adam, name: str, new: torch.Tensor, state_fn) -> nn.Parameter:
    """Swap the parameter of group ``name`` for ``new``; ``state_fn(old_state_tensor)`` maps the Adam moments."""
    for group in optimizer.param_groups:
        if group["name"] != name:
            continue
        old = group["params"][0]
        state = optimizer.state.pop(old, None)
        param = nn.Parameter(new.requires_grad_(True))
        if state is not None:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = state_fn(state[key])
            optimizer.state[param] = state
        group["params"][0] = param
        return param
    raise KeyError(name)


def prune_params(optimizer, params: dict[str, nn.Parameter], keep: torch.Tensor) -> dict[str, nn.Parameter]:
    """Keep rows where ``keep`` [N] bool is True, in parameters and Adam moments."""
    return {
        name: _replace(optimizer, name, p.detach()[keep], lambda s: s[keep]) for name, p in params.items()
    }


def append_params(optimizer, params: dict[str, nn.Parameter], extra: dict[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    """Append rows ``extra[name]`` (same trailing shape) to every parameter; new moments are zero."""
    return {
        name: _replace(
            optimizer,
            name,
            torch.cat([p.detach(), extra[name]], dim=0),
            lambda s, e=extra[name]: torch.cat([s, torch.zeros_like(e)], dim=0),
        )
        for name, p in params.items()
    }


def reset_param(optimizer, name: str, value: torch.Tensor) -> nn.Parameter:
    """Replace one parameter's values and zero its Adam moments."""
    return _replace(optimizer, name, value, torch.zeros_like)


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int, delay_steps: int = 0, delay_mult: float = 1.0) -> float:
    """Log-linear decay from lr_init to lr_final over max_steps, with an optional sine warm-up of delay_steps."""
    if step < 0 or (lr_init == 0.0 and lr_final == 0.0):
        return 0.0
    delay = 1.0
    if delay_steps > 0:
        delay = delay_mult + (1 - delay_mult) * math.sin(0.5 * math.pi * min(step / delay_steps, 1.0))
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return delay * math.exp((1 - t) * math.log(lr_init) + t * math.log(lr_final))
