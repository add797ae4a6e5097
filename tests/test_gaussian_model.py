"""Gaussian model: PLY round trip, optimizer surgery in densify/prune, deformation identity at init."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from plyfile import PlyData

from arguments import OptimizationParams
from scene import optim_utils
from scene.gaussian_model import GaussianModel, nearest_neighbour_scale, subset_model
from scene.ply_io import read_gaussian_ply
from utils.errors import UserError


def _opt(**kw):
    return dataclasses.replace(OptimizationParams.defaults(), **kw)  # unchecked: tests use edge values (threshold 0)


def _model(n=50, feature_dim=0, deform=0, seed=0):
    rng = np.random.default_rng(seed)
    m = GaussianModel(3, feature_dim=feature_dim, deform_basis=deform)
    m.create_from_pcd(rng.normal(size=(n, 3)), rng.random((n, 3)), 2.0)
    with torch.no_grad():
        for p in m.params.values():
            p.add_(torch.randn_like(p) * 0.1)
    return m


def test_ply_round_trip_exact(tmp_path):
    m = _model(feature_dim=5, deform=4)
    m.save_ply(tmp_path / "p.ply")
    m2 = GaussianModel()
    m2.load_ply(tmp_path / "p.ply")
    assert m2.max_sh_degree == 3 and m2.feature_dim == 5 and m2.deform_basis == 4
    for k, p in m.params.items():
        assert torch.equal(p.detach(), m2.params[k].detach()), k


def test_ply_layout_matches_viewers(tmp_path):
    m = _model(feature_dim=2)
    m.save_ply(tmp_path / "p.ply")
    names = [p.name for p in PlyData.read(str(tmp_path / "p.ply"))["vertex"].properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(45)]
    expected += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "semantic_0", "semantic_1"]
    assert names == expected
    # f_rest is channel-major: f_rest_0..14 are the red coefficients
    v = PlyData.read(str(tmp_path / "p.ply"))["vertex"]
    assert np.allclose(v["f_rest_1"], m.params["f_rest"].detach()[:, 1, 0].numpy())
    assert np.allclose(v["f_rest_15"], m.params["f_rest"].detach()[:, 0, 1].numpy())


def test_corrupt_ply_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\nend_header\n\x00\x01")
    with pytest.raises(UserError, match="bad.ply"):
        read_gaussian_ply(bad)
    with pytest.raises(UserError, match="not found"):
        read_gaussian_ply(tmp_path / "missing.ply")


def test_initial_scales_from_three_nearest_neighbours():
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3], [10, 10, 10]], float)
    s = nearest_neighbour_scale(pts)
    assert s[0] == pytest.approx(np.sqrt((1 + 4 + 9) / 3))


def test_densify_and_prune_keep_optimizer_state_aligned():
    m = _model(n=40, feature_dim=3, deform=2)
    opt = _opt(densify_grad_threshold=0.0, percent_dense=0.01, min_opacity=0.3)
    m.training_setup(opt)
    loss = sum((p**2).sum() for p in m.params.values())
    loss.backward()
    m.optimizer.step()
    # mark every Gaussian as having a large gradient; half are big (split), half small (clone)
    with torch.no_grad():
        m.params["scaling"][:20] = np.log(0.001)
        m.params["scaling"][20:] = np.log(0.5)
        m.params["opacity"][:] = 2.0
    m.xyz_gradient_accum[:] = 1.0
    m.denom[:] = 1.0
    m.densify_and_prune(opt, extent=2.0, max_screen_size=None)
    assert m.num_points == 40 + 20 + 20  # 20 clones added, 20 split into 40 (originals removed)
    for g in m.optimizer.param_groups:
        p = g["params"][0]
        assert p is m.params[g["name"]]
        st = m.optimizer.state[p]
        assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    assert m.xyz_gradient_accum.shape[0] == m.num_points == m.max_radii2D.shape[0]
    # pruning by opacity
    with torch.no_grad():
        m.params["opacity"][:10] = -5.0
    m.densify_and_prune(_opt(densify_grad_threshold=1e9, min_opacity=0.3), extent=2.0, max_screen_size=None)
    assert m.num_points == 70


def test_reset_opacity_caps_and_zeroes_moments():
    m = _model()
    m.training_setup(_opt())
    (m.get_opacity.sum()).backward()
    m.optimizer.step()
    m.reset_opacity()
    assert float(m.get_opacity.detach().max()) <= 0.01 + 1e-6
    assert float(m.optimizer.state[m.params["opacity"]]["exp_avg"].abs().sum()) == 0


def test_deformation_starts_as_identity_and_moves_with_weights():
    m = GaussianModel(3, deform_basis=5)
    m.create_from_pcd(np.random.default_rng(0).normal(size=(30, 3)), np.full((30, 3), 0.5), 1.0)
    xyz, s, q = m.geometry_at(0.3)
    assert torch.allclose(xyz, m.get_xyz) and torch.allclose(s, m.get_scaling) and torch.allclose(q, m.get_rotation)
    with torch.no_grad():
        m.params["deform"][:, 2, 0] = 1.0  # bump centred at t = 0.5 moves x
    assert float((m.geometry_at(0.5)[0] - m.get_xyz)[:, 0].mean().detach()) == pytest.approx(1.0, rel=1e-5)
    assert float((m.geometry_at(0.0)[0] - m.get_xyz)[:, 0].abs().max().detach()) < 0.02


def test_deform_offsets_are_the_sum_of_weighted_bumps():
    """deform_offsets == sum_b phi_b(t) w_b, values and float64 gradcheck."""
    from scene.deformation import bump_activations, deform_offsets

    w = torch.randn(7, 5, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    phi = bump_activations(0.37, 5, "cpu", torch.float64)
    brute = sum(phi[b] * w[:, b] for b in range(5))
    torch.testing.assert_close(torch.cat(deform_offsets(w, 0.37), dim=1), brute, rtol=1e-14, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: torch.cat(deform_offsets(x, 0.37), dim=1), [w.requires_grad_(True)])


def test_bump_activations_are_cut_before_subnormal_values():
    """Far bumps are exactly 0 (below BUMP_CUTOFF), never subnormal (slow CPU arithmetic); the others are the
    plain Gaussian bumps."""
    from scene.deformation import BUMP_CUTOFF, bump_activations

    for dtype in (torch.float32, torch.float64):
        for num_basis in (2, 17, 40):
            centers = torch.linspace(0.0, 1.0, num_basis, dtype=torch.float64)
            for t in torch.linspace(0.0, 1.0, 97).tolist():
                phi = bump_activations(t, num_basis, "cpu", dtype)
                exact = torch.exp(-(((t - centers) * max(num_basis - 1, 1)) ** 2))
                assert torch.all((phi == 0) | (phi >= torch.finfo(dtype).tiny))
                # the cut and the values, up to the rounding of the centres and of (t - c) / sigma in dtype: x^2
                # (x <= ~4.1 before the cut) moves by about 2 x (B - 1) eps
                rtol = 16 * num_basis * torch.finfo(dtype).eps
                clear = (exact - BUMP_CUTOFF).abs() > rtol * BUMP_CUTOFF
                assert torch.all(((phi == 0) == (exact < BUMP_CUTOFF))[clear])
                torch.testing.assert_close(phi.double()[clear], torch.where(exact < BUMP_CUTOFF, 0.0, exact)[clear],
                                           rtol=rtol, atol=0.0)
            assert bump_activations(0.0, num_basis, "cpu", dtype).max() == 1.0


def test_subset_model():
    m = _model(n=10, feature_dim=2)
    keep = torch.zeros(10, dtype=torch.bool)
    keep[[1, 3]] = True
    s = subset_model(m, keep)
    assert s.num_points == 2 and torch.equal(s.get_semantic, m.get_semantic[keep].detach())


def test_make_adam_follows_the_default_adam_update():
    g = torch.Generator().manual_seed(0)
    start, grads = torch.randn(50, 3, generator=g), [torch.randn(50, 3, generator=g) for _ in range(5)]

    def run(make):
        p = torch.nn.Parameter(start.clone())
        opt = make([{"params": [p], "lr": 0.01, "name": "xyz"}], lr=0.0, eps=1e-15)
        for grad in grads:
            p.grad = grad.clone()
            opt.step()
        return p.detach()

    fast = run(optim_utils.make_adam)
    assert not torch.equal(fast, start)
    torch.testing.assert_close(fast, run(torch.optim.Adam), rtol=1e-6, atol=1e-7)


def test_densification_stats_equal_the_indexed_update():
    """The dense statistics (no boolean indexing) give the graphdeco indexed update's values exactly."""
    m = _model(n=64)
    gen = torch.Generator().manual_seed(3)
    accum, denom, radii_max = m.xyz_gradient_accum.clone(), m.denom.clone(), m.max_radii2D.clone()
    for _ in range(3):
        vis = torch.rand(64, generator=gen) > 0.4
        radii = torch.where(vis, torch.randint(1, 40, (64,), generator=gen), 0).int()
        pts = torch.zeros(64, 2, requires_grad=True)
        grad = torch.randn(64, 2, generator=gen)
        grad[~vis] = float("nan")  # hidden rows must not leak into the sums, whatever their gradient
        pts.grad = grad
        m.update_max_radii(radii, vis)
        m.add_densification_stats(pts, vis, 80, 60)
        scale = torch.tensor([40.0, 30.0])
        accum[vis] += (grad[vis] * scale).norm(dim=-1, keepdim=True)
        denom[vis] += 1
        radii_max[vis] = torch.maximum(radii_max[vis], radii[vis].float())
    assert torch.equal(m.xyz_gradient_accum, accum) and torch.equal(m.denom, denom)
    assert torch.equal(m.max_radii2D, radii_max) and m.max_radii2D.max() > 0
