"""Perceptual (DINO feature) loss, feature-resolution masks and HR feature upsampling."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from utils.dino_utils import DinoExtractor, hr_offsets, shift_image
from utils.perceptual import VALID_CELL_FRACTION, mask_to_feature_res, perceptual_loss

PATCH = 16
GRID = 8  # 8 x 8 patches: a 128 x 128 input
# HR vs bilinear after a patch-size low-pass, on a smooth image. Measured here: 0.0067 (dino_vits16,
# random weights); a 2 px shift changes a smooth image (and so the features) by ~1 %, so HR must
# agree with plain bilinear to a few percent, while features of a different (flipped) image
# differ by > 100 % on the same metric. 0.03 sits well between the two.
HR_LOWPASS_REL_TOL = 0.03


def extractor(**kw) -> DinoExtractor:
    args = dict(model="dino_vits16", layers=[11], resolution=GRID * PATCH, random_init=True)
    args.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DinoExtractor(**args)


@pytest.fixture(scope="module")
def ext64() -> DinoExtractor:
    return extractor(resolution=64)


@pytest.fixture(scope="module")
def ext128() -> DinoExtractor:
    return extractor()


def smooth_image(size: int = GRID * PATCH) -> torch.Tensor:
    """[1,3,S,S] low-frequency colour image (periods of several patches)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(6 * xx + 1), 0.5 + 0.4 * torch.cos(5 * yy),
                        0.5 + 0.3 * torch.sin(4 * (xx + yy))])[None]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| relative to the spatial variation of b."""
    return ((a - b).norm() / (b - b.mean(dim=(-2, -1), keepdim=True)).norm()).item()


def test_loss_values_and_kinds():
    a = torch.randn(8, 3, 4)
    for kind in ("cosine", "l1", "l2", "smooth_l1"):
        assert perceptual_loss(a, a.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)
    assert perceptual_loss(a, a + 0.5, "l1").item() == pytest.approx(0.5)
    assert perceptual_loss(a, a + 0.5, "l2").item() == pytest.approx(0.25)
    assert perceptual_loss(a, -a, "cosine").item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown"):
        perceptual_loss(a, a, "l3")


def test_mask_excludes_cells():
    pred, target = torch.zeros(4, 2, 2), torch.zeros(4, 2, 2)
    target[:, 0, 0] = 1.0
    mask = torch.ones(1, 2, 2)
    assert perceptual_loss(pred, target, "l1", mask).item() == pytest.approx(0.25)
    mask[0, 0, 0] = 0
    assert perceptual_loss(pred, target, "l1", mask).item() == 0.0
    zero = perceptual_loss(pred.requires_grad_(), target, "l1", torch.zeros(1, 2, 2))
    assert zero.item() == 0.0 and zero.requires_grad


def test_mask_to_feature_res_needs_almost_all_pixels():
    mask = torch.ones(1, 32, 48)  # 2 x 3 cells of 16 x 16 = 256 pixels
    mask[0, 5, 40] = 0  # one excluded pixel (0.4 %) in cell (0, 2): still "almost all" valid
    assert mask_to_feature_res(mask, (2, 3)).sum() == 6
    mask[0, 20:22, 3] = 0  # 2 pixels (0.8 %) in cell (1, 0): still valid
    mask[0, 6:8, 41] = 0  # cell (0, 2) now misses 3 pixels (1.2 % > 1 - VALID_CELL_FRACTION): dropped
    cells = mask_to_feature_res(mask, (2, 3))
    assert cells.shape == (1, 2, 3) and cells.sum() == 5 and cells[0, 0, 2] == 0
    assert 1.0 - 3 / 256 < VALID_CELL_FRACTION <= 1.0 - 2 / 256
    assert mask_to_feature_res(torch.ones(1, 30, 45), (4, 6)).all()


def test_gradients_reach_the_render(ext64):
    ext = ext64
    render = torch.rand(1, 3, 48, 64, requires_grad=True)
    target = ext.features(torch.rand(1, 3, 48, 64)).detach()[0]
    mask = mask_to_feature_res(torch.ones(1, 48, 64), target.shape[-2:])
    for kind in ("cosine", "l1"):
        render.grad = None
        perceptual_loss(ext.features(render)[0], target, kind, mask).backward()
        assert render.grad.abs().sum() > 0 and torch.isfinite(render.grad).all()
    assert all(p.grad is None for p in ext.model.parameters())


def test_shift_image_moves_content():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    s = shift_image(x, 1, -2)
    assert torch.equal(s[0, 0, 1:, :4], x[0, 0, :4, 2:])  # out[y, x] = in[y - 1, x + 2]
    assert torch.equal(shift_image(s, -1, 2)[0, 0, 1:-1, 2:-2], x[0, 0, 1:-1, 2:-2])
    assert len(hr_offsets(4)) == 5 and len(hr_offsets(8)) == 9 and hr_offsets([(1, 2)]) == [(1, 2)]


def test_hr_undoes_shifts_and_flips_exactly():
    """With a pixel-exact stand-in for the ViT (features = input), every un-shifted view lines up."""
    ext = extractor()
    ext._forward = lambda x: x[:, None]  # [B,3,H,W] -> [B,1,3,H,W] at full resolution
    img = torch.rand(1, 3, 128, 128)
    want = ext.preprocess(img)[0]
    border = 2 * 3
    for shifts in ([(0, 3)], [(-3, 1)], 8):
        got = ext.upsample_hr(img, shifts=shifts, flip=True)[0, 0]
        torch.testing.assert_close(got[:, border:-border, border:-border], want[:, border:-border, border:-border])


def test_hr_lowpass_matches_bilinear(ext128):
    ext = ext128
    img = smooth_image()
    with torch.no_grad():
        hr = ext.upsample_hr(img, shifts=8)[:, 0]
        bil = ext.upsample_bilinear(img)[:, 0]
        other = ext.upsample_bilinear(img.flip(-1))[:, 0]
    assert hr.shape == bil.shape == (1, 384, 128, 128)
    low = lambda t: F.avg_pool2d(t, PATCH)  # noqa: E731
    assert rel_err(low(hr), low(bil)) < HR_LOWPASS_REL_TOL
    assert rel_err(low(other), low(bil)) > 10 * HR_LOWPASS_REL_TOL  # the metric does tell maps apart
    out = ext.upsample_hr(img, out_size=(100, 90), shifts=4)
    assert out.shape == (1, 1, 384, 100, 90)


def test_upsample_with_projection_commutes(ext64):
    ext = ext64
    img = torch.rand(1, 3, 48, 64)
    comps = torch.randn(5, 384)
    proj = lambda f: torch.einsum("dc,bchw->bdhw", comps, f - 1.0)  # noqa: E731 (affine per cell)
    with torch.no_grad():
        full = ext.upsample_bilinear(img)[:, 0]
        projected = ext.upsample_bilinear(img, project=proj)[:, 0]
    torch.testing.assert_close(projected, proj(full), rtol=1e-4, atol=1e-3)
