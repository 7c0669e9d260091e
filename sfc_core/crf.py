"""Dense CRF (pydensecrf2) and the confident labels built on it.

The confident labels (confident foreground, confident background, 255 between) serve both
routes of step 2 (docs/method.md 5, docs/reference.md 5.1): IRN's relation labels (VOC), and
the final pseudo masks of the COCO route, where IRN costs too much (DeepLab ignores 255).
``cfg.refine.relation_rule`` makes the two score maps they are cut from:

- ``"reference"`` (SFC's cam2ir): fused CAM (classifier + 0.7 x prototype, each after the
  background rule); and again with the background channel halved;
- ``"thresholds"`` (IRN's own): the fused foreground CAMs, max-normalised, padded with a
  constant background of 0.30 (confident foreground) and of 0.05 (confident background).

Each map is arg-maxed and smoothed by the CRF: foreground where the first says foreground,
background where both say background, 255 where they disagree.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels

from sfc_core.config import RefineConfig
from sfc_core.errors import SfcError
from sfc_core.fusion import background_score, fuse
from sfc_core.masks import IGNORE

RELATION_RULES = ("reference", "thresholds")


def crf_labels(image: np.ndarray, label_maps: Sequence[np.ndarray], n_labels: int,
               cfg: RefineConfig) -> list[np.ndarray]:
    """Smooth hard label maps of one image with a fully connected CRF (Krähenbühl and Koltun).

    image: uint8 (H, W, 3) RGB (read-only is fine); label_maps: int (H, W) maps in
    [0, n_labels). Returns one int64 (H, W) per map. Unary from the hard labels (-log p, p =
    label confidence 0.7 for the given label, the rest shared by the others); Gaussian and
    bilateral pairwise terms; mean-field iterations; arg-max. Constants from ``cfg``
    (reference: 10 it., 3/3, 50/5/10, 0.7). The pairwise terms, built once, serve every map:
    the same result as one CRF per map, for 0.73x the CPU with two maps at 96 px
    (``python -m benchmarks.speed_changes``)."""
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
    """Confident labels uint8 (H, W) from two score maps, each arg-maxed and CRF-smoothed.

    image: uint8 (H, W, 3); fg_scores, bg_scores: (K', H, W) over ``keys`` (K',) (0, then the
    present classes), favouring foreground and background. A class where ``fg_scores`` says
    so, 0 where both say background, 255 elsewhere."""
    keys = np.asarray(keys, np.int64)
    fg, bg = (keys[smooth] for smooth in crf_labels(image, [fg_scores.argmax(0), bg_scores.argmax(0)],
                                                     len(keys), cfg))
    out = fg.astype(np.uint8)
    out[(fg == 0) & (bg != 0)] = IGNORE
    return out


def rule_scores(cam: np.ndarray, background: str, threshold: float | None = None) -> np.ndarray:
    """(K', ...) -> (K', ...): channel 0 replaced by sfc_core.fusion's background score under a
    background rule, so the arg-max over channels is ``fusion.label_rows`` (ties to background)."""
    return np.concatenate([background_score(cam, background, threshold)[None], cam[1:]])


def confidence_scores(classifier: np.ndarray, prototype: np.ndarray,
                      cfg: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """The foreground- and background-favouring (K', H, W) score maps of ``cfg.relation_rule``.

    classifier, prototype: (K', H, W) raw max-normalised CAMs (channel 0 = background), fused
    with ``cfg.relation_lambda`` (a weighted mean, so the reference's sum of pad-tricked maps
    is a positive multiple of these scores: the same arg-max, also after halving the
    background channel)."""
    fused = fuse(classifier, prototype, cfg.relation_lambda)
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
