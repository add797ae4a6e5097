"""Build the C++ CPU rasterizer: ``pip install --no-build-isolation ./submodules/cpu_rasterizer``.

``--no-build-isolation`` lets the build see the installed torch (the extension
must be compiled against the same torch it runs with).
"""
from pathlib import Path

from setuptools import setup

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as exc:  # pip's isolated build env has no torch
    raise SystemExit(
        "cpu_rasterizer builds against the installed torch: "
        "pip install --no-build-isolation ./submodules/cpu_rasterizer"
    ) from exc

HERE = Path(__file__).resolve().parent
SOURCES = sorted(str(p.relative_to(HERE)) for p in (HERE / "csrc").glob("*.cpp"))
# Keep in sync with gaussian_renderer/backends/cpu_backend.py (JIT build). Portable
# flags only: no -march=native (the AVX2 kernels are selected at run time); no FMA
# contraction so float results match the torch reference; errno / FP-trap
# semantics off (they change no result, but let compares and selects vectorise).
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"]

setup(
    name="cpu_rasterizer",
    version="0.1.0",
    description="Tile-based Gaussian splat compositing on the CPU (PyTorch C++ extension, OpenMP)",
    packages=["cpu_rasterizer"],
    ext_modules=[
        CppExtension(
            name="cpu_rasterizer._C",
            sources=SOURCES,
            include_dirs=[str(HERE / "csrc")],
            extra_compile_args={"cxx": CXX_FLAGS},
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
)
