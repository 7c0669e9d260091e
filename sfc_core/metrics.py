"""Segmentation metrics from one integer confusion matrix ``conf[gt, pred]`` (K, K) summed over an
image list, as the VOC protocol does (ground truth 255 counts for nothing); on the device:
``confusion_counts`` summed over the list (and ranks), then ``confusion_from_counts`` once.
Calibration (the paper's over-/under-activation): ``activation_ratio``, ``error_shares`` and
``spearman_vs_count``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats

from sfc_core.errors import SfcError
from sfc_core.masks import IGNORE


def _as_uint8(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return labels
    if not np.issubdtype(labels.dtype, np.integer):
        raise SfcError(f"{what} has dtype {labels.dtype}, expected integer class indices",
                       fix="pass label maps as integer arrays (uint8 preferred)")
    if labels.size and (labels.min() < 0 or labels.max() > IGNORE):
        raise SfcError(f"{what} has values outside 0..255 (min {labels.min()}, max {labels.max()})",
                       fix="class indices are 0..C with 255 = ignore")
    return labels.astype(np.uint8)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts int64 (K, K) ``conf[g, p]``; pred, gt one shape in 0..K-1 (gt 255 =
    ignore); out-of-range ground truth is reported."""
    pred, gt = _as_uint8(pred, "prediction"), _as_uint8(gt, "ground truth")
    if pred.shape != gt.shape:
        raise SfcError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}",
                       fix="resize the prediction to the ground-truth mask's size")
    k = num_classes
    if not 0 < k < IGNORE:
        raise SfcError(f"num_classes={k} is outside 1..254")
    out_of_range = pred >= k
    if out_of_range.any() and (gt[out_of_range] != IGNORE).any():
        bad = np.unique(pred[out_of_range & (gt != IGNORE)])
        raise SfcError(f"prediction has class values {bad.tolist()} outside 0..{k - 1}",
                       fix="map uncertain (255) prediction pixels to a class or to ignore first")
    index = gt.astype(np.uint16).ravel() * k       # at most 255 * K + 255 < 2**16
    index += pred.ravel()
    return confusion_from_counts(np.bincount(index, minlength=IGNORE * k), k)


def confusion_counts(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``confusion_matrix``'s counts on the device: int64 (256 * K,) of ``gt * K + pred``,
    ignore included, so sums over images and ranks stay exact and the check waits for the host."""
    if pred.shape != gt.shape:
        raise SfcError(f"prediction shape {tuple(pred.shape)} differs from ground truth {tuple(gt.shape)}",
                       fix="resize the prediction to the ground-truth mask's size")
    index = gt.reshape(-1).long() * num_classes + pred.reshape(-1)
    return torch.bincount(index, minlength=(IGNORE + 1) * num_classes)


def confusion_from_counts(counts: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """The int64 (K, K) confusion from summed ``confusion_counts`` (read once); row 255
    (ignore) dropped, SfcError for ground truth in K..254."""
    k = num_classes
    counts = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if counts[k * k:IGNORE * k].any():
        bad = np.flatnonzero(counts[k * k:IGNORE * k].reshape(-1, k).sum(1)) + k
        raise SfcError(f"ground truth has class values {bad.tolist()} outside 0..{k - 1} and 255",
                       fix="check that the masks and the run use the same class list")
    return counts[:k * k].reshape(k, k).astype(np.int64)


def threshold_confusions(fg_class: np.ndarray, fg_score: np.ndarray, gt: np.ndarray,
                         thresholds: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusions int64 (T, K, K) of ``where(fg_score > t, fg_class, 0)`` for every
    ascending threshold t at once: one bincount and a cumulative sum. fg_class, fg_score, gt: (P,)."""
    k, t = num_classes, len(thresholds)
    # in the scores' dtype, so ties break as `score > t` does on those arrays
    thresholds = np.asarray(thresholds, dtype=fg_score.dtype)
    if np.any(np.diff(thresholds) <= 0):
        raise SfcError(f"thresholds must be strictly ascending, got {thresholds.tolist()}",
                       fix="sort the threshold sweep (cams.threshold_sweep) and drop repeats")
    index = (gt.astype(np.int64) * k + fg_class) * (t + 1)
    for threshold in thresholds:       # + how many thresholds are below the score (T passes
        index += fg_score > threshold  # beat a searchsorted for sweeps this short)
    counts = np.bincount(index, minlength=k * k * (t + 1)).reshape(k, k, t + 1)
    # foreground at threshold i <=> above > i: sum the bins above..T that exceed i
    fg_counts = np.cumsum(counts[..., ::-1], axis=-1)[..., ::-1][..., 1:]   # (K, K, T)
    conf = np.moveaxis(fg_counts, -1, 0).copy()                            # (T, K, K)
    conf[:, :, 0] += counts.sum(axis=(1, 2))[None, :] - fg_counts.sum(axis=1).T
    return conf


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU, float64 (K,); nan for a class absent from both GT and prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """mIoU over the classes present in GT or prediction (VOC protocol: nanmean)."""
    iou = iou_from_confusion(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise as float64, nan where den is 0 (no warning)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def precision_recall(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall), float64 (K,) each: TP / predicted and TP / GT (nan where 0/0)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    return ratio(tp, conf.sum(0)), ratio(tp, conf.sum(1))


def activation_ratio(conf: np.ndarray) -> np.ndarray:
    """Predicted area / GT area per class, float64 (K,): > 1 over-, < 1 under-activation."""
    conf = np.asarray(conf, dtype=np.float64)
    return ratio(conf.sum(0), conf.sum(1))


def error_shares(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fp_share, fn_share) float64 (K,) over each class's union (IoU + both = 1)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return ratio(conf.sum(0) - tp, union), ratio(conf.sum(1) - tp, union)


def spearman_vs_count(values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Spearman (rho, p) of a per-class figure (C,) against log image count; (nan, nan) with
    fewer than 3 usable classes or a constant."""
    values, counts = np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    keep = np.isfinite(values) & (counts > 0)
    if keep.sum() < 3 or np.ptp(values[keep]) == 0 or np.ptp(counts[keep]) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(values[keep], np.log(counts[keep]))
    return float(result.statistic), float(result.pvalue)


def finite_or_none(x: float) -> float | None:
    """``x`` as a float, None where it is nan or infinite (JSON has no nan)."""
    return None if not math.isfinite(x) else float(x)


def percent(x: float | None) -> str:
    """A fraction as a percentage with one decimal for tables, "-" where it is None or nan."""
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def per_class(values: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """``{name: value}`` over (K,) values and K names, None where a value is not finite."""
    return {name: finite_or_none(v) for name, v in zip(names, values)}


def scores(conf: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """mIoU and per-class IoU / precision / recall of a (K, K) confusion; names has K entries."""
    precision, recall = precision_recall(conf)
    return {"miou": finite_or_none(mean_iou(conf)), "iou": per_class(iou_from_confusion(conf), names),
            "precision": per_class(precision, names), "recall": per_class(recall, names)}
