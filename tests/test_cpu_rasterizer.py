"""C++ CPU backend == torch reference backend (values and gradients), binning and gradcheck.

The extension is JIT-built on first use when it is not pip-installed (about a
minute, once); the tests skip with the reason when it cannot be built here.
"""
from __future__ import annotations

import functools
import math
import sys
import warnings

import pytest
import torch

from gaussian_renderer.backends import common, cpu_backend, get_rasterizer, torch_backend
from tests.raster_reference import CUTOFF_KINDS, cutoff_scene, image_and_grads, oriented_gaussians, random_projected

TOL = 1e-5  # float32 agreement: values absolute; gradients relative to the largest gradient (or 1)
ISAS = {"auto": 0, "portable": 1}  # AVX2 when the CPU has it / the portable SSE2 (or NEON) build


@pytest.fixture(scope="module")
def ext():
    if not cpu_backend.extension_available():
        pytest.skip("the C++ CPU rasterizer could not be built or loaded here (see the warning)")
    return cpu_backend._extension()


@pytest.fixture(params=sorted(ISAS))
def isa(request, monkeypatch, ext):
    monkeypatch.setattr(cpu_backend, "KERNEL_ISA", ISAS[request.param])
    return request.param


def gaussians(means, sigmas, opacities, channels, seed=0, dtype=torch.float32):
    """Screen-space Gaussians from means [N,2], std-devs [N,2] (axis aligned, then a random tilt) and opacities [N]."""
    thetas = torch.rand(means.shape[0], generator=torch.Generator().manual_seed(seed + 1000), dtype=torch.float64)
    return oriented_gaussians(means, sigmas, thetas * math.pi, opacities, channels, seed, dtype)


def scene(kind: str, width: int, height: int, channels: int, seed: int = 0):
    """(means2d, conics, opacities, colors, depths, radii) float32 for one of the test scenarios."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    if kind == "random":
        return random_projected(300, width, height, channels, dtype=torch.float32, seed=seed)
    if kind in CUTOFF_KINDS:
        return cutoff_scene(kind, width, height, channels, dtype=torch.float32, seed=seed)
    if kind == "sparse":  # a corner cluster plus off-screen Gaussians: many empty tiles
        n = 40
        means = rand(n, 2) * 12 + 2
        means[: n // 4] -= 60  # off screen, but their clamped rectangles still reach tile 0
        return gaussians(means, rand(n, 2) * 3 + 0.5, rand(n) * 0.9 + 0.05, channels, seed)
    if kind == "huge_tiny":  # one Gaussian covering the image, sub-pixel ones everywhere
        n = 120
        means = rand(n, 2) * torch.tensor([width, height], dtype=torch.float64)
        sigmas = rand(n, 2) * 0.3 + 0.1
        means[0] = torch.tensor([width / 2, height / 2])
        sigmas[0] = torch.tensor([3.0 * width, 2.0 * height])
        return gaussians(means, sigmas, rand(n) * 0.9 + 0.05, channels, seed)
    if kind == "opacity_extremes":  # near 0 (some below 1/255) and near 1 (clamp + early termination)
        n = 200
        means = rand(n, 2) * torch.tensor([width, height], dtype=torch.float64)
        opac = torch.where(rand(n) < 0.3, rand(n) * 0.006, 0.9 + rand(n) * 0.0999)
        return gaussians(means, rand(n, 2) * 6 + 2, opac, channels, seed)
    raise ValueError(kind)


def assert_match(cpu, ref):
    img, alpha, grads = cpu
    img_r, alpha_r, grads_r = ref
    assert img.shape == img_r.shape and alpha.shape == alpha_r.shape
    assert (img - img_r).abs().max().item() <= TOL
    assert (alpha - alpha_r).abs().max().item() <= TOL
    for name, gc, gr in zip(("means2d", "conics", "opacities", "colors"), grads, grads_r):
        scale = max(1.0, gr.abs().max().item())
        err = (gc - gr).abs().max().item()
        assert err <= TOL * scale, f"d_{name}: max error {err:.3g} (largest gradient {scale:.3g})"


CASES = [  # kind, width, height, channels
    ("random", 70, 45, 3),
    ("random", 37, 29, 1),
    ("sparse", 61, 50, 3),
    ("huge_tiny", 45, 33, 19),
    ("opacity_extremes", 48, 40, 3),
    ("random", 33, 18, 64),
    ("solid_tails", 50, 40, 3),
    ("diagonal", 64, 50, 3),
    ("faint", 40, 36, 2),
]


@pytest.mark.parametrize("kind,width,height,channels", CASES)
def test_matches_torch_backend(isa, kind, width, height, channels):
    sc = scene(kind, width, height, channels)
    assert_match(image_and_grads(cpu_backend.rasterize, sc, width, height),
                 image_and_grads(torch_backend.rasterize, sc, width, height))


@pytest.mark.parametrize("tile", (5, 8, 24, 64, 256))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_tile_sizes_match_torch_backend(isa, tile, dtype):
    """Tiles of other sizes than 16: rows of one or of many SIMD chunks, partial chunks at the tile's
    right edge, rows beyond the last multiple of the kernels' row batch, and a tile larger than the image."""
    width, height = 70, 45
    sc = [t.to(dtype) if t.is_floating_point() else t for t in scene("random", width, height, 3)]
    cpu = functools.partial(cpu_backend.rasterize, tile=tile)
    ref = functools.partial(torch_backend.rasterize, tile=tile)
    assert_match(image_and_grads(cpu, sc, width, height), image_and_grads(ref, sc, width, height))


def test_kernel_tile_choice():
    """Wide tiles for few channels on images with enough of them; 16-pixel tiles otherwise."""
    wide, narrow = cpu_backend.WIDE_TILE, common.TILE_SIZE
    assert cpu_backend.kernel_tile(3, 675, 540) == wide  # the c3vd sample at -r 2: 22 x 17 wide tiles
    assert cpu_backend.kernel_tile(cpu_backend.WIDE_TILE_MAX_CHANNELS, 675, 540) == wide
    assert cpu_backend.kernel_tile(cpu_backend.WIDE_TILE_MAX_CHANNELS + 1, 675, 540) == narrow  # RGB + features
    assert cpu_backend.kernel_tile(3, 256, 256) == wide  # exactly MIN_WIDE_TILES
    assert cpu_backend.kernel_tile(3, 256, 224) == narrow  # 56 wide tiles


def test_default_tile_same_image(isa, monkeypatch):
    """The default (wide) tile composites every pixel exactly as 16-pixel tiles do; only the gradients' per-tile
    partial sums differ, to float32 rounding. Both match the torch backend."""
    width, height = 270, 250  # 9 x 8 wide tiles, partial ones at the right and bottom edges
    tiles = []
    apply = cpu_backend._CompositeCPU.apply
    monkeypatch.setattr(cpu_backend._CompositeCPU, "apply", lambda *a: tiles.append(a[8]) or apply(*a))
    sc = random_projected(1500, width, height, 3, dtype=torch.float32, seed=4)
    wide = image_and_grads(cpu_backend.rasterize, sc, width, height)
    narrow = image_and_grads(functools.partial(cpu_backend.rasterize, tile=common.TILE_SIZE), sc, width, height)
    assert tiles == [cpu_backend.WIDE_TILE, common.TILE_SIZE]
    assert torch.equal(wide[0], narrow[0]) and torch.equal(wide[1], narrow[1])
    assert_match(wide, narrow)
    assert_match(wide, image_and_grads(torch_backend.rasterize, sc, width, height))


def test_pixels_without_upstream_gradient(isa):
    """Masked-out pixels (zero upstream gradient, e.g. a tool mask) are skipped by the backward pass: the
    gradients still equal the torch backend's, and every Gaussian seen only there gets exactly zero."""
    width, height, channels = 70, 45, 3
    sc = scene("random", width, height, channels)
    mask = torch.ones(height, width)
    mask[5:37, 10:43] = 0  # whole 16x16 tiles and partial tiles / chunks
    mask[:, 60:] = 0
    got = image_and_grads(cpu_backend.rasterize, sc, width, height, grad_mask=mask)
    assert_match(got, image_and_grads(torch_backend.rasterize, sc, width, height, grad_mask=mask))
    everywhere = image_and_grads(cpu_backend.rasterize, sc, width, height)
    assert not torch.equal(got[2][0], everywhere[2][0])  # the mask changed the gradients
    # a Gaussian whose support lies inside the masked block gets exactly zero gradient (the support reaches
    # at most 3.33 sigma, radii are 3 sigma rounded up)
    m, reach = sc[0].double(), sc[5].double() * 1.12 + 1
    inside = (m[:, 0] - reach > 10) & (m[:, 0] + reach < 43) & (m[:, 1] - reach > 5) & (m[:, 1] + reach < 37)
    inside &= sc[5] > 0
    assert inside.sum() >= 3  # the scene has such Gaussians
    for grad in got[2]:
        assert torch.all(grad[inside] == 0)


@pytest.mark.parametrize("kind", ("random",) + CUTOFF_KINDS)
def test_float64_matches_torch_backend(isa, kind):
    width, height = 45, 38
    if kind == "random":
        sc = random_projected(200, width, height, 5, dtype=torch.float64, seed=9)
    else:
        sc = cutoff_scene(kind, width, height, 5, dtype=torch.float64, seed=9)
    img, alpha, grads = image_and_grads(cpu_backend.rasterize, sc, width, height)
    img_r, alpha_r, grads_r = image_and_grads(torch_backend.rasterize, sc, width, height)
    torch.testing.assert_close(img, img_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha, alpha_r, rtol=1e-12, atol=1e-12)
    for got, ref in zip(grads, grads_r):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_early_termination_is_exercised(ext):
    width, height = 48, 40
    sc = scene("opacity_extremes", width, height, 3)
    *_, final_t, n_contrib, _, _ = ext.forward(
        *sc, width, height, common.TILE_SIZE, common.ALPHA_MAX, common.ALPHA_MIN, common.T_MIN, 1, 0
    )
    t_min = torch.tensor(common.T_MIN, dtype=torch.float32)
    assert final_t.float().min() >= t_min  # never composited past T_MIN ...
    assert final_t.min() < 10 * common.T_MIN  # ... but stopped close to it: the next Gaussian was refused
    assert n_contrib.max() > 0


def test_binning_matches_common(ext):
    width, height = 70, 45
    for dtype in (torch.float32, torch.float64):
        means2d, conics, opacities, _, depths, radii = random_projected(400, width, height, 1, dtype=dtype, seed=5)
        radii[20:40] = 0  # culled
        opacities[40:50] = common.ALPHA_MIN * 0.9  # never reaches ALPHA_MIN: no tile
        depths[60:80] = depths[60]  # ties: lower index first
        conics[80] = torch.tensor([0.1, 0.5, 0.1], dtype=dtype)  # not positive definite: every tile
        means2d[81:90] = torch.tensor([[32.0, 16.0]], dtype=dtype)  # means on tile corners
        ids, offsets = ext.bin(means2d, conics, opacities, radii, depths, width, height, common.TILE_SIZE,
                               common.ALPHA_MIN)
        ref_ids, ref_offsets = common.bin_gaussians(means2d, conics, opacities, radii, depths, width, height)
        assert torch.equal(offsets, ref_offsets)
        assert torch.equal(ids.long(), ref_ids)
        assert (ids == 80).sum() == offsets.numel() - 1 and not torch.isin(ids, torch.arange(20, 50)).any()


def test_results_are_reproducible_across_thread_counts(ext):
    width, height = 128, 96  # enough (tile, Gaussian) pairs for the extension to use both threads
    sc = random_projected(4000, width, height, 3, dtype=torch.float32, seed=7)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = image_and_grads(cpu_backend.rasterize, sc, width, height)
        torch.set_num_threads(2)
        two = image_and_grads(cpu_backend.rasterize, sc, width, height)
    finally:
        torch.set_num_threads(threads)
    # bit-identical: tiles are independent and per-Gaussian sums run in a fixed order
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    for a, b in zip(one[2], two[2]):
        assert torch.equal(a, b)


def test_binning_is_the_same_on_any_thread_count(ext):
    """The tile lists are found on several threads for large N (contiguous ranges of Gaussians,
    concatenated in order): the same lists, image and saved state as on one thread."""
    width, height = 96, 64
    sc = random_projected(20000, width, height, 1, dtype=torch.float32, seed=11)
    args = (width, height, 16, common.ALPHA_MAX, common.ALPHA_MIN, common.T_MIN)
    one = ext.forward(*sc[:4], sc[4].double(), sc[5], *args, 1, 0)
    for threads in (2, 3):
        many = ext.forward(*sc[:4], sc[4].double(), sc[5], *args, threads, 0)
        for a, b in zip(one, many):
            assert torch.equal(a, b)


def test_float64_gradcheck(isa):
    width, height = 19, 17
    means = torch.tensor([[4.3, 5.1], [12.7, 8.2], [9.4, 11.6], [15.2, 3.3], [7.9, 13.8]], dtype=torch.float64)
    sigmas = torch.tensor([[2.1, 1.3], [1.7, 2.4], [3.2, 1.1], [1.4, 1.6], [2.6, 2.2]], dtype=torch.float64)
    opac = torch.tensor([0.55, 0.7, 0.35, 0.6, 0.45], dtype=torch.float64)
    means2d, conics, opacities, colors, depths, radii = gaussians(means, sigmas, opac, 2, seed=3, dtype=torch.float64)
    inputs = tuple(t.clone().requires_grad_(True) for t in (means2d, conics, opacities, colors))

    def fn(m, c, o, col):
        return cpu_backend.rasterize(m, c, o, col, depths, radii, width, height)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_input_validation(ext):
    means2d, conics, opacities, colors, depths, radii = random_projected(10, 32, 32, 3, dtype=torch.float32)
    args = dict(width=32, height=32, tile=16, alpha_max=0.99, alpha_min=1 / 255, t_min=1e-4, num_threads=1, isa=0)

    def call(**over):
        a = dict(means2d=means2d, conics=conics, opacities=opacities, colors=colors, depths=depths, radii=radii)
        a.update(over)
        return ext.forward(*a.values(), *args.values())

    with pytest.raises(RuntimeError, match="means2d"):
        call(means2d=torch.zeros(10, 3))
    with pytest.raises(RuntimeError, match="conics"):
        call(conics=conics.double())
    with pytest.raises(RuntimeError, match="contiguous"):
        call(colors=torch.zeros(3, 10).t())
    with pytest.raises(RuntimeError, match="radii"):
        call(radii=radii.long())
    with pytest.raises(RuntimeError, match="opacities"):
        call(opacities=opacities[:5])
    # thresholds outside the contract's ranges (alpha_min must stay > 0 in float32 too)
    for bad in (dict(alpha_min=0.0), dict(alpha_min=1e-50), dict(alpha_min=0.5, alpha_max=0.4), dict(alpha_max=1.5),
                dict(t_min=1.0), dict(t_min=-0.1)):
        with pytest.raises(RuntimeError, match="alpha_min <= alpha_max|t_min must be"):
            ext.forward(means2d, conics, opacities, colors, depths, radii, *dict(args, **bad).values())


def test_registry_picks_cpu_backend(ext):
    assert get_rasterizer("cpu", "cpu") is cpu_backend.rasterize
    assert get_rasterizer("auto", "cpu") is cpu_backend.rasterize


def test_unbuildable_extension_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cpu_rasterizer._C", None)  # as if not pip-installed
    monkeypatch.setattr(cpu_backend, "EXT_DIR", tmp_path)  # no sources: the JIT build fails
    cpu_backend._extension.cache_clear()
    try:
        with pytest.warns(UserWarning, match="C\\+\\+ CPU rasterizer unavailable"):
            assert not cpu_backend.extension_available()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert get_rasterizer("cpu", "cpu") is torch_backend.rasterize
    finally:
        cpu_backend._extension.cache_clear()  # later tests load the real extension again
