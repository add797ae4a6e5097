"""--antialiasing: the opacity compensation of the 0.3-pixel blur (Mip-Splatting's 2D filter).

The torch projection is the reference: its compensation is checked against a brute-force
determinant ratio and by float64 gradcheck; every backend then renders the antialiased
scene through render() and must match the torch backend in values and gradients.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from arguments import PipelineParams
from gaussian_renderer import render
from gaussian_renderer.backends import get_backend
from gaussian_renderer.projection import EPS_2D, project_gaussians
from scene.cameras import Camera
from scene.gaussian_model import GaussianModel
from utils.general_utils import build_covariance

W, H = 40, 30


def _camera(width: int = W, height: int = H, device: str = "cpu") -> Camera:
    f = 0.9 * width
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])
    viewmat = torch.eye(4)
    viewmat[2, 3] = 4.0  # the Gaussians sit around the origin, 4 units in front
    return Camera.from_tensors(0, "cam", width, height, K, viewmat, torch.zeros(3, height, width)).to(device)


def _model(n: int = 60, seed: int = 0, device: str = "cpu", small: bool = False) -> GaussianModel:
    rng = np.random.default_rng(seed)
    m = GaussianModel(1, device=device)
    m.create_from_pcd(rng.uniform(-1.2, 1.2, size=(n, 3)) * [1.0, 0.8, 0.5], rng.random((n, 3)), 1.0)
    with torch.no_grad():
        m.params["scaling"].copy_(torch.log(torch.as_tensor(rng.uniform(0.004 if small else 0.02, 0.12, size=(n, 3)))))
        m.params["opacity"].copy_(torch.as_tensor(rng.uniform(-2.0, 2.0, size=(n, 1))))
        m.params["rotation"].copy_(torch.as_tensor(rng.normal(size=(n, 4))))
        m.params["f_rest"].copy_(torch.as_tensor(rng.normal(0.0, 0.1, size=tuple(m.params["f_rest"].shape))))
    return m


def _pipe(backend: str, antialiasing: bool) -> PipelineParams:
    return PipelineParams.defaults().replace(backend=backend, antialiasing=antialiasing)


def _raw_inputs(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor([2.0, 1.5, 1.0], dtype=torch.float64)
    scales = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.1 + 0.005
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    quats = quats / quats.norm(dim=-1, keepdim=True)
    cam = _camera()
    return means, scales, quats, cam.viewmat.double(), cam.K.double()


def test_compensation_is_the_determinant_ratio_of_the_blur():
    means, scales, quats, viewmat, K = _raw_inputs(40)
    proj = project_gaussians(means, scales, quats, viewmat, K, W, H, antialiased=True)
    plain = project_gaussians(means, scales, quats, viewmat, K, W, H)
    assert plain.compensation is None
    torch.testing.assert_close(proj.conics, plain.conics)  # antialiasing changes opacity only
    # brute force: the screen covariance from the conic, then det(cov) / det(cov + 0.3 I)
    a, b, c = proj.conics.unbind(-1)
    blurred = torch.stack([torch.stack([c, -b], -1), torch.stack([-b, a], -1)], -2) / (a * c - b * b)[:, None, None]
    raw = blurred - EPS_2D * torch.eye(2, dtype=torch.float64)
    expected = torch.sqrt(torch.linalg.det(raw) / torch.linalg.det(blurred))
    live = proj.radii > 0
    assert live.sum() >= 30
    torch.testing.assert_close(proj.compensation[live], expected[live], rtol=1e-9, atol=1e-12)
    assert (proj.compensation[live] > 0).all() and (proj.compensation[live] < 1).all()
    assert (proj.compensation[~live] == 0).all()


def test_projection_gradcheck_float64():
    means, scales, quats, viewmat, K = _raw_inputs(6, seed=3)

    def f(m, s, q):
        p = project_gaussians(m, s, q, viewmat, K, W, H, antialiased=True)
        return p.means2d, p.conics, p.compensation

    inputs = [t.clone().requires_grad_(True) for t in (means, scales, quats)]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-7, atol=1e-6)


def test_small_gaussians_keep_their_integral_at_any_resolution():
    """A sub-pixel Gaussian's rendered mass (sum of alpha, in units of full-resolution pixels) is the
    same at half resolution with antialiasing; without it the blur inflates it."""
    model = _model(small=True, n=40, seed=2)
    mass = {}
    for aa in (False, True):
        for scale in (1, 2):
            cam = _camera(W * 2 // scale, H * 2 // scale)
            with torch.no_grad():
                pkg = render(cam, model, _pipe("torch", aa), torch.zeros(3))
            mass[aa, scale] = float(pkg["alpha"].sum()) * scale * scale
    drift = {aa: abs(mass[aa, 2] / mass[aa, 1] - 1.0) for aa in (False, True)}
    assert drift[True] < 0.5 * drift[False], (mass, drift)


def _backends_here() -> list[str]:
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["gsplat", "torch-cuda"]
    return names


def _render_with_grads(backend: str, antialiasing: bool, device: str):
    model = _model(device=device, seed=5)
    cam = _camera(device=device)
    pkg = render(cam, model, _pipe(backend, antialiasing), torch.tensor([0.2, 0.3, 0.4], device=device))
    g = torch.Generator().manual_seed(7)
    w = torch.rand(pkg["render"].shape, generator=g).to(device)
    ((pkg["render"] * w).sum() + pkg["alpha"].sum()).backward()
    grads = {k: p.grad.detach().cpu() for k, p in model.params.items()}
    return pkg["render"].detach().cpu(), grads


@pytest.mark.parametrize("antialiasing", [False, True])
@pytest.mark.parametrize("backend", _backends_here())
def test_every_backend_matches_the_torch_reference(backend, antialiasing):
    device = "cuda" if backend in ("gsplat", "torch-cuda") else "cpu"
    name = "torch" if backend == "torch-cuda" else backend
    if name == "gsplat" and get_backend("gsplat", "cuda").project is None:
        pytest.skip("gsplat's kernels are not available on this CUDA machine")
    img, grads = _render_with_grads(name, antialiasing, device)
    img_ref, grads_ref = _render_with_grads("torch", antialiasing, "cpu")
    tol = 2e-4 if name == "gsplat" else 1e-5  # gsplat: float32 and fast exp (see gsplat_backend.py)
    assert (img - img_ref).abs().max() <= tol
    for k, ref in grads_ref.items():
        assert (grads[k] - ref).abs().max() <= 50 * tol * max(1.0, ref.abs().max().item()), k


def test_antialiasing_changes_the_image_only_through_opacity():
    model = _model(seed=4)
    cam = _camera()
    with torch.no_grad():
        plain = render(cam, model, _pipe("torch", False), torch.zeros(3))
        aa = render(cam, model, _pipe("torch", True), torch.zeros(3))
    assert aa["alpha"].sum() < plain["alpha"].sum()  # every compensation is below 1
    assert torch.equal(aa["radii"], plain["radii"]) and math.isfinite(float(aa["render"].sum()))


def test_antialiased_model_wins_at_half_the_training_resolution(tmp_path):
    """Trained at 40x40, rendered by render.py at -r 2 (20x20) and scored by metrics.py: without the
    compensation the 0.3-pixel blur fattens every small Gaussian at the lower resolution."""
    import json

    import metrics
    import render as render_script
    import train
    from scene.synthetic_blender import make_synthetic_blender

    its = 300
    scene = make_synthetic_blender(tmp_path / "scene", n_train=16, n_test=4, width=40, height=40, seed=0)
    common = ["-s", str(scene), "--eval", "--iterations", str(its), "--test_iterations", str(its), "--save_iterations",
              str(its), "--densify_from_iter", "100", "--densify_until_iter", "225", "--opacity_reset_interval", "100000",
              "--sh_increase_interval", "200", "--position_lr_max_steps", str(its), "--quiet"]
    psnr = {}
    for aa in (False, True):
        model = tmp_path / ("aa" if aa else "plain")
        full = train.main(common + ["-m", str(model)] + (["--antialiasing"] if aa else []))["test"]["psnr"]
        assert ("antialiasing=True" in (model / "cfg_args").read_text()) == aa  # render.py inherits it
        render_script.main(["-m", str(model), "-r", "2", "--skip_train", "--quiet"])
        metrics.main(["-m", str(model), "--quiet"])
        half = next(iter(json.loads((model / "results.json").read_text()).values()))["PSNR"]
        psnr[aa] = full, half
    print(f"test PSNR (40x40, 20x20): without {psnr[False]}, with --antialiasing {psnr[True]}")
    assert abs(psnr[True][0] - psnr[False][0]) < 1.0  # the same quality at the training resolution
    assert psnr[True][1] > psnr[False][1] + 3.0  # measured: 27.6 vs 21.0 dB
