"""From CAMs to labels (numpy only): the paper's fusion and the two background rules.

Maps are (K', ...) with rows = background then the image's classes, each max-normalised to
[0, 1]. Fusion is a weighted mean, ``(classifier + lam * prototype) / (1 + lam)``: it stays
in [0, 1], so one background-threshold sweep serves every kind, and the reference rule labels
exactly as the reference's un-normalised sum (cam2ir: P' + 0.7 IS') does.
Background rules: "reference" compares bg + 0.4 with 2 x each foreground channel (the "0.4
pad trick"); "threshold" compares a constant t with them (IRN's cam_eval_thres) and ignores
the saved background channel. Ties go to the background, as the reference's arg-max.
"""
from __future__ import annotations

import numpy as np

BACKGROUND_RULES = ("reference", "threshold")
REFERENCE_BG_OFFSET = 0.4      # reference: background + 0.4 ...
REFERENCE_FG_GAIN = 2.0        # ... against 2 x foreground


def fuse(classifier: np.ndarray, prototype: np.ndarray, lam: float) -> np.ndarray:
    """Fused CAM (classifier + lam * prototype) / (1 + lam), same shape as the inputs (K', ...)."""
    if lam < 0:
        raise ValueError(f"fusion lambda must be >= 0, got {lam} (set cams.fusion_lambda >= 0)")
    return (classifier + lam * prototype) / (1.0 + lam)


def background_score(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """The score the best foreground channel must exceed to win a pixel: (K', ...) -> (...).
    "reference": (bg + 0.4) / 2 (halving is exact, so the labels are the reference's to the
    last bit); "threshold": the constant ``threshold``."""
    if background == "reference":
        return (cam[0] + np.asarray(REFERENCE_BG_OFFSET, dtype=cam.dtype)) / np.asarray(
            REFERENCE_FG_GAIN, dtype=cam.dtype)
    if background == "threshold":
        if threshold is None:
            raise ValueError("the threshold background rule needs a threshold (config cams.bg_threshold)")
        return np.full(cam.shape[1:], threshold, dtype=cam.dtype)
    raise ValueError(f"unknown background rule {background!r} (cams.background: one of "
                     f"{', '.join(BACKGROUND_RULES)})")


def best_foreground(cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, score) of the strongest foreground channel per pixel: (K', ...) -> (...), (...);
    row 1..K'-1, the first on ties (0 with score -inf where the image has no foreground row)."""
    row = np.ones(cam.shape[1:], dtype=np.int64)
    if cam.shape[0] == 1:
        return row * 0, np.full(cam.shape[1:], -np.inf, dtype=cam.dtype)
    score = cam[1].copy()
    for k in range(2, cam.shape[0]):      # one pass per channel: faster than an arg-max
        np.copyto(row, k, where=cam[k] > score)
        np.maximum(score, cam[k], out=score)
    return row, score


def label_rows(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """Row of each pixel's label (K', ...) -> int64 (...): the best foreground row above background or 0."""
    row, score = best_foreground(cam)
    return np.where(score > background_score(cam, background, threshold), row, 0)
