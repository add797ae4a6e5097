"""The fused C++ colour loss (L1 + D-SSIM, submodules/cpu_rasterizer/csrc/ssim.cpp) == the torch composition
(utils.loss_utils.l1_dssim_torch): values and gradients, masked / unmasked / fractional masks, lambda 0 / 0.2 / 1,
images smaller than the window, both kernel builds; float64 gradcheck; input errors."""
from __future__ import annotations

import pytest
import torch

from tests.test_cpu_rasterizer import ext, isa  # noqa: F401  (fixtures: the extension; its auto / portable build)
from utils.loss_utils import l1_dssim_loss, l1_dssim_torch

# float32 against the float64 composition: the loss relative to |loss| + lambda (the SSIM mean is near 1, and
# 1 - SSIM cancels), gradients relative to their largest entry (torch's own float32 composition is off by as
# much: ~1e-6 and ~2e-5 on flat regions)
F32_LOSS_TOL, F32_GRAD_TOL = 3e-6, 5e-5
F64_TOL = 1e-10
SIZES = [(3, 37, 53), (1, 16, 23), (3, 7, 5), (2, 1, 12), (3, 12, 1)]  # C, H, W (some below the 11-pixel window)


def images(kind: str, C: int, H: int, W: int, seed: int):
    """(pred, gt) [C,H,W] float32: random, or structured (ramps, a step, flat columns, equal pixels: |d| = 0)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        gt = torch.rand(C, H, W, generator=g)
        return (gt + 0.1 * torch.randn(C, H, W, generator=g)).clamp(0, 1), gt
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    gt = torch.stack([0.8 * xx + 0.1, 0.7 * (yy > 0.5).float() + 0.1, torch.full((H, W), 0.5)])[:C].clone()
    pred = gt.clone()
    pred[:, : (H + 1) // 2] += 0.05 * torch.randn(C, (H + 1) // 2, W, generator=g)
    pred[:, :, -3:] = 0.3
    return pred.clamp(0, 1), gt


def make_mask(kind: str, H: int, W: int, seed: int):
    g = torch.Generator().manual_seed(seed + 100)
    if kind == "none":
        return None
    if kind == "binary":
        return (torch.rand(1, H, W, generator=g) > 0.2).float()
    return torch.rand(1, H, W, generator=g)


def fused(pred, gt, mask, lam):
    """Loss and d loss / d pred through l1_dssim_loss, checked to have taken the C++ path."""
    x = pred.clone().requires_grad_(True)
    loss = l1_dssim_loss(x, gt, mask, lam)
    assert type(loss.grad_fn).__name__ == "_FusedLossCPUBackward", "the fused kernel was not used"
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def reference(pred, gt, mask, lam):
    """The torch composition in float64."""
    x = pred.double().requires_grad_(True)
    loss = l1_dssim_torch(x, gt.double(), None if mask is None else mask.double(), lam)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def assert_close(new, ref, lam, loss_tol, grad_tol):
    (loss, grad), (loss_ref, grad_ref) = new, ref
    assert abs(float(loss) - float(loss_ref)) <= loss_tol * (abs(float(loss_ref)) + lam)
    scale = float(grad_ref.abs().max())
    assert scale > 0 and float((grad.double() - grad_ref).abs().max()) <= grad_tol * scale


@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_float32_equals_the_torch_composition(isa, size, kind):
    """Every mask kind and lambda at each size: float32 values and gradients within float32 rounding."""
    C, H, W = size
    for seed, (mask_kind, lam) in enumerate([(m, lam) for m in ("none", "binary", "fractional") for lam in (0.0, 0.2, 1.0)]):
        pred, gt = images(kind, C, H, W, seed)
        mask = make_mask(mask_kind, H, W, seed)
        assert_close(fused(pred, gt, mask, lam), reference(pred, gt, mask, lam), lam, F32_LOSS_TOL, F32_GRAD_TOL)


@pytest.mark.parametrize("size", [(3, 37, 53), (3, 7, 5)], ids=lambda s: "x".join(map(str, s)))
def test_float64_equals_the_torch_composition(isa, size):
    C, H, W = size
    pred, gt = images("random", C, H, W, seed=5)
    for mask in (None, make_mask("fractional", H, W, 5)):
        for lam in (0.0, 0.2, 1.0):
            new = fused(pred.double(), gt.double(), None if mask is None else mask.double(), lam)
            assert_close(new, reference(pred, gt, mask, lam), lam, F64_TOL, F64_TOL)


def test_gradcheck_float64(isa):
    g = torch.Generator().manual_seed(7)
    pred = torch.rand(3, 9, 13, generator=g, dtype=torch.float64, requires_grad=True)
    gt = torch.rand(3, 9, 13, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 9, 13, generator=g, dtype=torch.float64)
    for m, lam in ((mask, 0.2), (None, 1.0)):
        assert torch.autograd.gradcheck(lambda x: l1_dssim_loss(x, gt, m, lam), (pred,), eps=1e-6, atol=1e-8)


def test_same_result_on_any_thread_count(ext):
    """Sums are kept per row and added in a fixed order: 1 and 2 threads agree bit for bit."""
    pred, gt = images("random", 3, 64, 64, seed=9)
    mask = make_mask("binary", 64, 64, 9)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fused(pred, gt, mask, 0.2)
        torch.set_num_threads(2)
        two = fused(pred, gt, mask, 0.2)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_no_grad_and_gradients_for_gt_use_the_right_path(ext):
    pred, gt = images("random", 3, 20, 24, seed=11)
    expected = reference(pred, gt, None, 0.2)[0]
    with torch.no_grad():
        assert abs(float(l1_dssim_loss(pred, gt, None, 0.2)) - float(expected)) <= F32_LOSS_TOL * float(expected)
    gt = gt.clone().requires_grad_(True)  # the kernel has no gradient for gt: the torch composition runs
    loss = l1_dssim_loss(pred, gt, None, 0.2)
    assert type(loss.grad_fn).__name__ != "_FusedLossCPUBackward"
    assert torch.autograd.grad(loss, gt)[0].abs().sum() > 0


def test_bad_inputs_give_clear_errors(ext):
    pred, gt = torch.rand(3, 8, 9), torch.rand(3, 8, 9)
    with pytest.raises(RuntimeError, match=r"gt must have shape \[3, 8, 9\]"):
        l1_dssim_loss(pred, gt[:, :, :8], None, 0.2)
    with pytest.raises(RuntimeError, match=r"mask must have shape \[1, 8, 9\]"):
        l1_dssim_loss(pred, gt, torch.ones(8, 9), 0.2)
    with pytest.raises(RuntimeError, match=r"pred must be a non-empty \[C, H, W\] image"):
        l1_dssim_loss(pred[0], gt[0], None, 0.2)
    with pytest.raises(ValueError, match="lambda_dssim must be in"):
        l1_dssim_loss(pred, gt, None, 1.5)
