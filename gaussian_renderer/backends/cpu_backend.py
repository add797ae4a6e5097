"""C++/OpenMP CPU compositing backend (sources in submodules/cpu_rasterizer).

Loading order: the pip-installed module ``cpu_rasterizer._C``; else a JIT build
of the same sources into ``submodules/cpu_rasterizer/build/jit`` (git-ignored,
reused by later runs); else unavailable, with a one-line warning saying why
(the backend registry then falls back to the torch backend).

Semantics are those of :mod:`gaussian_renderer.backends.common`; the threshold
constants are passed from there so the C++ code has no copies of them.
"""
from __future__ import annotations

import functools
import logging
import os
import runpy
import shutil
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from gaussian_renderer.backends.common import ALPHA_MAX, ALPHA_MIN, T_MIN, TILE_SIZE
from utils.errors import one_line

EXT_DIR = Path(__file__).resolve().parents[2] / "submodules" / "cpu_rasterizer"
JIT_BUILD_DIR = EXT_DIR / "build" / "jit"
JIT_MODULE_NAME = "cpu_rasterizer_jit"
KERNEL_ISA = 0  # kernel instruction set: 0 = AVX2 when the CPU has it, 1 = portable build, 2 = AVX2 (tests set 1)
KERNEL_DTYPES = (torch.float32, torch.float64)  # the dtypes the C++ kernels are built for


def working_dtype(t: torch.Tensor) -> torch.dtype:
    """The kernels' dtype for ``t``: its own when they are built for it, else float32."""
    return t.dtype if t.dtype in KERNEL_DTYPES else torch.float32


def _ensure_ninja_on_path() -> None:
    """torch's JIT builder runs ``ninja`` from PATH; the pip package may only live in the venv."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # type: ignore[import-not-found]
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _import_cpp_extension():
    """torch.utils.cpp_extension, without its CUDA_HOME notice on CPU-only machines."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension as cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _needs_build(sources: list[Path]) -> bool:
    """True when the JIT library is missing or older than a source / header."""
    lib = JIT_BUILD_DIR / f"{JIT_MODULE_NAME}.so"
    if not lib.exists():
        return True
    newest = max(p.stat().st_mtime for p in sources + list((EXT_DIR / "csrc").glob("*.h")))
    return lib.stat().st_mtime < newest


def _jit_build():
    """Compile (or reuse) the extension from the repository sources."""
    sources = sorted((EXT_DIR / "csrc").glob("*.cpp"))
    if not sources:
        raise RuntimeError(f"no C++ sources in {EXT_DIR / 'csrc'}")
    cpp_extension = _import_cpp_extension()
    flags = _build_config()  # the flags setup.py uses
    JIT_BUILD_DIR.mkdir(parents=True, exist_ok=True)
    if _needs_build(sources):
        print("building the C++ CPU rasterizer (first use, ~1 min)...", flush=True)
    _ensure_ninja_on_path()
    return cpp_extension.load(
        name=JIT_MODULE_NAME,
        sources=[str(p) for p in sources],
        extra_cflags=flags["compile_flags"](EXT_DIR / "csrc"),
        extra_ldflags=flags["LD_FLAGS"],
        build_directory=str(JIT_BUILD_DIR),
        verbose=False,
    )


def _build_config() -> dict:
    return runpy.run_path(str(EXT_DIR / "build_config.py"))


@functools.lru_cache(maxsize=1)
def _extension():
    """The compiled module, or None (after one warning) when it cannot be built or loaded.

    An installed module built from other sources than the repository's (a stale ``pip install``)
    is not used: its interface may differ. The JIT build of the current sources is used instead.
    """
    try:
        import cpu_rasterizer._C as ext  # type: ignore[import-not-found]

        current = "x" + _build_config()["sources_fingerprint"](EXT_DIR / "csrc")
        if getattr(ext, "sources_fingerprint", None) == current:
            return ext
        warnings.warn("the installed cpu_rasterizer was built from older sources; using a JIT build of "
                      "submodules/cpu_rasterizer (make install refreshes the installed one)", stacklevel=2)
    except ImportError:
        pass
    try:
        return _jit_build()
    except Exception as exc:  # any build/load failure means "not available here"
        reason = one_line(exc)
        warnings.warn(f"C++ CPU rasterizer unavailable ({reason}); falling back to the torch backend (and the torch "
                      "colour loss)", stacklevel=2)
        return None


def omp_wait_policy() -> str:
    """The OpenMP waiting policy of this process, as libgomp read it when torch loaded it."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    return policy if policy in ("active", "passive") else "default (spin a while, then sleep)"


def extension_available() -> bool:
    """True when the C++ extension is installed or could be JIT-built."""
    return _extension() is not None


class _CompositeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, depths, radii, width, height, tile, threads):
        ext = _extension()
        image, alpha, final_t, n_contrib, gauss_ids, offsets = ext.forward(
            means2d, conics, opacities, colors, depths, radii, width, height, tile, ALPHA_MAX, ALPHA_MIN, T_MIN,
            threads, KERNEL_ISA,
        )
        ctx.save_for_backward(means2d, conics, opacities, colors, gauss_ids, offsets, final_t, n_contrib)
        ctx.settings = (width, height, tile, threads, KERNEL_ISA)
        return image, alpha

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_image, grad_alpha):
        means2d, conics, opacities, colors, gauss_ids, offsets, final_t, n_contrib = ctx.saved_tensors
        width, height, tile, threads, isa = ctx.settings
        grad_image = grad_image.to(colors.dtype).contiguous()
        grad_alpha = grad_alpha.to(colors.dtype).contiguous()
        d_means, d_conics, d_opac, d_colors = _extension().backward(
            means2d, conics, opacities, colors, gauss_ids, offsets, final_t, n_contrib,
            grad_image, grad_alpha, width, height, tile, ALPHA_MAX, ALPHA_MIN, T_MIN, threads, isa,
        )
        return d_means, d_conics, d_opac, d_colors, None, None, None, None, None, None


def _sort_keys(depths: torch.Tensor) -> torch.Tensor:
    """[N] depths as a contiguous floating tensor (float32 / float64 kept as is: same order and ties)."""
    depths = depths.detach()
    return (depths if depths.is_floating_point() else depths.double()).contiguous()


# Tile edge of the C++ kernels. A 32-pixel tile has about half the (Gaussian, tile) pairs of a 16-pixel one, and
# with them half the per-pair set-up. But a thread's tile state (about 28 + 4 C bytes a pixel forward, 32 + 4 C
# backward) then outgrows the L1 cache as the channel count C grows. Forward+backward at 50,000 Gaussians,
# 320x256, 2 threads, 16 -> 32 pixels (the scene of benchmarks/bench_rasterizer.py, alternating runs):
#   C=3: 56-59 -> 49-51 ms;  C=4: 56-63 -> 51-55 ms;  C=8: 63-65 -> 60-64 ms;
#   C=11: 71-96 -> 76-86 ms; C=19: 85-94 -> 91-100 ms.
WIDE_TILE = 32
WIDE_TILE_MAX_CHANNELS = 8
# Fewer wide tiles than this (images under about 256x256) keep 16-pixel tiles: the kernels share tiles among the
# threads dynamically and need many of them to balance. The rule must not involve the thread count: results are
# bit-identical on any number of threads.
MIN_WIDE_TILES = 64


def kernel_tile(channels: int, width: int, height: int) -> int:
    """The tile edge the kernels use by default: WIDE_TILE for at most WIDE_TILE_MAX_CHANNELS channels on images
    of at least MIN_WIDE_TILES such tiles, else common.TILE_SIZE. Any tile gives the same image; the gradients'
    per-tile partial sums, and so their last bits, depend on it."""
    wide_tiles = -(-width // WIDE_TILE) * -(-height // WIDE_TILE)
    return WIDE_TILE if channels <= WIDE_TILE_MAX_CHANNELS and wide_tiles >= MIN_WIDE_TILES else TILE_SIZE


def rasterize(means2d, conics, opacities, colors, depths, radii, width: int, height: int, tile: int | None = None):
    """Alpha-composite projected Gaussians on the CPU (see :mod:`gaussian_renderer.backends.common`).

    Args:
        means2d: [N, 2] pixels. conics: [N, 3]. opacities: [N]. colors: [N, C] any C.
        depths: [N] sort keys (no gradient). radii: [N] int (0 = culled).
        width, height: image size. tile: tile edge in pixels (None: :func:`kernel_tile`).
    Returns:
        image [C, H, W] and alpha [1, H, W], differentiable w.r.t. means2d, conics,
        opacities and colors. Runs on ``torch.get_num_threads()`` OpenMP threads.
    """
    if _extension() is None:
        raise RuntimeError("the C++ CPU rasterizer is not available; use the torch backend")
    if tile is None:
        tile = kernel_tile(colors.shape[1], int(width), int(height))
    dtype = working_dtype(colors)
    return _CompositeCPU.apply(
        means2d.to(dtype).contiguous(),
        conics.to(dtype).contiguous(),
        opacities.to(dtype).contiguous(),
        colors.to(dtype).contiguous(),
        _sort_keys(depths),
        radii.to(torch.int32).contiguous(),
        int(width),
        int(height),
        int(tile),
        torch.get_num_threads(),
    )
