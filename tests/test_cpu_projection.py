"""The C++ projection and SH colour (backends/cpu_projection.py) == the torch reference.

project_gaussians and eval_sh are the reference: values and gradients on random scenes with
culled, near-plane, off-screen, frustum-clamped and degenerate Gaussians, float64 gradcheck on
tiny scenes, and render() through the cpu backend with and without the fused kernels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gaussian_renderer
from gaussian_renderer.backends import Backend, cpu_backend, cpu_projection
from gaussian_renderer.projection import project_gaussians
from scene.gaussian_model import GaussianModel
from tests.test_antialiasing import _camera, _pipe
from utils.general_utils import normalize
from utils.sh_utils import eval_sh

W, H = 40, 30
FLOAT32_RTOL = 1e-6  # float32 agreement, relative to the largest magnitude (values and gradients)


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_backend.extension_available():
        pytest.skip("the C++ CPU rasterizer could not be built or loaded here (see the warning)")


def edge_scene(n: int, seed: int, dtype=torch.float64):
    """(means, scales, quats, viewmat, K) in front of the test camera, with every edge case in a few rows:
    behind the camera, inside the near plane, beyond the Jacobian's frustum clamp, off screen,
    flat (one or three zero scales), needle-thin, huge, unnormalised and zero quaternions."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    means = (rand(n, 3) - 0.5) * torch.tensor([2.0, 1.5, 1.0], dtype=torch.float64)
    scales = rand(n, 3) * 0.1 + 0.005
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    means[0:3, 2] = torch.tensor([-4.5, -4.0, -3.85])  # behind the camera / within 0.2 of it
    means[3, 2] = -3.8 + 1e-3  # just beyond the near plane
    means[4:6, 0] = torch.tensor([4.0, -3.5])  # x / z beyond 1.3x the half field of view: clamped Jacobian
    means[6:8, 1] = torch.tensor([6.0, -9.0])  # off screen
    scales[8, 2] = 0.0  # flat
    scales[9] = 0.0  # a point
    scales[10] = torch.tensor([2.0, 1e-4, 1e-4])  # a needle
    scales[11] = 5.0  # covers the image
    quats[12] *= 50.0
    quats[13] = 0.0
    camera = _camera()
    return tuple(t.to(dtype) for t in (means, scales, quats, camera.viewmat, camera.K))


def projection_and_grads(fn, scene, antialiased: bool, seed: int = 1):
    """fn(scene) -> (Projected, grads of a random weighting of every output w.r.t. means, scales, quats)."""
    means, scales, quats, viewmat, K = scene
    leaves = [t.clone().requires_grad_(True) for t in (means, scales, quats)]
    p = fn(*leaves, viewmat, K, W, H, antialiased=antialiased)
    g = torch.Generator().manual_seed(seed)
    outs = (p.means2d, p.conics, p.depths) + ((p.compensation,) if antialiased else ())
    sum(((t * torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).sum() for t in outs)).backward()
    return p, [t.grad for t in leaves]


def assert_close_scaled(got: torch.Tensor, ref: torch.Tensor, rtol: float, name: str) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, name
    err = (got - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= rtol * max(1.0, ref.abs().max().item()), (name, err)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_matches_the_torch_projection(dtype, antialiased):
    scene = edge_scene(300, seed=2, dtype=dtype)
    p, grads = projection_and_grads(cpu_projection.project, scene, antialiased)
    r, grads_r = projection_and_grads(project_gaussians, scene, antialiased)
    live = r.radii > 0
    assert 150 < live.sum() < 295 and not live[:3].any() and not live[6:8].any()  # the edge rows are there
    assert torch.equal(p.radii, r.radii) and p.radii.dtype == torch.int32
    assert (p.compensation is None) == (not antialiased) and p.tile_radii is None
    rtol = 1e-12 if dtype == torch.float64 else FLOAT32_RTOL
    for name in ("means2d", "conics", "depths") + (("compensation",) if antialiased else ()):
        assert_close_scaled(getattr(p, name), getattr(r, name), rtol, name)
    for name, got, ref in zip(("means", "scales", "quats"), grads, grads_r):
        assert torch.isfinite(got).all(), name
        assert_close_scaled(got, ref, 100 * rtol, name)


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_gradcheck_float64(antialiased):
    means, scales, quats, viewmat, K = edge_scene(16, seed=3)
    # gradcheck needs smooth points: no zero quaternion or zero scale (torch's gradients there are one-sided)
    quats[13] = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    scales = scales.clamp_min(1e-3)

    def f(m, s, q):
        p = cpu_projection.project(m, s, q, viewmat, K, W, H, antialiased=antialiased)
        return (p.means2d, p.conics, p.depths) + ((p.compensation,) if antialiased else ())

    inputs = [t.clone().requires_grad_(True) for t in (means, scales, quats)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6)


def test_projection_is_the_same_on_any_number_of_threads():
    scene = edge_scene(20_000, seed=4, dtype=torch.float32)  # enough Gaussians for several threads
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            p, grads = projection_and_grads(cpu_projection.project, scene, True)
            results.append((p.means2d, p.conics, p.radii, p.compensation, *grads))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_camera_gradients_go_through_the_torch_projection():
    means, scales, quats, viewmat, K = edge_scene(30, seed=5)
    grads = []
    for fn in (cpu_projection.project, project_gaussians):
        vm = viewmat.clone().requires_grad_(True)
        p = fn(means, scales, quats, vm, K, W, H)
        (p.means2d.sum() + p.conics.sum()).backward()
        grads.append(vm.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_bad_inputs_name_the_argument():
    means, scales, quats, viewmat, K = edge_scene(16, seed=6)
    ext = cpu_backend._extension()
    consts = cpu_projection.PROJECTION_CONSTANTS
    with pytest.raises(RuntimeError, match="quats must have shape"):
        ext.project_forward(means, scales, quats[:, :3].contiguous(), viewmat, K, W, H, False, consts, 1)
    with pytest.raises(RuntimeError, match="viewmat must be"):
        ext.project_forward(means, scales, quats, viewmat.float(), K, W, H, False, consts, 1)
    with pytest.raises(RuntimeError, match=r"K >= \(degree \+ 1\)\^2"):
        ext.sh_forward(torch.zeros(16, 4, 3, dtype=torch.float64), means, 2, cpu_projection.SH_CONSTANTS, 1e-12, 1)


def sh_scene(n: int, seed: int, dtype=torch.float64):
    """sh [N, 16, 3] (some colours below 0, i.e. clamped) and directions of any length, one of them zero."""
    g = torch.Generator().manual_seed(seed)
    sh = torch.randn(n, 16, 3, generator=g, dtype=torch.float64) * 0.4
    sh[:, 0] *= 6.0  # DC terms that reach below -0.5 / SH_C0: clamped colours at every degree
    dirs = torch.randn(n, 3, generator=g, dtype=torch.float64) * 3.0
    dirs[0] = 0.0
    return sh.to(dtype), dirs.to(dtype)


def sh_and_grad(fn, degree, sh, dirs):
    leaf = sh.clone().requires_grad_(True)
    out = fn(degree, leaf, dirs)
    weights = torch.linspace(0.5, 1.5, out.numel(), dtype=torch.float64).reshape(out.shape).to(out.dtype)
    (out * weights).sum().backward()
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_matches_eval_sh(degree, dtype):
    sh, dirs = sh_scene(400, seed=degree, dtype=dtype)
    out, grad = sh_and_grad(cpu_projection.sh_to_color, degree, sh, dirs)
    ref, grad_r = sh_and_grad(eval_sh, degree, sh, normalize(dirs))
    assert (ref == 0).any() and (ref > 0).any()  # both sides of the clamp
    rtol = 1e-12 if dtype == torch.float64 else FLOAT32_RTOL
    assert_close_scaled(out, ref, rtol, "colors")
    assert_close_scaled(grad, grad_r, rtol, "sh")
    assert (grad[:, (degree + 1) ** 2:] == 0).all()


@pytest.mark.parametrize("degree", [0, 3])
def test_sh_gradcheck_float64(degree):
    sh, dirs = sh_scene(6, seed=10 + degree)  # colours on both sides of the clamp, none within eps of it
    assert torch.autograd.gradcheck(lambda s: cpu_projection.sh_to_color(degree, s, dirs),
                                    [sh.clone().requires_grad_(True)], eps=1e-7, atol=1e-6)


def test_direction_gradients_go_through_eval_sh():
    sh, dirs = sh_scene(20, seed=7)
    grads = []
    for fn in (cpu_projection.sh_to_color, lambda d, s, v: eval_sh(d, s, normalize(v))):
        v = dirs.clone().requires_grad_(True)
        fn(2, sh, v).sum().backward()
        grads.append(v.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def _model(deform: bool) -> GaussianModel:
    rng = np.random.default_rng(3)
    n = 80
    m = GaussianModel(3, feature_dim=4, deform_basis=4 if deform else 0)
    m.create_from_pcd(rng.uniform(-1.2, 1.2, size=(n, 3)) * [1.0, 0.8, 0.5], rng.random((n, 3)), 1.0)
    with torch.no_grad():
        m.params["scaling"].copy_(torch.log(torch.as_tensor(rng.uniform(0.02, 0.15, size=(n, 3)))))
        m.params["opacity"].copy_(torch.as_tensor(rng.uniform(-2.0, 2.0, size=(n, 1))))
        m.params["rotation"].copy_(torch.as_tensor(rng.normal(size=(n, 4))))
        m.params["f_rest"].copy_(torch.as_tensor(rng.normal(0.0, 0.1, size=tuple(m.params["f_rest"].shape))))
        if deform:
            m.params["deform"].copy_(torch.as_tensor(rng.normal(0.0, 0.05, size=tuple(m.params["deform"].shape))))
    m.active_sh_degree = 3
    return m


@pytest.mark.parametrize("deform", [False, True])
@pytest.mark.parametrize("antialiasing", [False, True])
def test_render_through_the_fused_kernels_equals_the_torch_path(monkeypatch, antialiasing, deform):
    """render() with the cpu backend's fused projection + SH == with the torch ones: image, depth,
    features, radii, parameter gradients and the screen-space gradient densification reads."""
    fused = gaussian_renderer.get_backend("cpu", "cpu")
    assert fused.project is cpu_projection.project and fused.sh_to_color is cpu_projection.sh_to_color
    results = {}
    for kind, engine in (("fused", fused), ("torch", Backend(fused.rasterize))):
        monkeypatch.setattr(gaussian_renderer, "get_backend", lambda name, device_type, e=engine: e)
        model = _model(deform)
        pkg = gaussian_renderer.render(_camera(), model, _pipe("cpu", antialiasing), torch.tensor([0.1, 0.2, 0.3]),
                                       time=0.4)
        g = torch.Generator().manual_seed(2)
        loss = (pkg["render"] * torch.rand(pkg["render"].shape, generator=g)).sum() + pkg["depth"].sum() * 0.01
        (loss + pkg["feature_map"].square().sum()).backward()
        results[kind] = pkg, {k: p.grad.clone() for k, p in model.params.items()}
    (got, g_got), (ref, g_ref) = results["fused"], results["torch"]
    for key in ("render", "depth", "alpha", "feature_map"):
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-5)
    assert torch.equal(got["radii"], ref["radii"]) and got["visibility_filter"].sum() >= 40
    torch.testing.assert_close(got["viewspace_points"].grad, ref["viewspace_points"].grad, rtol=1e-4, atol=1e-6)
    assert g_ref.keys() == g_got.keys() and ("deform" in g_ref) == deform
    for k, ref_grad in g_ref.items():
        assert_close_scaled(g_got[k], ref_grad, 1e-4, k)
