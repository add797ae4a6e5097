"""Build the C++ CPU rasterizer: ``pip install --no-build-isolation ./submodules/cpu_rasterizer``.

``--no-build-isolation`` lets the build see the installed torch (the extension
must be compiled against the same torch it runs with).
"""
import sys
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
sys.path.insert(0, str(HERE))
from build_config import LD_FLAGS, compile_flags  # noqa: E402  (shared with the JIT build)

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
            extra_compile_args={"cxx": compile_flags(HERE / "csrc")},
            extra_link_args=LD_FLAGS,
        )
    ],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.9",
)
