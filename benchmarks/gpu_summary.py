"""The summary of benchmarks/gpu_check.py as markdown: steps, issue-16 targets and the measured tables.

Every figure comes from ``summary["results"]`` (the benchmark scripts' JSON); a missing
figure is shown as ``n/a`` and its target as not checked.
"""
from __future__ import annotations

SPEEDUP_TARGET = 20.0  # synthetic EndoNeRF: GPU (fast backend) vs the cpu backend on 2 threads
FEATURE_COST_TARGET = 1.3  # ms/it with 16 feature channels / plain
FEATURE_DIM = 16


def md_table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; floats with 2 decimals (1 above 100), None as n/a."""
    def cell(v) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.1f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def find_row(data: dict | None, backend: str, feature_dim: int = 0) -> dict | None:
    """The bench_train.py row of ``backend`` (label, e.g. 'gsplat+perc') and feature dimension."""
    for row in (data or {}).get("rows", []):
        if row["backend"] == backend and row["feature_dim"] == feature_dim:
            return row
    return None


def header(facts: dict) -> str:
    gpu = facts.get("gpu") or "no GPU"
    line = (f"# GPU check: {gpu} (compute {facts.get('capability')}, driver {facts.get('driver')}), "
            f"torch {facts.get('torch')} (CUDA {facts.get('torch_cuda')}), gsplat {facts.get('gsplat')}, "
            f"{facts.get('cpus')} CPUs, {facts.get('date')}\n\n`{facts.get('command')}`")
    if facts.get("smoke"):
        line += "\n\n**SMOKE RUN on the CPU at toy sizes: checks the script only; these are not GPU figures.**"
    return line


def targets(results: dict, smoke: bool) -> str:
    """The issue's targets against the measured figures."""
    fast = results.get("fast_backend")
    endo = results.get("train_endonerf")
    rows = []

    def verdict(ok: bool | None) -> str:
        if ok is None:
            return "not checked"
        return ("yes" if ok else "NO") + (" (smoke: not a GPU figure)" if smoke else "")

    tests = results.get("tests")
    if tests:
        ok = tests["failed"] == 0 and tests["errors"] == 0 and (smoke or tests["skipped"] == 0)
        rows.append(["gsplat values / gradients match the torch reference (tests/test_gsplat_backend.py)",
                     ", ".join(f"{v} {k}" for k, v in tests.items() if v) or "no tests ran", verdict(ok)])
    else:
        rows.append(["gsplat values / gradients match the torch reference", None, verdict(None)])
    plain, cpu = find_row(endo, fast or ""), find_row(results.get("cpu_baseline"), "cpu")
    if plain and cpu:
        speedup = cpu["ms_per_it"] / plain["ms_per_it"]
        rows.append([f"synthetic EndoNeRF: {fast} >= {SPEEDUP_TARGET:.0f}x faster per iteration than 2 CPU threads",
                     f"{speedup:.1f}x ({plain['ms_per_it']:.2f} vs {cpu['ms_per_it']:.2f} ms/it)",
                     verdict(speedup >= SPEEDUP_TARGET)])
    else:
        rows.append([f"synthetic EndoNeRF >= {SPEEDUP_TARGET:.0f}x faster than 2 CPU threads", None, verdict(None)])
    feat = find_row(endo, fast or "", FEATURE_DIM)
    if feat and plain:
        ratio = feat["ms_per_it"] / plain["ms_per_it"]
        rows.append([f"{FEATURE_DIM} feature channels <= {FEATURE_COST_TARGET}x plain ({fast}, EndoNeRF)",
                     f"{ratio:.2f}x", verdict(ratio <= FEATURE_COST_TARGET)])
    else:
        rows.append([f"{FEATURE_DIM} feature channels <= {FEATURE_COST_TARGET}x plain", None, verdict(None)])
    return "## Targets\n\n" + md_table(["target", "measured", "met"], rows)


def training(results: dict) -> str:
    """One table per training benchmark, then the perceptual cost and the render-stage profile."""
    parts = ["## Training (benchmarks/bench_train.py; ms/it between training renders, warm-up iterations left out)"]
    titles = {"train_endonerf": "synthetic EndoNeRF 80x64, deformable", "train_blender": "synthetic Blender 80x80",
              "cpu_baseline": "CPU baseline: synthetic EndoNeRF, cpu backend, 2 threads"}
    for key, title in titles.items():
        data = results.get(key)
        if not data:
            continue
        rows = [[r["backend"], r["feature_dim"], r["ms_per_it"], r["it_per_s"], r["vs_plain"], r["test_psnr"],
                 r["peak_gpu_mb"], r["num_gaussians"]] for r in data["rows"]]
        parts.append(f"### {title} ({data['iterations']} iterations, device {data['device']}, "
                     f"{data['threads']} threads)\n\n"
                     + md_table(["backend", "D", "ms/it", "it/s", "vs plain", "test PSNR", "peak GPU MB", "Gaussians"],
                                rows))
    endo, fast = results.get("train_endonerf"), results.get("fast_backend")
    for backend in (fast, "torch"):
        plain, perc = find_row(endo, backend or ""), find_row(endo, f"{backend}+perc")
        if plain and perc:
            parts.append(f"DINO perceptual loss ({endo['perceptual']}, every iteration) with {backend}: "
                         f"+{perc['ms_per_it'] - plain['ms_per_it']:.2f} ms/it ({perc['vs_plain']:.2f}x plain)")
    profile = (endo or {}).get("profile")
    if profile:
        stages = ", ".join(f"{name} {st['cpu_ms_per_call']:.3f} ms CPU / {st['device_ms_per_call']:.3f} ms device"
                           for name, st in profile["stages"].items())
        parts.append(f"Forward render stages per call (profiled, first backend, EndoNeRF): {stages}. "
                     f"Top ops: see gpu_check.log.")
    return "\n\n".join(parts)


def compositing(results: dict) -> str:
    """bench_rasterizer.py rows of both scene sizes, with the C=19 / C=3 forward+backward ratio."""
    rows = []
    for key in ("raster", "raster_1m"):
        data = results.get(key)
        if not data:
            continue
        fb = {(r["backend"], r["gaussians"], r["channels"]): r["fb_ms"] for r in data["rows"]}
        for r in data["rows"]:
            base = fb.get((r["backend"], r["gaussians"], 3))
            ratio = r["fb_ms"] / base if base and r["channels"] != 3 else None
            rows.append([r["backend"], r["device"], r["gaussians"], r["channels"], r["fwd_ms"], r["fb_ms"],
                         r["peak_extra_mb"], ratio])
    if not rows:
        return ""
    size = results.get("raster") or results.get("raster_1m")
    return (f"## Compositing (benchmarks/bench_rasterizer.py, {size['width']}x{size['height']}, "
            f"median of {size['repeats']})\n\n"
            + md_table(["backend", "device", "Gaussians", "C", "fwd ms", "fwd+bwd ms", "peak MB", "fwd+bwd vs C=3"],
                       rows))


def extraction(results: dict) -> str:
    data = results.get("extraction")
    if not data:
        return ""
    rows = [[r["model"], r["input"], r["batch"], r["images_per_s"], r["ms_per_batch"]] for r in data["rows"]]
    return ("## DINO extraction (benchmarks/bench_perceptual.py, random weights)\n\n"
            + md_table(["model", "input", "batch", "images/s", "ms/batch"], rows))


def render_summary(summary: dict) -> str:
    """The whole summary as markdown."""
    facts, results = summary["facts"], summary["results"]
    steps = md_table(["step", "status", "seconds", "note"],
                     [[s["step"], s["status"], s["seconds"], s["note"]] for s in summary["steps"]])
    parts = [header(facts), "## Steps\n\n" + steps, targets(results, bool(facts.get("smoke"))), training(results),
             compositing(results), extraction(results)]
    return "\n\n".join(p for p in parts if p) + "\n"
