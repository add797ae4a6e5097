"""The C++ per-pixel ops around the compositing equal their torch references.

* backends/cpu_image_ops.finish == backends/common.finish_outputs: values and gradients (every output, or
  only some of them used), features and inverse depth passing through, coverage at and below the floor;
* loss_utils' C++ depth L1 == depth_l1_torch: values and gradients with and without a mask, pixels without
  ground truth, pred == gt, no valid pixel at all;
float64 gradchecks, the same bits for any thread count, bad inputs named, and render() with and without
the fused finish.
"""
from __future__ import annotations

import pytest
import torch

import gaussian_renderer
from gaussian_renderer.backends import Backend, cpu_backend
from gaussian_renderer.backends.common import DEPTH_ALPHA_FLOOR, finish_outputs
from gaussian_renderer.backends.cpu_image_ops import finish
from tests.test_antialiasing import _camera, _pipe
from tests.test_gaussian_model import _model
from utils.loss_utils import DEPTH_SCALE_FLOOR, depth_l1_loss, depth_l1_torch

H, W = 9, 13


@pytest.fixture(scope="module", autouse=True)
def ext():
    if not cpu_backend.extension_available():
        pytest.skip("the C++ CPU rasterizer could not be built or loaded here (see the warning)")


def composited(features: int, invdepth: bool, seed: int, dtype=torch.float64):
    """(out [C,H,W], alpha [1,H,W], bg [3]) with coverage 0, below, at and just above the floor."""
    g = torch.Generator().manual_seed(seed)
    C = 3 + features + 1 + int(invdepth)
    out = torch.rand(C, H, W, generator=g, dtype=dtype)
    alpha = torch.rand(1, H, W, generator=g, dtype=dtype) * 0.9 + 0.05
    alpha[0, 0, :4] = torch.tensor([0.0, DEPTH_ALPHA_FLOOR * 0.5, DEPTH_ALPHA_FLOOR, DEPTH_ALPHA_FLOOR * 2], dtype=dtype)
    return out, alpha, torch.tensor([0.2, 0.5, 0.9], dtype=dtype)


def outputs_and_grads(fn, out, alpha, bg, features, invdepth, used):
    """fn's outputs and d(sum of weighted used outputs)/d(out, alpha)."""
    out, alpha = out.clone().requires_grad_(), alpha.clone().requires_grad_()
    res = fn(out, alpha, bg, 3 + features, invdepth)
    total = 0.0
    for k in used:
        if res[k] is not None and res[k].numel():
            total = total + (res[k] * torch.linspace(-1.0, 2.0, res[k].numel(), dtype=out.dtype).view(res[k].shape)).sum()
    if torch.is_tensor(total):  # else nothing used exists in this layout
        total.backward()
    return [None if r is None else r.detach() for r in res], out.grad, alpha.grad


@pytest.mark.parametrize("features,invdepth", [(0, False), (5, False), (0, True), (4, True)])
@pytest.mark.parametrize("used", [(0, 1, 2, 3), (0,), (2,), (1, 3)])
def test_finish_equals_the_torch_outputs(features, invdepth, used):
    out, alpha, bg = composited(features, invdepth, seed=features + 7 * invdepth)
    fused = outputs_and_grads(finish, out, alpha, bg, features, invdepth, used)
    ref = outputs_and_grads(finish_outputs, out, alpha, bg, features, invdepth, used)
    for a, b in zip(fused[0], ref[0]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-14, atol=0.0)
    for a, b in zip(fused[1:], ref[1:]):
        if b is None:  # nothing used depended on it
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-300)
    # a pixel with no coverage: finite depth; below the floor the clamp passes no gradient to alpha
    assert torch.isfinite(fused[0][2]).all()


def test_finish_float32_and_gradcheck():
    out, alpha, bg = composited(2, True, seed=3, dtype=torch.float32)
    fused = outputs_and_grads(finish, out, alpha, bg, 2, True, (0, 1, 2, 3))
    ref = outputs_and_grads(finish_outputs, out, alpha, bg, 2, True, (0, 1, 2, 3))
    for a, b in zip([*fused[0], *fused[1:]], [*ref[0], *ref[1:]]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()))
    out, alpha, bg = composited(2, True, seed=4)
    alpha[0, 0, :4] = 0.3  # away from the clamp's kink
    out.requires_grad_(), alpha.requires_grad_()
    assert torch.autograd.gradcheck(lambda o, a: finish(o, a, bg, 5, True), (out, alpha))


def depth_maps(seed: int, dtype=torch.float64, mask: bool = True):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(1, H, W, generator=g, dtype=dtype) * 40.0
    gt[0, 1] = 0.0  # no ground truth on a row
    pred = gt + torch.randn(1, H, W, generator=g, dtype=dtype)
    pred[0, 2, :5] = gt[0, 2, :5]  # pred == gt: |.| has no slope there (torch's sign(0) = 0)
    m = (torch.rand(1, H, W, generator=g) > 0.3).to(dtype) if mask else None
    return pred, gt, m


def depth_grads(fn, pred, gt, mask):
    pred = pred.clone().requires_grad_()
    loss = fn(pred, gt, mask)
    (loss * 1.7).backward()
    return loss.detach(), pred.grad


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_depth_l1_equals_the_torch_loss(mask, dtype, rtol):
    pred, gt, m = depth_maps(seed=1, dtype=dtype, mask=mask)
    loss, grad = depth_grads(depth_l1_loss, pred, gt, m)
    ref_loss, ref_grad = depth_grads(depth_l1_torch, pred, gt, m)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=0.0)
    assert type(depth_l1_loss(pred.requires_grad_(), gt, m).grad_fn).__name__ == "_FusedLossCPUBackward"
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=rtol * float(ref_grad.abs().max()))
    assert not grad[0, 1].any() and not grad[0, 2, :5].any()  # no ground truth / pred == gt


def test_depth_l1_without_valid_pixels_and_gradcheck():
    pred, gt, m = depth_maps(seed=2)
    empty = torch.zeros_like(gt)
    loss, grad = depth_grads(depth_l1_loss, pred, empty, m)
    ref_loss, ref_grad = depth_grads(depth_l1_torch, pred, empty, m)
    assert loss == ref_loss == 0.0 and not grad.any() and not ref_grad.any()
    gt = gt + 0.1  # every pixel valid, pred != gt (no kink)
    pred = (gt + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: depth_l1_loss(p, gt, m), (pred,))
    tiny = torch.full_like(gt, DEPTH_SCALE_FLOOR * 0.01)  # the normaliser floored
    torch.testing.assert_close(depth_l1_loss(pred, tiny, m), depth_l1_torch(pred, tiny, m), rtol=1e-12, atol=0.0)


def test_same_bits_for_any_thread_count():
    ext = cpu_backend._extension()
    g = torch.Generator().manual_seed(5)
    pred, gt = torch.rand(1, 300, 257, generator=g), torch.rand(1, 300, 257, generator=g)
    out, alpha, bg = torch.rand(5, 300, 257, generator=g), torch.rand(1, 300, 257, generator=g), torch.rand(3)
    grad_image, grad_depth = torch.rand(3, 300, 257, generator=g), torch.rand(1, 300, 257, generator=g)
    def run(threads):
        loss, grad = ext.depth_l1(pred, gt, None, DEPTH_SCALE_FLOOR, True, threads)
        image, depth = ext.finish_forward(out, alpha, bg, 3, DEPTH_ALPHA_FLOOR, threads)
        grad_out, grad_alpha = ext.finish_backward(out, alpha, bg, 3, DEPTH_ALPHA_FLOOR, grad_image, grad_depth, threads)
        return loss, grad, image, depth, grad_out[:4], grad_alpha  # rows 4.. of grad_out are the caller's

    one = run(1)
    for threads in (2, 3):
        assert all(torch.equal(a, b) for a, b in zip(run(threads), one))


def test_bad_inputs_are_named():
    ext = cpu_backend._extension()
    out, alpha, bg = composited(0, False, seed=0)
    with pytest.raises(RuntimeError, match="depth_channel must be in"):
        ext.finish_forward(out, alpha, bg, 4, DEPTH_ALPHA_FLOOR, 1)
    with pytest.raises(RuntimeError, match="alpha must have shape"):
        ext.finish_forward(out, alpha[:, :4].contiguous(), bg, 3, DEPTH_ALPHA_FLOOR, 1)
    with pytest.raises(RuntimeError, match="bg must be"):
        ext.finish_forward(out, alpha, bg.float(), 3, DEPTH_ALPHA_FLOOR, 1)
    with pytest.raises(RuntimeError, match="grad_depth must have shape"):
        ext.finish_backward(out, alpha, bg, 3, DEPTH_ALPHA_FLOOR, None, out[:2].contiguous(), 1)
    with pytest.raises(RuntimeError, match="pred must be"):
        ext.depth_l1(out, out, None, DEPTH_SCALE_FLOOR, True, 1)
    with pytest.raises(RuntimeError, match="mask must have shape"):
        ext.depth_l1(alpha, alpha, out, DEPTH_SCALE_FLOOR, True, 1)


@pytest.mark.parametrize("invdepth", [False, True])
def test_render_with_and_without_the_fused_finish(monkeypatch, invdepth):
    """render() through the cpu backend gives the torch finish's maps and gradients."""
    model = _model(n=80, deform=0, seed=3)
    with torch.no_grad():
        model.params["xyz"].mul_(0.3)
        model.params["xyz"][:, 2] += 0.5
    cam = _camera()
    bg = torch.tensor([0.1, 0.6, 0.3])

    def run():
        for p in model.params.values():
            p.grad = None
        pkg = gaussian_renderer.render(cam, model, _pipe("cpu", False), bg, invdepth=invdepth)
        maps = [pkg[k] for k in ("render", "depth", "alpha", "invdepth") if pkg[k] is not None]
        sum((m * torch.linspace(0.5, 1.5, m.numel()).reshape(m.shape)).sum() for m in maps).backward()
        return [m.detach() for m in maps], {k: p.grad.clone() for k, p in model.params.items() if p.grad is not None}

    fused_maps, fused_grads = run()
    plain = gaussian_renderer.backends.get_backend("cpu", "cpu")
    assert plain.finish is not None
    monkeypatch.setattr(gaussian_renderer, "get_backend",
                        lambda *a, **k: Backend(plain.rasterize, plain.project, plain.sh_to_color, plain.geometry))
    maps, grads = run()
    assert fused_maps[2].max() > 0.05
    for a, b in zip(fused_maps, maps):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert fused_grads.keys() == grads.keys()
    for k in grads:
        torch.testing.assert_close(fused_grads[k], grads[k], rtol=1e-4, atol=1e-6 * float(grads[k].abs().max()))
