"""From saved CAMs to label maps: fusion of the two CAMs and the background rules (pure numpy).

The CAM files (`sfc_core.cams`) hold raw maps, each channel max-normalised to [0, 1], rows
`keys` = background then the image's classes. Everything that turns them into labels lives
here, so sweeping lambda or the background threshold never runs the network again.

Fusion (the paper's inference step, `classifier + lambda * prototype`) is normalised as a
weighted mean::

    fused = (classifier + lam * prototype) / (1 + lam)

so the fused map stays in [0, 1] like the other two and one background-threshold sweep
applies to all three kinds; lam = 0 gives the classifier CAM. Because both background rules
compare channels after the same positive factor, the reference rule on this map labels
exactly as the reference's step 2 does on its un-normalised sum of pad-tricked maps
(`cam2ir`: P' + 0.7 IS' = (1 + 0.7) x pad_trick(fused)).

Background rules (the background score each pixel's foreground maps compete with):
- "reference": background channel + 0.4 against 2 x each foreground channel (the "0.4 pad
  trick"; equal to comparing 0.5 x bg + 0.2 with fg, a data-dependent threshold in [0.2, 0.7]);
- "threshold": a constant t against the foreground channels (IRN's `cam_eval_thres`); the
  saved background channel is not used.
Ties go to the background (argmax takes the first maximum, as the reference does).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sfc_core.errors import SfcError

if TYPE_CHECKING:
    from sfc_core.cam_file import CamRecord

KINDS = ("classifier", "prototype", "fused")
BACKGROUND_RULES = ("reference", "threshold")
REFERENCE_BG_OFFSET = 0.4      # reference: background + 0.4 ...
REFERENCE_FG_GAIN = 2.0        # ... against 2 x foreground


def fuse(classifier: np.ndarray, prototype: np.ndarray, lam: float) -> np.ndarray:
    """Fused CAM (classifier + lam * prototype) / (1 + lam), same shape as the inputs (K', ...)."""
    if lam < 0:
        raise SfcError(f"fusion lambda must be >= 0, got {lam}", fix="set cams.fusion_lambda >= 0")
    return (classifier + lam * prototype) / (1.0 + lam)


def kind_cam(record: CamRecord, kind: str, lam: float) -> np.ndarray:
    """The (K', H, W) map of one kind of a CAM record: "classifier", "prototype" or "fused"."""
    if kind == "classifier":
        return record.classifier
    if kind == "prototype":
        return record.prototype
    if kind == "fused":
        return fuse(record.classifier, record.prototype, lam)
    raise SfcError(f"unknown CAM kind {kind!r}", fix=f"use one of: {', '.join(KINDS)}")


def background_score(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """The score the best foreground channel must exceed to win a pixel: (K', ...) -> (...).
    "reference": fg against (bg + 0.4) / 2 (halving is exact in floating point, so the labels
    are the reference's to the last bit); "threshold": the constant `threshold`."""
    if background == "reference":
        return (cam[0] + np.asarray(REFERENCE_BG_OFFSET, dtype=cam.dtype)) / np.asarray(
            REFERENCE_FG_GAIN, dtype=cam.dtype)
    if background == "threshold":
        if threshold is None:
            raise SfcError("the threshold background rule needs a threshold",
                           fix="pass threshold= (config cams.bg_threshold)")
        return np.full(cam.shape[1:], threshold, dtype=cam.dtype)
    raise SfcError(f"unknown background rule {background!r}",
                   fix=f"set cams.background to one of: {', '.join(BACKGROUND_RULES)}")


def best_foreground(cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, score) of the strongest foreground channel per pixel: (K', ...) -> (...), (...).
    row is 1..K'-1, the first on ties (0 with a score of -inf where the image has no
    foreground row). One pass per channel: faster than an arg-max across the channel axis."""
    row = np.ones(cam.shape[1:], dtype=np.int64)
    if cam.shape[0] == 1:
        return row * 0, np.full(cam.shape[1:], -np.inf, dtype=cam.dtype)
    score = cam[1].copy()
    for k in range(2, cam.shape[0]):
        np.copyto(row, k, where=cam[k] > score)
        np.maximum(score, cam[k], out=score)
    return row, score


def label_rows(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """Row index (into the record's keys) of each pixel's label: (K', ...) -> int64 (...): the
    best foreground row where its score exceeds the background score, else 0 (ties to the
    background, as the arg-max of the reference and of IRN)."""
    row, score = best_foreground(cam)
    return np.where(score > background_score(cam, background, threshold), row, 0)


def predict_mask(record: CamRecord, kind: str, lam: float, background: str,
                 threshold: float | None = None) -> np.ndarray:
    """uint8 (H, W) class indices 0..C of one CAM record under a background rule."""
    rows = label_rows(kind_cam(record, kind, lam), background, threshold)
    return record.keys[rows].astype(np.uint8)
