"""Figures and tables for the notebooks: array helpers, matplotlib/seaborn charts, saving.

Array helpers are pure (``cam_overlay``, ``mask_to_rgb``). Each chart takes plain arrays and
class names, draws on a new figure (or the given axes) and returns the figure; the notebooks
save it with ``save_figure`` (atomic PNG) and tables with ``write_table`` (CSV + JSON).

    fig = class_count_bar(counts, class_names)
    save_figure(fig, figures_dir, "class_counts")
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps

from sfc_core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sfc_core.metrics import spearman_vs_count

IGNORE = 255

# Published results quoted from paper_numbers.md, shown beside the kit's own numbers and
# always labelled "published": they are other people's measurements, not this kit's output.
PUBLISHED: list[dict[str, Any]] = [
    {"source": "SFC (AAAI 2024), published", "what": "CAM seeds (fused CAM)", "split": "VOC train", "miou": 64.7},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "VOC val", "miou": 71.2},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "VOC test", "miou": 72.5},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "COCO 2014 val", "miou": 46.8},
    {"source": "SFC released log", "what": "CAM evaluation (prototype CAM, 4 scales + flip)", "split": "VOC train", "miou": 63.1},
    {"source": "SIPE (CVPR 2022), published", "what": "CAM seeds (image-specific CAM)", "split": "VOC train", "miou": 58.65},
    {"source": "SIPE (CVPR 2022), published", "what": "CAM seeds", "split": "COCO 2014 train", "miou": 34.41},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "VOC val", "miou": 68.8},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "VOC test", "miou": 69.7},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "COCO 2014 val", "miou": 40.6},
]


# -- arrays ----------------------------------------------------------------------------------


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """Colour a label map: (H, W) uint8 (0 background, 1..C classes, 255 ignore) -> (H, W, 3) uint8.

    Background is black, ignore is white, class k takes colour k-1 of matplotlib's tab20
    (cycling past 20 classes).
    """
    mask = np.asarray(mask)
    table = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(colormaps["tab20"].colors)
    table[1:IGNORE] = np.round(255 * colours[np.arange(IGNORE - 1) % len(colours)]).astype(np.uint8)
    table[IGNORE] = 255
    return table[mask]


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, vmax: float = 1.0) -> np.ndarray:
    """Blend a CAM onto an image with the jet colour map.

    image: (H, W, 3) uint8; cam: (H, W) float, shown on [0, vmax] (clipped).
    Returns (H, W, 3) uint8 = (1 - alpha) * image + alpha * jet(cam / vmax).
    """
    heat = colormaps["jet"](np.clip(np.asarray(cam, dtype=np.float32) / max(vmax, 1e-8), 0, 1))[..., :3]
    blend = (1 - alpha) * np.asarray(image, dtype=np.float32) / 255 + alpha * heat
    return np.round(255 * blend).astype(np.uint8)


# -- charts ----------------------------------------------------------------------------------


def _axes(ax: plt.Axes | None, figsize: tuple[float, float]) -> tuple[plt.Figure, plt.Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize)
    return fig, ax


def per_class_bar(values: dict[str, Sequence[float]] | Sequence[float], class_names: Sequence[str],
                  ylabel: str, title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """Bars per class: one series (C,) or several ``{label: (C,)}`` side by side."""
    series = values if isinstance(values, dict) else {"": values}
    fig, ax = _axes(ax, (max(6.0, 0.55 * len(class_names) * len(series)), 3.6))
    width = 0.8 / len(series)
    x = np.arange(len(class_names))
    for i, (label, ys) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.asarray(ys, dtype=float), width,
               label=label or None)
    ax.set_xticks(x, class_names, rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def class_count_bar(counts: Sequence[int], class_names: Sequence[str], title: str = "Images per class",
                    ax: plt.Axes | None = None) -> plt.Figure:
    """Image count per class (C,), sorted from most to least frequent, with the imbalance ratio."""
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")
    ratio = counts.max() / max(counts.min(), 1)
    return per_class_bar(counts[order], [class_names[i] for i in order], "images",
                         f"{title} (most / least frequent = {ratio:.1f}x)", ax)


def cooccurrence_heatmap(matrix: np.ndarray, class_names: Sequence[str], title: str = "Co-occurrence",
                         normalize: bool = True, ax: plt.Axes | None = None) -> plt.Figure:
    """Heat map of a (C, C) co-occurrence count matrix (diagonal = images of the class).

    normalize: show row k as the share of class k's images that also hold class j.
    """
    import seaborn as sns

    matrix = np.asarray(matrix, dtype=float)
    if normalize:
        matrix = matrix / np.maximum(np.diag(matrix), 1)[:, None]
    fig, ax = _axes(ax, (0.5 * len(class_names) + 2.5, 0.45 * len(class_names) + 1.5))
    sns.heatmap(matrix, ax=ax, xticklabels=class_names, yticklabels=class_names, cmap="viridis",
                annot=len(class_names) <= 12, fmt=".2f" if normalize else ".0f", square=True,
                cbar_kws={"label": "P(column | row)" if normalize else "images"})
    ax.set_title(title)
    fig.tight_layout()
    return fig


def per_class_vs_frequency(counts: Sequence[int], values: dict[str, Sequence[float]],
                           class_names: Sequence[str], ylabel: str, reference: float | None = None,
                           title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """Scatter of a per-class figure against the class's image count (log x), one series per run.

    counts: (C,); values: ``{label: (C,)}``; reference: a horizontal line (e.g. ratio 1).
    Each series' label carries its Spearman rho against log count.
    """
    fig, ax = _axes(ax, (7.0, 4.5))
    counts = np.asarray(counts, dtype=float)
    for label, ys in values.items():
        ys = np.asarray(ys, dtype=float)
        rho, _ = spearman_vs_count(ys, counts)
        ax.scatter(counts, ys, label=f"{label} (Spearman {rho:+.2f})", s=40)
        for name, x, y in zip(class_names, counts, ys):
            if np.isfinite(y):
                ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if reference is not None:
        ax.axhline(reference, color="grey", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def activation_ratio_scatter(counts: Sequence[int], ratios: dict[str, Sequence[float]],
                             class_names: Sequence[str], ax: plt.Axes | None = None) -> plt.Figure:
    """Activation ratio (predicted / GT area) per class against class frequency (log x)."""
    return per_class_vs_frequency(counts, ratios, class_names, "activation ratio (pred / GT area)",
                                  reference=1.0, title="Over- and under-activation vs class frequency",
                                  ax=ax)


def curves(records: list[dict[str, float]], keys: Sequence[str], x: str = "step",
           title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """Line plot of ``keys`` against ``x`` from a list of records (e.g. metrics.jsonl lines)."""
    fig, ax = _axes(ax, (7.0, 3.8))
    for key in keys:
        points = [(r[x], r[key]) for r in records if key in r and x in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key)
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def image_grid(panels: list[list[np.ndarray]], titles: list[list[str]] | None = None,
               col_titles: Sequence[str] | None = None, size: float = 2.2) -> plt.Figure:
    """Rows of images: ``panels[r][c]`` is (H, W, 3) uint8 or (H, W) float (shown in gray)."""
    rows, cols = len(panels), max(len(row) for row in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(row):
                continue
            ax.imshow(row[c], cmap=None if row[c].ndim == 3 else "gray", interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[r][c], fontsize=8)
            elif col_titles is not None and r == 0:
                ax.set_title(col_titles[c], fontsize=9)
    fig.tight_layout()
    return fig


# -- saving and tables -----------------------------------------------------------------------


def save_figure(fig: plt.Figure, figures_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``figures_dir/name.png`` atomically; the figure stays open for display."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(figures_dir) / f"{name}.png", buf.getvalue())


def write_table(rows: list[dict[str, Any]], figures_dir: str | Path, name: str) -> Path:
    """Write ``rows`` (dicts with the same keys) to ``name.csv`` and ``name.json``; returns the CSV."""
    figures_dir = Path(figures_dir)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_json(figures_dir / f"{name}.json", rows)
    return atomic_write_text(figures_dir / f"{name}.csv", text.getvalue())


def table_markdown(rows: list[dict[str, Any]], digits: int = 3) -> str:
    """A Markdown table of ``rows`` (floats rounded to ``digits``; nan shown as n/a)."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
