"""Training with the C++ backend matches training with the torch reference backend (same seed, same iterations)."""
from __future__ import annotations

import pytest

import train
from scene.synthetic_blender import make_synthetic_blender


@pytest.mark.slow
def test_cpu_backend_training_matches_torch_backend(tmp_path):
    scene = make_synthetic_blender(tmp_path / "scene", n_train=8, n_test=2, width=32, height=32, seed=0)
    psnr = {}
    for backend in ("cpu", "torch"):
        m = train.main(["-s", str(scene), "-m", str(tmp_path / backend), "--backend", backend, "--eval",
                        "--iterations", "120", "--test_iterations", "120", "--save_iterations", "120",
                        "--densify_from_iter", "40", "--densification_interval", "40", "--quiet"])
        psnr[backend] = m["test"]["psnr"]
    print(f"test PSNR after 120 iterations: {psnr}")
    assert abs(psnr["cpu"] - psnr["torch"]) <= 0.5, psnr
