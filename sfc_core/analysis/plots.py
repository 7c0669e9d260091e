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
import operator
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sfc_core.cam_files import CAM_KINDS, CamRecord, kind_cam, load_cam, predict_mask
from sfc_core.data import SegmentationDataset
from sfc_core.errors import SfcError
from sfc_core.eval_files import CamEval, read_cam_eval
from sfc_core.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sfc_core.masks import IGNORE, cam_overlay
from sfc_core.run_dir import RunDir

# Published results quoted from docs/published.md, always labelled "published" (not this kit's output).
PUBLISHED: list[dict[str, Any]] = [
    {"source": "SFC (AAAI 2024), published", "what": "CAM seeds (fused CAM)", "split": "VOC train", "mIoU %": 64.7},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "VOC val", "mIoU %": 71.2},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "VOC test", "mIoU %": 72.5},
    {"source": "SFC (AAAI 2024), published", "what": "final segmentation (DeepLab, ResNet-101)", "split": "COCO 2014 val", "mIoU %": 46.8},
    {"source": "SFC released log", "what": "CAM evaluation (prototype CAM, 4 scales + flip)", "split": "VOC train", "mIoU %": 63.1},
    {"source": "SIPE (CVPR 2022), published", "what": "CAM seeds (image-specific CAM)", "split": "VOC train", "mIoU %": 58.65},
    {"source": "SIPE (CVPR 2022), published", "what": "CAM seeds", "split": "COCO 2014 train", "mIoU %": 34.41},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "VOC val", "mIoU %": 68.8},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "VOC test", "mIoU %": 69.7},
    {"source": "SIPE (CVPR 2022), published", "what": "final segmentation (ResNet-101)", "split": "COCO 2014 val", "mIoU %": 40.6},
]


# -- arrays ----------------------------------------------------------------------------------


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """Label map (H, W) uint8 -> (H, W, 3) uint8: background black, ignore white, class k tab20[k-1]."""
    mask = np.asarray(mask)
    table = np.zeros((256, 3), dtype=np.uint8)
    colours = np.asarray(colormaps["tab20"].colors)
    table[1:IGNORE] = np.round(255 * colours[np.arange(IGNORE - 1) % len(colours)]).astype(np.uint8)
    table[IGNORE] = 255
    return table[mask]


PART_COLOURS = np.array([[0, 0, 0], [255, 127, 14], [44, 160, 44]], dtype=np.uint8)  # none, shared, own


def part_mask_to_rgb(part: np.ndarray) -> np.ndarray:
    """Part mask (H, W) (0 none, 1 shared, 2 own) -> (H, W, 3) uint8 (black, orange, green)."""
    return PART_COLOURS[np.asarray(part)]


def cam_overlays(image: np.ndarray, record: CamRecord, class_index: int,
                 variants: Sequence[tuple[str, float]]) -> list[np.ndarray]:
    """One class's CAM over the image (H, W, 3) uint8 for each (kind, lambda): (H, W, 3) uint8 each."""
    row = [int(k) for k in record.keys].index(class_index)
    return [cam_overlay(image, kind_cam(record, kind, lam)[row]) for kind, lam in variants]


def kind_spread(record: CamRecord, lam: float, kinds: Sequence[str] | None = None) -> dict[int, float]:
    """Per foreground class of a record, how much the CAM kinds disagree: ``{class 1..C: mean
    over pixels of (max - min) over kinds}``, maps clipped to [0, 1] as ``cam_overlay`` shows them."""
    kinds = list(CAM_KINDS) if kinds is None else kinds
    maps = np.stack([np.clip(kind_cam(record, kind, lam)[1:], 0, 1) for kind in kinds])   # (kinds, K'-1, H, W)
    spread = (maps.max(axis=0) - maps.min(axis=0)).mean(axis=(1, 2))
    return {int(k): float(v) for k, v in zip(record.keys[1:], spread)}


def pick_differing(candidates: Sequence[tuple[str, int, float]], tail_classes: Collection[int],
                   n: int = 4, n_tail: int = 2) -> list[tuple[str, int, float]]:
    """The (image id, class, spread) candidates to show: up to ``n_tail`` among ``tail_classes``,
    then any class; one per image, classes spread, never 0; highest spread first."""
    ranked = sorted((c for c in candidates if c[2] > 0), key=lambda c: -c[2])
    picked: list[tuple[str, int, float]] = []

    def take(pool: Sequence[tuple[str, int, float]], limit: int, distinct_classes: bool) -> None:
        for candidate in pool:
            if len(picked) >= limit:
                return
            if candidate[0] in {p[0] for p in picked}:
                continue
            if distinct_classes and candidate[1] in {p[1] for p in picked}:
                continue
            picked.append(candidate)

    take([c for c in ranked if c[1] in tail_classes], min(n_tail, n), distinct_classes=True)
    take(ranked, n, distinct_classes=True)
    take(ranked, n, distinct_classes=False)
    return sorted(picked, key=lambda c: -c[2])


# -- reading a run for figures ---------------------------------------------------------------


def class_values(per_class: dict[str, float | None], class_names: Sequence[str]) -> np.ndarray:
    """float64 (C,) from a JSON per-class mapping ``{name: value or null}`` (null -> nan)."""
    return np.array([as_float(per_class.get(name)) for name in class_names], dtype=np.float64)


def chosen_predictions(run: str | Path | RunDir, dataset: SegmentationDataset, kind: str,
                       list_name: str | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(image id, prediction, ground truth) uint8 (H, W) of one kind at its chosen setting."""
    run = RunDir(run)
    if not run.cam_eval_json.is_file():
        raise SfcError("the run has no CAM evaluation", path=run.cam_eval_json,
                       fix=f"run: python -m sfc_core eval-cams --run {run.root}")
    cam_eval = read_cam_eval(run.cam_eval_json)
    setting = cam_eval.setting(kind)
    for image_id in dataset.ids(list_name or cam_eval.list_name):
        record = load_cam(run, image_id, num_classes=dataset.num_classes)
        yield image_id, predict_mask(record, **setting), dataset.read_mask(image_id)


def run_mechanism(run: str | Path | RunDir, dataset: SegmentationDataset, kind: str) -> dict[str, Any]:
    """``mechanism_summary`` of a run's CAM kind on the list cam_eval.json scored (synthetic only)."""
    from sfc_core.analysis import mechanism

    samples = ((pred, truth, mechanism.read_part_mask(dataset.root, image_id))
               for image_id, pred, truth in chosen_predictions(run, dataset, kind))
    counts = mechanism.accumulate_part_confusion(samples, dataset.num_classes + 1)
    return mechanism.mechanism_summary(counts, mechanism.read_groups(dataset.root))


def coefficients_caption(second_counts: Sequence[float], extra: float) -> str:
    """The distribution coefficients' formula and where b_k and E come from."""
    from sfc_core.data.stats import VOC_REFERENCE_SECOND_COUNTS

    formula = "w_k = b_k / (n_k + E), normalised to mean 1; n_k = training images of class k"
    if np.array_equal(np.asarray(second_counts, dtype=float), VOC_REFERENCE_SECOND_COUNTS):
        return f"{formula}; b_k and E = {extra:g} are the reference's VOC constants"
    return (f"{formula}, E = {extra:.1f} expected extra samples per class from the image bank;\n"
            "b_k is the kit's rule (the paper gives b_k for VOC only): b_k = t_k^2 / m + m with "
            "t_k = n_k + E, m = mean t_k,\nso w_k is proportional to s_k + 1 / s_k, s_k = t_k / m: "
            "largest for the most and the least frequent classes")


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
    """Heat map of a (C, C) co-occurrence matrix; normalize: rows as shares of class k's images."""
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


def frequency_thirds(counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices (int64) of the most frequent, middle and least frequent thirds by image
    count (C,) (ties in class order; outer thirds C // 3 classes, at least one)."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    third = max(1, len(order) // 3)
    return order[:third], order[third:len(order) - third], order[len(order) - third:]


def symptom_magnitude(counts: Sequence[int], ratios: Sequence[float]) -> dict[str, float]:
    """How strongly the activation ratio (C,) follows the image count (C,): ``slope`` of
    log(ratio) on log(count) and the mean finite ratio of each frequency third. Calibrated: slope 0."""
    counts, ratios = np.asarray(counts, dtype=np.float64), np.asarray(ratios, dtype=np.float64)
    keep = np.isfinite(ratios) & (ratios > 0) & (counts > 0)
    slope = math.nan
    if keep.sum() >= 2 and np.ptp(counts[keep]) > 0:
        slope = float(np.polyfit(np.log(counts[keep]), np.log(ratios[keep]), 1)[0])

    def mean(classes: np.ndarray) -> float:
        values = ratios[classes][np.isfinite(ratios[classes])]
        return float(values.mean()) if len(values) else math.nan

    most, middle, least = frequency_thirds(counts)
    return {"slope": slope, "most_frequent_third": mean(most), "middle_third": mean(middle),
            "least_frequent_third": mean(least)}


def symptom_rows(counts: Sequence[int], ratios: Sequence[float], class_names: Sequence[str],
                 scope: str) -> list[dict[str, Any]]:
    """``symptom_magnitude`` as targets-table rows without a target, each third naming its classes."""
    magnitude = symptom_magnitude(counts, ratios)
    thirds = dict(zip(("most frequent", "middle", "least frequent"), frequency_thirds(counts)))
    rows = [measured_row("slope of log(activation ratio) on log(image count)", magnitude["slope"], scope)]
    for (label, classes), key in zip(thirds.items(), ("most_frequent_third", "middle_third", "least_frequent_third")):
        names = ", ".join(class_names[k] for k in classes)
        rows.append(measured_row(f"mean ratio of the {label} third ({names})", magnitude[key], scope))
    return rows


RATIO_FLOOR = 0.01     # activation ratios below (a class never predicted: 0) are drawn here


def activation_ratio_scatter(counts: Sequence[int] | dict[str, Sequence[int]],
                             ratios: dict[str, Sequence[float]], class_names: Sequence[str],
                             title: str = "Over- and under-activation vs class frequency",
                             ax: plt.Axes | None = None) -> plt.Figure:
    """Activation ratio per class against image count (log-log), one series per
    ``{label: (C,)}`` with its fitted line; ratios below RATIO_FLOOR drawn on it as triangles."""
    fig, ax = _axes(ax, (7.5, 4.8))
    floored = False
    for label, ys in ratios.items():
        xs = np.asarray(counts[label] if isinstance(counts, dict) else counts, dtype=float)
        ys = np.asarray(ys, dtype=float)
        m = symptom_magnitude(xs, ys)
        shown = np.isfinite(ys)
        low = shown & (ys < RATIO_FLOOR)
        points = ax.scatter(xs[shown & ~low], ys[shown & ~low], s=40, label=(
            f"{label}: slope {m['slope']:+.2f}; thirds {m['most_frequent_third']:.2f} / "
            f"{m['middle_third']:.2f} / {m['least_frequent_third']:.2f}"))
        colour = points.get_facecolor()[0]
        ax.scatter(xs[low], np.full(low.sum(), RATIO_FLOOR), marker="v", s=40, color=colour)
        floored |= bool(low.any())
        fit = shown & (ys > 0) & (xs > 0)
        if np.isfinite(m["slope"]):
            lx = np.log(xs[fit])
            intercept = np.mean(np.log(ys[fit])) - m["slope"] * lx.mean()
            line_x = np.array([xs[fit].min(), xs[fit].max()])
            ax.plot(line_x, np.exp(intercept) * line_x ** m["slope"], color=colour, lw=1)
        for name, x, y in zip(class_names, xs, ys):
            if np.isfinite(y):
                ax.annotate(name, (x, max(y, RATIO_FLOOR)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    for axis, subs in ((ax.xaxis, (1.0, 2.0, 5.0)), (ax.yaxis, (1.0, 3.0))):
        axis.set_major_locator(LogLocator(subs=subs))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("activation ratio, pred / GT area (log)")
    floor_note = f"; triangles: ratio below {RATIO_FLOOR:g}, drawn at it" if floored else ""
    ax.set_title(f"{title}\n(legend: slope of log ratio on log count; mean ratio of the most / middle / "
                 f"least frequent third; 1 = calibrated{floor_note})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def iou_gain_bars(counts: Sequence[int], iou_before: Sequence[float], iou_after: Sequence[float],
                  class_names: Sequence[str], title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """A bar per frequency third: its mean IoU gain in points, each class's gain a dot on it."""
    fig, ax = _axes(ax, (7.0, 4.2))
    gains = iou_gain_by_frequency(counts, iou_before, iou_after)
    per_class = 100 * (np.asarray(iou_after, dtype=float) - np.asarray(iou_before, dtype=float))
    labels = []
    for x, (name, classes, key) in enumerate(zip(("most frequent", "middle", "least frequent"),
                                               frequency_thirds(counts), GAIN_KEYS)):
        mean = 100 * gains[key]
        ax.bar(x, mean, 0.6, color="tab:green" if mean >= 0 else "tab:red", alpha=0.7)
        ax.annotate(f"{mean:+.1f}", (x + 0.31, mean), ha="left", va="center", fontsize=9, fontweight="bold")
        ax.scatter(np.full(len(classes), x), per_class[classes], color="black", s=12, zorder=3)
        labels.append(f"{name} third\n" + "\n".join(
            ", ".join(class_names[k] for k in classes[i:i + 3]) for i in range(0, len(classes), 3)))
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(range(3), labels, fontsize=8)
    ax.set_ylabel("IoU gain (points)")
    ax.set_title(title or "IoU gain by class-frequency third (bar: mean; dots: classes)")
    fig.tight_layout()
    return fig


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


def sweep_edges(cam_eval: CamEval) -> list[str]:
    """One sentence per chosen setting at an end of its sweep (the best may lie beyond)."""
    notes = []
    for kind in cam_eval.kinds:
        swept = [("threshold", cam_eval.chosen_threshold(kind), cam_eval.thresholds)]
        if cam_eval.chosen_lambda(kind) is not None:
            swept.append(("lambda", cam_eval.chosen_lambda(kind), cam_eval.lambdas))
        for what, value, sweep in swept:
            if value is not None and len(sweep) > 1 and value in (min(sweep), max(sweep)):
                end = "largest" if value == max(sweep) else "smallest"
                notes.append(f"{kind}: the chosen {what} {value:g} is the {end} swept "
                             f"({min(sweep):g}-{max(sweep):g})")
    return notes


def threshold_sweep(cam_eval: CamEval, title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """mIoU against the threshold, a line per CAM variant, a star on each kind's chosen setting."""
    fig, ax = _axes(ax, (7.0, 4.0))
    colours = {}
    for name, values in cam_eval.sweep("threshold_rule").items():
        ys = [np.nan if v is None else 100 * v for v in values]
        line, = ax.plot(cam_eval.thresholds, ys, marker=".", label=name,
                        ls="--" if "@" in name else "-", lw=2 if "@" not in name else 1)
        colours[name] = line.get_color()
    edges = (min(cam_eval.thresholds), max(cam_eval.thresholds))
    for kind in cam_eval.kinds:
        threshold, lam = cam_eval.chosen_threshold(kind), cam_eval.chosen_lambda(kind)
        name = kind if lam is None else f"{kind}@{lam:g}"
        edge = " (edge)" if threshold in edges else ""
        ax.scatter([threshold], [100 * as_float(cam_eval.miou(kind))], marker="*", s=160, zorder=4,
                   color=colours.get(name, "black"), edgecolor="black",
                   label=f"chosen {kind}: t={threshold:g}{edge}")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title or f"Background-threshold sweep on {cam_eval.list_name}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def lambda_sweep(cam_evals: dict[str, CamEval], ax: plt.Axes | None = None) -> plt.Figure:
    """mIoU of the fused CAM against lambda per run (best threshold, reference rule), chosen starred."""
    fig, ax = _axes(ax, (7.0, 4.0))
    for run_name, cam_eval in cam_evals.items():
        lambdas = cam_eval.lambdas
        best = [max((v for v in cam_eval.sweep("threshold_rule")[f"fused@{lam:g}"] if v is not None),
                    default=np.nan) for lam in lambdas]
        reference = [cam_eval.sweep("reference_rule")[f"fused@{lam:g}"] for lam in lambdas]
        line, = ax.plot(lambdas, 100 * np.asarray(best, dtype=float), marker="o",
                        label=f"{run_name}: best threshold")
        ax.plot(lambdas, 100 * np.asarray([np.nan if r is None else r for r in reference], dtype=float),
                marker="s", ls="--", color=line.get_color(), label=f"{run_name}: reference rule")
        chosen = cam_eval.chosen_lambda("fused")
        edge = " (edge)" if chosen in (min(lambdas), max(lambdas)) else ""
        ax.scatter([chosen], [100 * as_float(cam_eval.miou("fused"))], marker="*", s=160, zorder=4,
                   color=line.get_color(), edgecolor="black", label=f"{run_name}: chosen {chosen:g}{edge}")
    ax.set_xlabel("lambda  (fused = (classifier + lambda x prototype) / (1 + lambda))")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Fusion weight sweep")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cam_table(cam_evals: dict[str, CamEval]) -> list[dict[str, Any]]:
    """One row per (run, CAM kind) of cam_eval.json: tuned, authors' rule, held-out, calibration."""
    rows = []
    for run_name, cam_eval in cam_evals.items():
        held = cam_eval.heldout
        names = cam_eval.classes[1:]
        for kind in cam_eval.kinds:
            calib = cam_eval.calibration(kind)
            magnitude = symptom_magnitude(class_values(cam_eval.image_counts, names),
                                          class_values(calib.activation_ratio, names))
            rows.append({
                "run": run_name, "CAM": kind, "lambda": cam_eval.chosen_lambda(kind),
                "threshold": cam_eval.chosen_threshold(kind),
                f"mIoU % ({cam_eval.list_name}, tuned on it)": _percent(cam_eval.miou(kind)),
                "mIoU % (authors' fixed rule)": _percent(cam_eval.reference_miou(kind)),
                f"mIoU % ({cam_eval.heldout_list or 'held-out'})": _percent(held.miou(kind))
                if held else math.nan,
                "ratio slope on log count": magnitude["slope"],
                "most frequent third ratio": magnitude["most_frequent_third"],
                "least frequent third ratio": magnitude["least_frequent_third"],
                "Spearman(ratio, log count)": as_float(calib.spearman),
                "head ratio": as_float(calib.head_mean_ratio),
                "tail ratio": as_float(calib.tail_mean_ratio),
            })
    return rows


def published(source: str, what: str) -> dict[str, Any]:
    """The row of ``PUBLISHED`` with this source and what."""
    return next(row for row in PUBLISHED if row["source"] == source and row["what"] == what)


def paper_comparison(cam_eval: CamEval) -> list[dict[str, Any]]:
    """The authors'-protocol rows beside the published figures, and the (optimistic) tuned row."""
    paper = published("SFC (AAAI 2024), published", "CAM seeds (fused CAM)")
    log = published("SFC released log", "CAM evaluation (prototype CAM, 4 scales + flip)")
    fused = cam_eval.authors_protocol("fused")
    kit = f"this kit, mIoU % ({cam_eval.list_name})"
    return [
        {"row": "authors' protocol: prototype CAM (their eval_cam.py)", kit: _percent(cam_eval.authors_miou("prototype")),
         "compare with": f"{log['source']}, {log['split']}: {log['mIoU %']:g}"},
        {"row": f"authors' protocol: fused CAM, lambda {fused['lambda']:g} fixed", kit: _percent(fused["miou"]),
         "compare with": f"{paper['source']}, {paper['split']}: {paper['mIoU %']:g}"},
        {"row": f"fused CAM tuned on the list it reports (lambda {cam_eval.chosen_lambda('fused'):g}, "
                f"threshold {cam_eval.chosen_threshold('fused'):g})", kit: _percent(cam_eval.miou("fused")),
         "compare with": "neither (chosen on the list it reports: optimistic)"},
    ]


def as_float(value: float | None) -> float:
    """A JSON number or null as a float (null -> nan)."""
    return math.nan if value is None else float(value)


def _percent(value: float | None) -> float:
    return 100 * as_float(value)


CAM_COLOURBAR = "CAM value (jet, blended over the image; clipped to 0-1)"


def image_grid(panels: list[list[np.ndarray]], titles: list[list[str]] | None = None,
               col_titles: Sequence[str] | None = None, size: float = 2.2,
               colorbar: str | None = None) -> plt.Figure:
    """Rows of images: ``panels[r][c]`` (H, W, 3) uint8 or (H, W) float (gray); colorbar: the
    label of a jet colour bar on 0..1 at the right."""
    rows, cols = len(panels), max(len(row) for row in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + (0.9 if colorbar else 0), size * rows),
                             squeeze=False)
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
    if colorbar:
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        right = 1 - 0.9 / fig.get_figwidth()
        fig.tight_layout(rect=(0, 0, right, 1))
        cax = fig.add_axes((right + 0.1 / fig.get_figwidth(), 0.15, 0.15 / fig.get_figwidth(), 0.7))
        fig.colorbar(ScalarMappable(Normalize(0, 1), cmap="jet"), cax=cax, label=colorbar)
    else:
        fig.tight_layout()
    return fig


# -- saving and tables -----------------------------------------------------------------------


def save_figure(fig: plt.Figure, figures_dir: str | Path, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``figures_dir/name.png`` atomically; the figure stays open for display."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(figures_dir) / f"{name}.png", buf.getvalue())


def write_table(rows: list[dict[str, Any]], figures_dir: str | Path, name: str) -> Path:
    """Write ``rows`` (dicts) to ``name.csv`` and ``name.json`` (nan as null); returns the CSV path."""
    figures_dir = Path(figures_dir)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_json(figures_dir / f"{name}.json",
                      [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                       for row in rows])
    return atomic_write_text(figures_dir / f"{name}.csv", text.getvalue())


_COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def target_row(figure: str, measured: float | None, op: str, bound: float, scope: str = "") -> dict[str, Any]:
    """One row of a targets table: the figure, its target (``op bound``), the measured value, met."""
    value = as_float(measured)
    met = math.isfinite(value) and _COMPARISONS[op](value, bound)
    return {"figure": figure, "scope": scope, "target": f"{op} {bound:g}", "measured": value,
            "met": "yes" if met else "NO"}


def measured_row(figure: str, measured: float | None, scope: str = "") -> dict[str, Any]:
    """A targets-table row without a target (``targets_summary`` leaves it out)."""
    return {"figure": figure, "scope": scope, "target": "", "measured": as_float(measured), "met": ""}


def targets_summary(rows: list[dict[str, Any]]) -> str:
    """A plain sentence: every target met, or which ones were missed and by what."""
    rows = [row for row in rows if row["target"]]
    missed = [row for row in rows if row["met"] != "yes"]
    if not missed:
        return f"All {len(rows)} targets met."
    items = "; ".join(f"{row['figure']}{' (' + row['scope'] + ')' if row['scope'] else ''}: "
                      f"measured {row['measured']:.3g}, target {row['target']}" for row in missed)
    return f"**{len(missed)} of {len(rows)} targets missed**: {items}."


GAIN_KEYS = ("head_third_gain", "middle_third_gain", "tail_third_gain")


def iou_gain_by_frequency(counts: Sequence[int], iou_before: Sequence[float],
                          iou_after: Sequence[float]) -> dict[str, float]:
    """Mean IoU gain (after - before) per frequency third, keyed by GAIN_KEYS (nan: none)."""
    gain = np.asarray(iou_after, dtype=float) - np.asarray(iou_before, dtype=float)
    out = {}
    for key, classes in zip(GAIN_KEYS, frequency_thirds(counts)):
        finite = gain[classes][np.isfinite(gain[classes])]
        out[key] = float(finite.mean()) if len(finite) else math.nan
    return out


def mean_std_rows(rows: list[dict[str, Any]], key: str, drop: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rows grouped by ``row[key]`` (first-seen order, ``n``), ``drop`` left out: numbers as mean
    and ``"<column> std"`` (ddof=1), others their first value."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    out = []
    for name, group in groups.items():
        merged: dict[str, Any] = {key: name, "n": len(group)}
        for column in dict.fromkeys(c for row in group for c in row):
            if column == key or column in drop:
                continue
            values = [row.get(column) for row in group]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                array = np.asarray(values, dtype=float)
                finite = np.isfinite(array)
                merged[column] = float(array[finite].mean()) if finite.any() else math.nan
                merged[f"{column} std"] = float(array[finite].std(ddof=1)) if finite.sum() > 1 else math.nan
            else:
                merged[column] = values[0]
        out.append(merged)
    return out


def table_markdown(rows: list[dict[str, Any]], digits: int = 3) -> str:
    """A Markdown table of ``rows``: floats to ``digits``, nan as n/a, ``X`` and ``"X std"`` as ``mean ± std``."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    shown = [c for c in columns if not (c.endswith(" std") and c[:-4] in columns)]

    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if isinstance(value, float):
            if math.isnan(value):
                return "n/a"
            std = row.get(f"{column} std")
            spread = f" ± {std:.{digits}f}" if isinstance(std, float) and not math.isnan(std) else ""
            return f"{value:.{digits}f}{spread}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
    lines += ["| " + " | ".join(cell(row, c) for c in shown) + " |" for row in rows]
    return "\n".join(lines)
