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
