"""gsplat backend: its plumbing on any machine, its CUDA kernels where a GPU is present.

On a CPU, gsplat's CUDA entry points are swapped for gsplat's own pure-torch
binning (``gsplat.cuda._torch_impl``) plus a stand-in for ``rasterize_to_pixels``
that checks gsplat's input contract and composites the tile lists it is handed.
That pins down what our backend sends gsplat (shapes, dtypes, per-axis radii,
depth keys, tile offsets) and how it reads the result back.

gsplat clamps alpha at 0.999 and stops at T <= 1e-4 in float32 (the contract:
0.99 and T < 1e-4, double transmittance), so the scenes keep opacity * exp(power)
below 0.99 and use few layers; the tolerance covers float32 + fast ``__expf``.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from gaussian_renderer.backends import gsplat_backend, torch_backend
from tests.raster_reference import image_and_grads, random_projected

VALUE_TOL = 1e-4
GRAD_RTOL = 1e-3  # relative to the largest gradient of each kind


def _require_gsplat():
    if not torch.cuda.is_available():
        pytest.skip("gsplat backend needs CUDA; no CUDA device here")
    if not gsplat_backend.gsplat_available():
        pytest.skip("gsplat is not installed (pip install gsplat==1.5.3) or failed to import")


@pytest.mark.parametrize("n,width,height,channels", [(300, 70, 45, 3), (500, 64, 48, 19), (200, 37, 29, 1)])
def test_gsplat_matches_torch_backend(n, width, height, channels):
    _require_gsplat()
    scene = list(random_projected(n, width, height, channels, dtype=torch.float32, seed=n))
    scene[2] = scene[2].clamp_max(0.95)  # keep alpha below both clamps (0.99 / 0.999)
    img, alpha, grads = image_and_grads(gsplat_backend.rasterize, scene, width, height, seed=3, device="cuda")
    img_r, alpha_r, grads_r = image_and_grads(torch_backend.rasterize, scene, width, height, seed=3, device="cuda")
    assert img.shape == img_r.shape == (channels, height, width)
    assert (img - img_r).abs().max() <= VALUE_TOL
    assert (alpha - alpha_r).abs().max() <= VALUE_TOL
    for got, ref in zip(grads, grads_r):
        assert (got - ref).abs().max() <= GRAD_RTOL * max(1.0, ref.abs().max().item())


def test_gsplat_means2d_gradient_reaches_the_leaf():
    _require_gsplat()
    scene = random_projected(100, 40, 30, 3, dtype=torch.float32, seed=1)
    means2d = scene[0].clone().cuda().requires_grad_(True)
    rest = [t.cuda() for t in scene[1:]]
    image, alpha = gsplat_backend.rasterize(means2d, *rest, 40, 30)
    (image.sum() + alpha.sum()).backward()
    assert means2d.grad is not None and means2d.grad.abs().sum() > 0


def _rasterize_to_pixels_stand_in(means2d, conics, colors, opacities, width, height, tile, isect_offsets, flatten_ids):
    """CPU stand-in for gsplat's ``rasterize_to_pixels``: asserts the input contract of its
    CUDA kernel, decodes its per-tile lists and composites them with the torch backend."""
    n = means2d.shape[1]
    tiles_y, tiles_x = isect_offsets.shape[-2:]
    assert means2d.shape == (1, n, 2) and conics.shape == (1, n, 3) and opacities.shape == (1, n)
    assert colors.ndim == 3 and colors.shape[:2] == (1, n)
    assert all(t.dtype == torch.float32 for t in (means2d, conics, colors, opacities))
    assert isect_offsets.shape == (1, tiles_y, tiles_x) and isect_offsets.dtype == torch.int32
    assert flatten_ids.dtype == torch.int32 and tiles_y * tile >= height and tiles_x * tile >= width
    # gsplat stores each tile's first pair; the next tile's start (or the total) ends it.
    offsets = torch.cat([isect_offsets.flatten().long(), torch.tensor([flatten_ids.numel()])])
    image, alpha = torch_backend.composite_binned(
        means2d[0], conics[0], opacities[0], colors[0], flatten_ids.long(), offsets, width, height, tile
    )
    return image.permute(1, 2, 0)[None], alpha.permute(1, 2, 0)[None]


@pytest.fixture
def gsplat_on_cpu(monkeypatch):
    """Route gsplat's CUDA entry points to its torch reference binning and the stand-in above."""
    impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat is not installed (pip install gsplat==1.5.3)")
    wrapper = importlib.import_module("gsplat.cuda._wrapper")
    monkeypatch.setattr(wrapper, "isect_tiles", impl._isect_tiles)
    monkeypatch.setattr(wrapper, "isect_offset_encode", impl._isect_offset_encode)
    monkeypatch.setattr(wrapper, "rasterize_to_pixels", _rasterize_to_pixels_stand_in)


@pytest.mark.parametrize("n,width,height,channels", [(120, 70, 45, 3), (150, 64, 48, 19), (80, 37, 29, 1)])
def test_gsplat_backend_plumbing_on_cpu(gsplat_on_cpu, n, width, height, channels):
    scene = random_projected(n, width, height, channels, dtype=torch.float32, seed=n)
    culled = scene[5].clone()
    culled[::7] = 0  # radius 0 must drop a Gaussian in gsplat's binning too
    scene = (*scene[:5], culled)

    img, alpha, grads = image_and_grads(gsplat_backend.rasterize, scene, width, height, seed=5)
    img_r, alpha_r, grads_r = image_and_grads(torch_backend.rasterize, scene, width, height, seed=5)
    assert img.shape == img_r.shape == (channels, height, width) and alpha.shape == (1, height, width)
    assert alpha_r.max() > 0.5  # the scene covers the image
    torch.testing.assert_close(img, img_r, rtol=0, atol=1e-6)
    torch.testing.assert_close(alpha, alpha_r, rtol=0, atol=1e-6)
    for got, ref in zip(grads, grads_r):  # means2d.grad included: densification reads it
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("failure", ["build error", "no toolkit"])
def test_gsplat_that_cannot_build_its_kernels_is_reported_and_skipped(monkeypatch, failure):
    pytest.importorskip("gsplat.cuda._wrapper", reason="gsplat is not installed (pip install gsplat==1.5.3)")
    import sys
    import types

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if failure == "build error":
        class _FailingModule(types.ModuleType):
            def __getattr__(self, name):
                raise RuntimeError("Error building extension 'gsplat_cuda'")

        monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", _FailingModule("gsplat.cuda._backend"))
        expected = "could not build its CUDA kernels"
    else:
        monkeypatch.setitem(sys.modules, "gsplat.cuda._backend", types.SimpleNamespace(_C=None))
        expected = "no CUDA toolkit"
    gsplat_backend.gsplat_available.cache_clear()
    try:
        with pytest.warns(UserWarning, match=expected):
            assert gsplat_backend.gsplat_available() is False
    finally:
        gsplat_backend.gsplat_available.cache_clear()


def test_auto_on_cuda_without_gsplat_warns_and_uses_torch(monkeypatch):
    from gaussian_renderer import backends

    monkeypatch.setattr(gsplat_backend, "gsplat_available", lambda: False)
    monkeypatch.setattr(backends, "_warned", set())
    with pytest.warns(UserWarning, match="gsplat unavailable; using the slow torch backend"):
        assert backends.get_rasterizer("auto", "cuda") is torch_backend.rasterize


def test_support_radii_cover_the_contract_tiles():
    """gsplat bins by per-axis radii: their boxes must hold every tile of the contract's support binning."""
    from gaussian_renderer.backends import common

    width, height = 70, 45
    means2d, conics, opacities, _, depths, radii = random_projected(200, width, height, 1, dtype=torch.float32, seed=8)
    radii[:10] = 0  # culled
    opacities[10:20] = common.ALPHA_MIN * 0.5  # never reaches ALPHA_MIN
    conics[20] = torch.tensor([0.1, 0.5, 0.1])  # not positive definite: must cover the image
    r = gsplat_backend.support_radii(means2d, conics, opacities, radii, width, height)
    assert r.shape == (200, 2) and r.dtype == torch.int32
    assert (r[:20] == 0).all() and (r[20, 0] >= width) and (r[20, 1] >= height)
    gid, tile_id = common.tile_pairs(means2d, conics, opacities, radii, width, height)
    tx, ty = tile_id % 5, tile_id // 5
    m, rg = means2d[gid].double(), r[gid].double()
    # gsplat's tile range: [floor((m - r) / 16), ceil((m + r) / 16))
    assert (torch.floor((m[:, 0] - rg[:, 0]) / 16) <= tx).all() and (tx < torch.ceil((m[:, 0] + rg[:, 0]) / 16)).all()
    assert (torch.floor((m[:, 1] - rg[:, 1]) / 16) <= ty).all() and (ty < torch.ceil((m[:, 1] + rg[:, 1]) / 16)).all()


def _fused_projection_stand_in(means, covars, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near_plane=0.01,
                               calc_compensations=False, **unused):
    """CPU stand-in for gsplat's ``fully_fused_projection`` from its torch reference: same shapes,
    per-axis 3.33-sigma radii, and NaN where the CUDA kernel leaves culled outputs unwritten."""
    from gsplat.cuda import _torch_impl as impl

    assert covars is None and not unused and means.dtype == quats.dtype == scales.dtype == torch.float32
    assert means.shape[0] == 1 and viewmats.shape == (1, 1, 4, 4) and Ks.shape == (1, 1, 3, 3)
    cov3d, _ = impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, comp = impl._fully_fused_projection(
        means, cov3d, viewmats, Ks, width, height, eps2d, near_plane, 1e10, calc_compensations)
    dead = (radii == 0).all(-1)
    garbage = float("nan")
    return (radii, means2d.masked_fill(dead[..., None], garbage), depths.masked_fill(dead, garbage),
            conics.masked_fill(dead[..., None], garbage), None if comp is None else comp.masked_fill(dead, 0.0))


def _sh_stand_in(degree, dirs, coeffs, masks=None):
    """CPU stand-in for gsplat's ``spherical_harmonics`` (no +0.5, no clamp), with gradients."""
    from utils.sh_utils import sh_basis

    assert masks is None and coeffs.shape[-2] >= (degree + 1) ** 2 and dirs.dtype == coeffs.dtype == torch.float32
    basis = sh_basis(degree, dirs / dirs.norm(dim=-1, keepdim=True))
    return torch.einsum("nb,nbc->nc", basis, coeffs[:, : basis.shape[1]])


@pytest.mark.parametrize("antialiasing", [False, True])
def test_fused_projection_and_sh_plumbing_on_cpu(gsplat_on_cpu, monkeypatch, antialiasing):
    """render() through gsplat's fused projection + SH (stand-ins on a CPU) equals the torch path."""
    import gaussian_renderer
    from gaussian_renderer.backends import Backend
    from tests.test_antialiasing import _camera, _model, _pipe

    wrapper = importlib.import_module("gsplat.cuda._wrapper")
    monkeypatch.setattr(wrapper, "fully_fused_projection", _fused_projection_stand_in)
    monkeypatch.setattr(wrapper, "spherical_harmonics", _sh_stand_in)
    fused = Backend(gsplat_backend.rasterize, gsplat_backend.project, gsplat_backend.sh_to_color)
    results = {}
    for kind in ("fused", "torch"):
        if kind == "fused":
            monkeypatch.setattr(gaussian_renderer, "get_backend", lambda name, device_type: fused)
        else:
            monkeypatch.undo()
        model = _model(seed=11)
        model.oneup_sh_degree()  # degree 1: the SH directions matter
        pkg = gaussian_renderer.render(_camera(), model, _pipe("torch", antialiasing), torch.tensor([0.1, 0.2, 0.3]))
        (pkg["render"].square().sum() + pkg["depth"].sum() * 0.01).backward()
        results[kind] = pkg, {k: p.grad.clone() for k, p in model.params.items()}
    (got, g_got), (ref, g_ref) = results["fused"], results["torch"]
    torch.testing.assert_close(got["render"], ref["render"], rtol=0, atol=2e-5)
    torch.testing.assert_close(got["depth"], ref["depth"], rtol=0, atol=1e-4)
    vis = got["visibility_filter"]
    assert vis.sum() >= 40 and (vis <= ref["visibility_filter"]).all()  # gsplat's box cull is tighter, never looser
    assert (got["radii"][vis] == ref["radii"][vis]).all()  # densification reads the same 3-sigma radius
    assert torch.isfinite(got["viewspace_points"]).all()  # culled rows zeroed, not left as garbage
    torch.testing.assert_close(got["viewspace_points"].grad[vis], ref["viewspace_points"].grad[vis], rtol=1e-3, atol=1e-6)
    for k in g_ref:
        torch.testing.assert_close(g_got[k], g_ref[k], rtol=1e-3, atol=1e-5 * max(1.0, g_ref[k].abs().max().item()))


@pytest.mark.parametrize("antialiased", [False, True])
def test_fused_projection_matches_the_torch_projection(antialiased):
    _require_gsplat()
    from gaussian_renderer.projection import project_gaussians
    from tests.test_antialiasing import H, W, _raw_inputs

    means, scales, quats, viewmat, K = (t.float().cuda() for t in _raw_inputs(400, seed=2))
    outs = {}
    for name, fn in (("gsplat", gsplat_backend.project), ("torch", project_gaussians)):
        leaves = [t.clone().requires_grad_(True) for t in (means, scales, quats)]
        p = fn(*leaves, viewmat, K, W, H, antialiased=antialiased)
        vis = p.radii > 0
        g = torch.Generator(device="cuda").manual_seed(1)
        loss = sum((t[vis] * torch.rand(t[vis].shape, generator=g, device="cuda")).sum()
                   for t in (p.means2d, p.conics, p.depths) + ((p.compensation,) if antialiased else ()))
        loss.backward()
        outs[name] = p, vis, [t.grad for t in leaves]
    (p, vis, grads), (r, vis_r, grads_r) = outs["gsplat"], outs["torch"]
    assert vis.sum() >= 300 and (vis <= vis_r).all() and (p.radii[vis] == r.radii[vis]).all()
    for k in ("means2d", "conics", "depths") + (("compensation",) if antialiased else ()):
        got, ref = getattr(p, k)[vis], getattr(r, k)[vis]
        assert (got - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item()), k
    if (vis == vis_r).all():  # the loss then sums the same rows
        for got, ref in zip(grads, grads_r):
            assert (got - ref).abs().max() <= GRAD_RTOL * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_fused_sh_matches_eval_sh(degree):
    _require_gsplat()
    from utils.sh_utils import eval_sh

    g = torch.Generator(device="cuda").manual_seed(degree)
    sh = (torch.randn(500, 16, 3, generator=g, device="cuda") * 0.3)
    dirs = torch.randn(500, 3, generator=g, device="cuda")
    results = []
    for fn, d in ((gsplat_backend.sh_to_color, dirs), (eval_sh, dirs / dirs.norm(dim=-1, keepdim=True))):
        leaf = sh.clone().requires_grad_(True)
        out = fn(degree, leaf, d)
        (out * torch.linspace(0.5, 1.5, out.numel(), device="cuda").reshape(out.shape)).sum().backward()
        results.append((out.detach(), leaf.grad))
    (c, gc), (r, gr) = results
    assert (c - r).abs().max() <= 1e-5 and (gc - gr).abs().max() <= 1e-5
