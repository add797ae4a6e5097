"""Compiler settings shared by setup.py (pip install) and the JIT build in
gaussian_renderer/backends/cpu_backend.py. Plain Python, no imports, so both can read it.

Portable flags only: no -march=native (the AVX2 kernels are selected at run time, so a
build runs on any x86-64); no FMA contraction so float results match the torch
reference; errno / FP-trap semantics off (they change no result, but let compares and
selects vectorise).
"""
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"]
LD_FLAGS = ["-fopenmp"]
