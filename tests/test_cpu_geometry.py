"""The C++ geometry kernel (backends/cpu_projection.geometry) == scene.deformation.gaussian_geometry.

Values and gradients against the torch code, with and without deformation weights, at bump activations that
are cut to 0, with unnormalised, tiny (below NORM_EPS) and zero quaternions; float64 gradcheck on a tiny
scene; bad inputs named; and render() through the cpu backend with and without the kernel.
"""
from __future__ import annotations

import pytest
import torch

import gaussian_renderer
from gaussian_renderer.backends import Backend, cpu_backend, cpu_projection
from scene.deformation import gaussian_geometry
from tests.test_antialiasing import _camera, _pipe
from tests.test_gaussian_model import _model
from utils.general_utils import NORM_EPS

FLOAT32_RTOL = 1e-6  # float32 agreement, relative to the largest magnitude (values and gradients)


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_backend.extension_available():
        pytest.skip("the C++ CPU rasterizer could not be built or loaded here (see the warning)")


def params(n: int, bumps: int, seed: int, dtype=torch.float64):
    """(xyz, log_scales, quats, weights or None) with edge rows: a zero quaternion, one below NORM_EPS,
    one of norm 50."""
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(n, 3, generator=g, dtype=torch.float64)
    log_scales = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.5 - 3.0
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    quats[0] = 0.0
    quats[1] = torch.tensor([1.0, -1.0, 0.5, 0.0]) * NORM_EPS * 0.1
    quats[2] *= 50.0
    weights = torch.randn(n, bumps, 10, generator=g, dtype=torch.float64) * 0.1 if bumps else None
    if weights is not None:
        weights[:3, :, 3:7] = 0.0  # keep the edge quaternions as they are
    return tuple(None if t is None else t.to(dtype) for t in (xyz, log_scales, quats, weights))


def values_and_grads(fn, p, t: float, seed: int = 1):
    leaves = [None if x is None else x.clone().requires_grad_(True) for x in p]
    out = fn(*leaves, t)
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in out]
    loss = sum((o * w).sum() for o, w in zip(out, weights))
    used = [x for x in leaves if x is not None]
    return [o.detach() for o in out], list(torch.autograd.grad(loss, used))


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rtol: float, what: str):
    scale = max(float(b.abs().max()), 1e-30)
    err = float((a - b).abs().max())
    assert err <= rtol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("bumps", [0, 9])
@pytest.mark.parametrize("t", [0.0, 0.41, 1.0])
def test_values_and_gradients_match_torch(bumps, t):
    for dtype, rtol in ((torch.float64, 1e-13), (torch.float32, FLOAT32_RTOL)):
        p = params(300, bumps, seed=bumps + int(10 * t), dtype=dtype)
        want, want_grads = values_and_grads(gaussian_geometry, p, t)
        got, got_grads = values_and_grads(cpu_projection.geometry, p, t)
        for name, a, b in zip(("means", "scales", "quats"), got, want):
            assert a.dtype == dtype
            assert_close_rel(a, b, rtol, f"{dtype} {name}")
        assert float(got[2][0].abs().max()) == 0.0  # a zero quaternion stays zero
        for name, a, b in zip(("xyz", "log_scales", "quats", "weights"), got_grads, want_grads):
            assert_close_rel(a, b, rtol, f"{dtype} d_{name}")
        if bumps:  # bumps far from t are cut to exactly 0: so are their weights' gradients
            assert (got_grads[3].abs().sum(dim=(0, 2)) == 0).any()


@pytest.mark.parametrize("bumps", [0, 4])
def test_float64_gradcheck(bumps):
    xyz, log_scales, quats, weights = params(6, bumps, seed=7)
    quats[0] = torch.tensor([0.3, -0.2, 0.9, 0.1])  # gradcheck needs differentiable points: no zero quaternion
    quats[1] = torch.tensor([1.0, 0.5, -0.5, 2.0])
    leaves = [x.requires_grad_(True) for x in (xyz, log_scales, quats) + ((weights,) if bumps else ())]
    fn = (lambda a, b, c, d: cpu_projection.geometry(a, b, c, d, 0.45)) if bumps else \
        (lambda a, b, c: cpu_projection.geometry(a, b, c, None, 0.45))
    assert torch.autograd.gradcheck(fn, leaves)


def test_undeformed_values_are_the_activations_exactly():
    xyz, log_scales, quats, _ = params(64, 0, seed=3, dtype=torch.float32)
    means, scales, unit = cpu_projection.geometry(xyz, log_scales, quats)
    assert torch.equal(means, xyz)
    torch.testing.assert_close(scales, torch.exp(log_scales), rtol=FLOAT32_RTOL, atol=0)
    torch.testing.assert_close(unit.norm(dim=1)[2:], torch.ones(62), rtol=1e-6, atol=0)


def test_bad_inputs_are_named():
    ext = cpu_backend._extension()
    xyz, log_scales, quats, weights = params(5, 3, seed=0)
    phi = torch.ones(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="weights must be"):
        ext.geometry_forward(xyz, log_scales, quats, weights[:, :, :9].contiguous(), phi, NORM_EPS, 1)
    with pytest.raises(RuntimeError, match="phi must have shape"):
        ext.geometry_forward(xyz, log_scales, quats, weights, phi[:2].contiguous(), NORM_EPS, 1)
    with pytest.raises(RuntimeError, match="quats must be"):
        ext.geometry_forward(xyz, log_scales, quats.float(), weights, phi, NORM_EPS, 1)
    with pytest.raises(RuntimeError, match="come together"):
        ext.geometry_forward(xyz, log_scales, quats, weights, None, NORM_EPS, 1)


@pytest.mark.parametrize("deform", [0, 5])
def test_render_with_and_without_the_kernel(monkeypatch, deform):
    """render() through the cpu backend gives the torch geometry's image and gradients."""
    model = _model(n=80, deform=deform, seed=2)
    with torch.no_grad():
        model.params["xyz"].mul_(0.3)
        model.params["xyz"][:, 2] += 0.5
        if deform:
            model.params["deform"].normal_(0.0, 0.05, generator=torch.Generator().manual_seed(1))
    cam = _camera()
    cam.time = 0.6
    bg = torch.zeros(3)

    def run():
        for p in model.params.values():
            p.grad = None
        pkg = gaussian_renderer.render(cam, model, _pipe("cpu", False), bg)
        (pkg["render"] * torch.linspace(0.5, 1.5, pkg["render"].numel()).reshape(pkg["render"].shape)).sum().backward()
        return pkg["render"].detach(), {k: p.grad.clone() for k, p in model.params.items() if p.grad is not None}

    fused_image, fused_grads = run()
    plain = gaussian_renderer.backends.get_backend("cpu", "cpu")
    monkeypatch.setattr(gaussian_renderer, "get_backend",
                        lambda *a, **k: Backend(plain.rasterize, plain.project, plain.sh_to_color))
    image, grads = run()
    assert fused_image.abs().max() > 0.05
    torch.testing.assert_close(fused_image, image, rtol=1e-5, atol=1e-6)
    assert fused_grads.keys() == grads.keys() and ("deform" in grads) == bool(deform)
    for k in grads:
        assert_close_rel(fused_grads[k], grads[k], 1e-4, f"d_{k}")
