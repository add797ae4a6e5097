"""Compiler settings shared by setup.py (pip install) and the JIT build in
gaussian_renderer/backends/cpu_backend.py. Plain Python (standard library only), so both can read it.

Portable flags only: no -march=native (the AVX2 kernels are selected at run time, so a
build runs on any x86-64); no FMA contraction so float results match the torch
reference; errno / FP-trap semantics off (they change no result, but let compares and
selects vectorise).
"""
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"]
LD_FLAGS = ["-fopenmp"]


def sources_fingerprint(csrc_dir) -> str:
    """16 hex digits identifying the C++ sources (names and contents of csrc/*.cpp, *.h).

    Compiled into the module (``sources_fingerprint``), so the backend can tell an installed
    build made from older sources and rebuild instead of calling it with a changed interface.
    """
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(csrc_dir).glob("*.[ch]*")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def compile_flags(csrc_dir) -> list:
    """CXX_FLAGS plus the sources' fingerprint as a macro (stringified in bindings.cpp)."""
    return CXX_FLAGS + [f"-DCPU_RASTERIZER_SOURCES=x{sources_fingerprint(csrc_dir)}"]
