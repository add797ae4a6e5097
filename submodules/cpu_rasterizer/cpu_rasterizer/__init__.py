"""Tile-based Gaussian splat compositing on the CPU (C++17 / OpenMP extension).

The compiled module is ``cpu_rasterizer._C``; the autograd wrapper that uses it
lives in the main repository (gaussian_renderer/backends/cpu_backend.py).
"""
import torch  # noqa: F401  (loads libc10 / libtorch, which _C links against)
