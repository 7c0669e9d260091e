"""Dense CRF (pydensecrf2) and the confident labels built on it.

Confident labels (confident foreground, confident background, 255 between) serve IRN's
relation labels (VOC) and the COCO route's final pseudo masks (docs/method.md 5). Two score
maps are cut from the fused CAM by ``cfg.refine.relation_rule``: "reference" (SFC's cam2ir: the
0.4 background rule, then again with the background channel halved) or "thresholds" (IRN's:
constant backgrounds of 0.30 and 0.05). Each is arg-maxed and CRF-smoothed: foreground where
the first says so, background where both do, 255 where they disagree.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels

from sfc_core.config import RefineConfig
from sfc_core.errors import SfcError
from sfc_core.masks import IGNORE
from sfc_core.method.fusion import background_score

RELATION_RULES = ("reference", "thresholds")


def crf_labels(image: np.ndarray, label_maps: Sequence[np.ndarray], n_labels: int,
               cfg: RefineConfig) -> list[np.ndarray]:
    """Smooth hard label maps of one image with a fully connected CRF (Krähenbühl and Koltun).

    image: uint8 (H, W, 3) RGB; label_maps: int (H, W) in [0, n_labels) -> one int64 (H, W)
    per map. Pairwise terms built once for every map; constants from ``cfg``."""
    height, width = image.shape[:2]
    if n_labels < 2:  # nothing to choose between
        return [np.zeros((height, width), np.int64) for _ in label_maps]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.addPairwiseGaussian(sxy=cfg.crf_gaussian_sxy, compat=cfg.crf_gaussian_compat)
    crf.addPairwiseBilateral(sxy=cfg.crf_bilateral_sxy, srgb=cfg.crf_bilateral_srgb,
                             rgbim=np.array(image, dtype=np.uint8, order="C"),  # a writable copy
                             compat=cfg.crf_bilateral_compat)
    out = []
    for labels in label_maps:
        unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=cfg.crf_label_confidence,
                                  zero_unsure=False)
        crf.setUnaryEnergy(np.ascontiguousarray(unary))
        q = np.asarray(crf.inference(cfg.crf_iterations), np.float32)
        out.append(q.reshape(n_labels, height, width).argmax(0))
    return out


def confident_labels(image: np.ndarray, fg_scores: np.ndarray, bg_scores: np.ndarray,
                     keys: np.ndarray, cfg: RefineConfig) -> np.ndarray:
    """Confident labels uint8 (H, W): a class where ``fg_scores`` says so, 0 where both
    say background, 255 elsewhere. fg_scores, bg_scores: (K', H, W) over ``keys`` (K',)."""
    keys = np.asarray(keys, np.int64)
    fg, bg = (keys[smooth] for smooth in crf_labels(image, [fg_scores.argmax(0), bg_scores.argmax(0)],
                                                     len(keys), cfg))
    out = fg.astype(np.uint8)
    out[(fg == 0) & (bg != 0)] = IGNORE
    return out


def rule_scores(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """(K', ...) with channel 0 a rule's background score: its arg-max is ``fusion.label_rows``'s."""
    return np.concatenate([background_score(cam, background, threshold)[None], cam[1:]])


def confidence_scores(fused: np.ndarray, cfg: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """The foreground- and background-favouring (K', H, W) scores of ``cfg.relation_rule`` from
    the fused CAM at ``cfg.relation_lambda`` (the reference's arg-max)."""
    if cfg.relation_rule == "reference":
        fg_scores = rule_scores(fused, "reference")
        bg_scores = fg_scores.copy()           # explicit copy (quirk 27: no aliasing)
        bg_scores[0] *= cfg.relation_bg_scale
        return fg_scores, bg_scores
    if cfg.relation_rule == "thresholds":
        return (rule_scores(fused, "threshold", cfg.conf_fg_threshold),
                rule_scores(fused, "threshold", cfg.conf_bg_threshold))
    raise SfcError(f"unknown relation rule {cfg.relation_rule!r}",
                   fix=f"set refine.relation_rule to one of: {', '.join(RELATION_RULES)}")
