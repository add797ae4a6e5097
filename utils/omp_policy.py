"""The OpenMP waiting policy, set on import: import this module before torch.

torch's threads and the C++ rasterizer's share one libgomp, which reads ``OMP_WAIT_POLICY``
once, when torch loads it. Passive: a thread that finds no work sleeps at once instead of
spinning, so a run sharing its cores with other busy processes does not collapse. Measured with
the benchmarks' ``--contention`` modes (README, "Contention"): training on the synthetic Blender
scene took 333 ms/it quiet and 1467 ms/it with one busy process per core under libgomp's default
spin-then-sleep, 154 and 92 ms/it with passive waiting. A value set by the user wins.
"""
import os

OMP_WAIT_POLICY = "PASSIVE"
os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
