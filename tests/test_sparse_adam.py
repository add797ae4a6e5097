"""--optimizer_type sparse_adam: Adam on the visible Gaussians only; same quality as default Adam."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import train
from scene.optim_utils import SparseGaussianAdam, make_optimizer, prune_params
from scene.synthetic_blender import make_synthetic_blender


def _adam_reference(p, grads, lr, b1=0.9, b2=0.999, eps=1e-15):
    """Textbook Adam on one tensor over a list of gradients (float64): (values, m, v)."""
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1 ** t) * m / (v.sqrt() / math.sqrt(1 - b2 ** t) + eps)
    return p, m, v


def test_only_visible_rows_move_and_they_follow_adam():
    gen = torch.Generator().manual_seed(0)
    n = 7
    start = {"xyz": torch.randn(n, 3, generator=gen, dtype=torch.float64),
             "f_rest": torch.randn(n, 15, 3, generator=gen, dtype=torch.float64)}
    params = {k: nn.Parameter(v.clone()) for k, v in start.items()}
    opt = SparseGaussianAdam([{"params": [p], "lr": 0.01, "name": k} for k, p in params.items()], lr=0.0, eps=1e-15)
    visible = torch.tensor([True, False, True, True, False, False, True])
    grads = {k: [torch.randn(v.shape, generator=gen, dtype=torch.float64) for _ in range(3)] for k, v in start.items()}
    for step in range(3):
        for k, p in params.items():
            p.grad = grads[k][step].clone()
        opt.step(visible)
    for k, p in params.items():
        state = opt.state[p]
        assert torch.equal(p.detach()[~visible], start[k][~visible])  # unseen Gaussians untouched ...
        assert not state["exp_avg"][~visible].any() and not state["exp_avg_sq"][~visible].any()  # ... moments too
        ref_p, ref_m, ref_v = _adam_reference(start[k][visible], [g[visible] for g in grads[k]], 0.01)
        torch.testing.assert_close(p.detach()[visible], ref_p, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state["exp_avg"][visible], ref_m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state["exp_avg_sq"][visible], ref_v, rtol=1e-12, atol=1e-12)


def test_all_visible_equals_torch_adam_and_row_surgery_still_works():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, generator=gen)
    a, b = nn.Parameter(x.clone()), nn.Parameter(x.clone())
    sparse = make_optimizer([{"params": [a], "lr": 0.05, "name": "xyz"}], "sparse_adam", lr=0.0, eps=1e-15)
    dense = torch.optim.Adam([{"params": [b], "lr": 0.05, "name": "xyz"}], lr=0.0, eps=1e-15)
    for _ in range(4):
        g = torch.randn(5, 3, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        sparse.step(torch.ones(5, dtype=torch.bool))
        dense.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    kept = prune_params(sparse, {"xyz": a}, torch.tensor([True, False, True, True, False]))["xyz"]
    assert kept.shape == (3, 3) and sparse.state[kept]["exp_avg"].shape == (3, 3)


def test_visibility_of_another_size_is_refused():
    p = nn.Parameter(torch.zeros(4, 3))
    opt = SparseGaussianAdam([{"params": [p], "lr": 0.1, "name": "xyz"}], lr=0.0)
    p.grad = torch.ones(4, 3)
    with pytest.raises(ValueError, match="xyz: 4 rows but visibility of 5"):
        opt.step(torch.ones(5, dtype=torch.bool))


def test_sparse_adam_test_psnr_within_0_3_db_of_default(tmp_path):
    scene = make_synthetic_blender(tmp_path / "scene", n_train=12, n_test=4, width=32, height=32, seed=0)
    its = 400
    common = ["-s", str(scene), "--eval", "--iterations", str(its), "--test_iterations", str(its), "--save_iterations",
              str(its), "--densify_from_iter", "100", "--densify_until_iter", "300", "--opacity_reset_interval", "100000",
              "--sh_increase_interval", "200", "--position_lr_max_steps", str(its), "--quiet"]
    psnr = {kind: train.main(common + ["-m", str(tmp_path / kind), "--optimizer_type", kind])["test"]["psnr"]
            for kind in ("default", "sparse_adam")}
    assert psnr["default"] > 22, psnr  # a trained model, not two equally failed runs
    assert abs(psnr["sparse_adam"] - psnr["default"]) <= 0.3, psnr
