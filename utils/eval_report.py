"""full_eval.py's outputs: results.csv, results.md (with published reference figures) and results.png.

Rows come from :func:`utils.eval_steps.collect_row`. Missing values (no LPIPS weights, a
step skipped) are left blank, never filled in.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError
from utils.eval_suite import Suite
from utils.io_utils import atomic_path, write_text

# (row key, table header, format); the CSV keeps full precision under the row keys
COLUMNS = [("PSNR", "PSNR", "{:.2f}"), ("SSIM", "SSIM", "{:.4f}"), ("LPIPS", "LPIPS", "{:.4f}"),
           ("mask", "mask", "{}"), ("gaussians", "Gaussians", "{:d}"), ("train_s", "train time (s)", "{:.1f}"),
           ("fps", "render FPS", "{:.1f}"), ("peak_mib", "peak memory (MiB)", "{:.0f}"),
           ("extract_ips", "extraction img/s", "{:.2f}")]
CSV_KEYS = ["run", "scene", "backbone", "PSNR", "SSIM", "LPIPS", "mask", "test_views", "iterations", "gaussians",
            "train_s", "fps", "peak_mib", "extract_ips"]
TIMING_KEYS = ("train_s", "fps", "peak_mib", "extract_ips")  # vary from run to run; the rest must not
MEAN_KEYS = ("PSNR", "SSIM", "LPIPS", "train_s", "fps", "extract_ips")
REFERENCE_COLUMNS = [("PSNR", "PSNR", "{:.2f}"), ("SSIM", "SSIM", "{:.4f}"), ("LPIPS", "LPIPS", "{:.3f}"),
                     ("train_time_s", "train time (s)", "{:.0f}"), ("fps", "render FPS", "{:.0f}")]
RANDOM_INIT_NOTE = " (offline: DINO backbones with random weights, --random_init)"
CHART = {"bar_h": 22, "gap": 6, "label_w": 170, "plot_w": 260, "margin": 12, "title_h": 30}


def _fmt(value, fmt: str) -> str:
    return "" if value is None else fmt.format(value)


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def mean_row(rows: list[dict], label: str) -> dict:
    """Mean of each averaged column over ``rows`` (where present); max of peak memory."""
    row = {"run": label, **{k: _mean(rows, k) for k in MEAN_KEYS}}
    peaks = [r["peak_mib"] for r in rows if r.get("peak_mib") is not None]
    row["peak_mib"] = max(peaks) if peaks else None
    masks = {r.get("mask") for r in rows}
    row["mask"] = masks.pop() if len(masks) == 1 else "mixed"
    return row


def _markdown_table(headers: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def _run_lines(rows: list[dict]) -> list[list[str]]:
    return [[r["run"], *(_fmt(r.get(k), f) for k, _, f in COLUMNS)] for r in rows]


def reference_section(suite: Suite, ours: dict) -> str:
    """Published figures of the suite's reference methods beside our mean."""
    ref = suite.data["reference"]
    lines = [["ours (this run, mean)", *(_fmt(ours.get({"train_time_s": "train_s"}.get(k, k)), f)
                                         for k, _, f in REFERENCE_COLUMNS)]]
    for method, figures in ref.get("methods", {}).items():
        lines.append([f"{method} (published)", *(_fmt(figures.get(k), f) for k, _, f in REFERENCE_COLUMNS)])
    head = f"## Published reference figures ({ref.get('scope', 'as published')})\n\nSource: {ref['source']}\n\n"
    return head + _markdown_table(["method", *(h for _, h, _ in REFERENCE_COLUMNS)], lines)


def backbone_section(rows: list[dict], backbones: list[str]) -> str:
    """One line per backbone: means over its scenes."""
    lines = []
    for b in backbones:
        mine = [r for r in rows if r.get("backbone") == b]
        if mine:
            m = mean_row(mine, b)
            lines.append([b, *(_fmt(m.get(k), f) for k, _, f in COLUMNS if k not in ("mask", "gaussians", "fps"))])
    headers = ["backbone", *(h for k, h, _ in COLUMNS if k not in ("mask", "gaussians", "fps"))]
    return "## Per backbone (mean over scenes)\n\n" + _markdown_table(headers, lines)


def markdown(suite: Suite, rows: list[dict], random_init: bool, launcher: str) -> str:
    """results.md: title, notes, per-run table (+ mean), backbone and reference sections."""
    data = suite.data
    title = data.get("title", data["name"]) + (RANDOM_INIT_NOTE if random_init else "")
    parts = [f"# {title}"]
    if data.get("description"):
        parts.append(data["description"])
    parts.append(f"Protocol: {data.get('protocol', 'as configured per scene')}. Launcher: {launcher}. "
                 "Train time and extraction img/s are wall times of the scripts (start-up and loading included); "
                 "render FPS counts render() only; "
                 "peak memory is the training process's maximum resident set size. Blank: not available "
                 "(e.g. LPIPS without its backbone's weights in the local torch cache).")
    lines = _run_lines(rows)
    if len(rows) > 1:
        lines.append(_run_lines([mean_row(rows, "mean")])[0])
    parts.append(_markdown_table(["run", *(h for _, h, _ in COLUMNS)], lines))
    if data.get("backbones"):
        parts.append(backbone_section(rows, data["backbones"]))
    if data.get("reference"):
        parts.append(reference_section(suite, mean_row(rows, "ours")))
    return "\n\n".join(parts) + "\n"


def csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_KEYS})
    return buf.getvalue()


def _bar_panel(labels: list[str], values: list[float | None], title: str) -> np.ndarray:
    """[H,W,3] uint8 horizontal bar chart (white background) of ``values`` (None: no bar)."""
    c = CHART
    h = c["title_h"] + len(values) * (c["bar_h"] + c["gap"]) + c["margin"]
    w = c["label_w"] + c["plot_w"] + 2 * c["margin"] + 60
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, title, (c["margin"], 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    top = max([v for v in values if v is not None], default=1.0) or 1.0
    for i, (label, v) in enumerate(zip(labels, values)):
        y = c["title_h"] + i * (c["bar_h"] + c["gap"])
        cv2.putText(img, label[:24], (c["margin"], y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        if v is None:
            continue
        x0 = c["margin"] + c["label_w"]
        x1 = x0 + max(1, int(round(c["plot_w"] * v / top)))
        cv2.rectangle(img, (x0, y), (x1, y + c["bar_h"]), (70, 110, 200), -1)
        cv2.putText(img, f"{v:.2f}" if v < 100 else f"{v:.0f}", (x1 + 4, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return img


def chart(rows: list[dict]) -> np.ndarray:
    """[H,W,3] uint8 (RGB): test PSNR and training time per run, side by side."""
    labels = [r["run"] for r in rows]
    left = _bar_panel(labels, [r.get("PSNR") for r in rows], "test PSNR (dB)")
    right = _bar_panel(labels, [r.get("train_s") for r in rows], "train time (s)")
    return np.concatenate([left, right], axis=1)


def write_reports(out_dir: Path, suite: Suite, rows: list[dict], random_init: bool, launcher: str) -> list[Path]:
    """Write results.csv, results.md and results.png into ``out_dir``; returns their paths."""
    paths = [out_dir / "results.csv", out_dir / "results.md", out_dir / "results.png"]
    write_text(paths[0], csv_text(rows))
    write_text(paths[1], markdown(suite, rows, random_init, launcher))
    with atomic_path(paths[2]) as tmp:
        if not cv2.imwrite(tmp, chart(rows)[:, :, ::-1]):
            raise UserError(f"{paths[2]}: could not write the chart")
    return paths
