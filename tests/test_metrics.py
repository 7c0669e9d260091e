"""Confusion matrix, IoU protocol and calibration helpers against independent computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from sfc_core.errors import SfcError
from sfc_core.metrics import (
    activation_ratio,
    confusion_counts,
    confusion_from_counts,
    confusion_matrix,
    error_shares,
    iou_from_confusion,
    mean_iou,
    precision_recall,
    spearman_vs_count,
    threshold_confusions,
)


def loop_confusion(pred, gt, k):
    conf = np.zeros((k, k), dtype=np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g != 255:
            conf[g, p] += 1
    return conf


def random_masks(rng, shape, k, absent=()):
    """gt and pred with ~10% ignore pixels; classes in `absent` never occur in either."""
    present = [c for c in range(k) if c not in absent]
    gt = rng.choice(present, size=shape).astype(np.uint8)
    gt[rng.random(shape) < 0.1] = 255
    pred = rng.choice(present, size=shape).astype(np.uint8)
    return pred, gt


def test_confusion_matches_loop_count_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    pred, gt = random_masks(rng, (37, 53), 7, absent=(3, 5))
    conf = confusion_matrix(pred, gt, 7)
    assert conf.dtype == np.int64 and conf.shape == (7, 7)
    np.testing.assert_array_equal(conf, loop_confusion(pred, gt, 7))
    assert conf.sum() == (gt != 255).sum()
    assert conf[3].sum() == conf[:, 3].sum() == 0


def test_confusion_accepts_other_integer_dtypes_and_any_shape():
    rng = np.random.default_rng(1)
    pred, gt = random_masks(rng, (4, 5, 6), 4)
    expected = loop_confusion(pred, gt, 4)
    np.testing.assert_array_equal(confusion_matrix(pred.astype(np.int64), gt.astype(np.int32), 4),
                                  expected)


def test_confusion_rejects_out_of_range_values_and_shape_mismatch():
    gt = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    with pytest.raises(SfcError, match="prediction has class values \\[5\\]"):
        confusion_matrix(np.array([[0, 1], [5, 0]], dtype=np.uint8), gt, 3)
    with pytest.raises(SfcError, match="ground truth has class values \\[9\\]"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.array([[0, 9], [1, 1]], np.uint8), 3)
    with pytest.raises(SfcError, match="shape"):
        confusion_matrix(np.zeros((2, 3), np.uint8), gt, 3)
    # a prediction of 255 on an ignored pixel does not count, so it is accepted
    pred = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    assert confusion_matrix(pred, gt, 3).trace() == 3


def test_device_counts_summed_give_the_numpy_confusion_of_every_image():
    """confusion_counts per image (a (B, H, W) batch too), summed as tensors and read once,
    equal the sum of confusion_matrix: ignore pixels dropped, absent classes empty."""
    rng = np.random.default_rng(2)
    pairs = [random_masks(rng, (3, 17, 11), 6, absent=(4,)) for _ in range(3)]
    counts = sum(confusion_counts(torch.from_numpy(pred).long(), torch.from_numpy(gt), 6) for pred, gt in pairs)
    assert counts.dtype == torch.int64 and counts.shape == (256 * 6,)
    conf = confusion_from_counts(counts, 6)
    assert conf.dtype == np.int64 and conf.shape == (6, 6)
    np.testing.assert_array_equal(conf, sum(confusion_matrix(pred, gt, 6) for pred, gt in pairs))
    assert conf[4].sum() == conf[:, 4].sum() == 0


def test_device_counts_report_bad_ground_truth_at_the_read_and_refuse_other_shapes():
    gt = torch.tensor([[0, 9], [1, 255]], dtype=torch.uint8)
    counts = confusion_counts(torch.zeros(2, 2, dtype=torch.long), gt, 3)    # no check yet: no host read
    with pytest.raises(SfcError, match="ground truth has class values \\[9\\]"):
        confusion_from_counts(counts, 3)
    with pytest.raises(SfcError, match="shape"):
        confusion_counts(torch.zeros(2, 3, dtype=torch.long), gt, 3)


def test_iou_and_mean_iou_follow_the_voc_protocol():
    # class 0: tp 3, gt 5, pred 4 -> 3/6; class 1: tp 1, gt 2, pred 1 -> 1/2;
    # class 2: predicted twice, never in GT -> 0 (counts in the mean); class 3: absent -> nan
    conf = np.array([[3, 0, 2, 0],
                     [1, 1, 0, 0],
                     [0, 0, 0, 0],
                     [0, 0, 0, 0]])
    iou = iou_from_confusion(conf)
    np.testing.assert_allclose(iou[:3], [3 / 6, 1 / 2, 0.0])
    assert np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_mean_iou_on_random_masks_matches_a_per_class_set_computation():
    rng = np.random.default_rng(2)
    k = 6
    pairs = [random_masks(rng, (20, 30), k, absent=(4,)) for _ in range(3)]
    conf = sum(confusion_matrix(p, g, k) for p, g in pairs)
    pred = np.concatenate([p.ravel() for p, _ in pairs])
    gt = np.concatenate([g.ravel() for _, g in pairs])
    keep = gt != 255
    pred, gt = pred[keep], gt[keep]
    ious = []
    for c in range(k):
        inter = np.sum((pred == c) & (gt == c))
        union = np.sum((pred == c) | (gt == c))
        if union:
            ious.append(inter / union)
    assert mean_iou(conf) == pytest.approx(np.mean(ious))
    assert np.isnan(iou_from_confusion(conf)[4])


def test_precision_recall_ratio_and_error_shares():
    conf = np.array([[6, 2, 0],
                     [1, 3, 0],
                     [0, 0, 0]])
    precision, recall = precision_recall(conf)
    np.testing.assert_allclose(precision[:2], [6 / 7, 3 / 5])
    np.testing.assert_allclose(recall[:2], [6 / 8, 3 / 4])
    assert np.isnan(precision[2]) and np.isnan(recall[2])
    np.testing.assert_allclose(activation_ratio(conf)[:2], [7 / 8, 5 / 4])
    fp, fn = error_shares(conf)
    np.testing.assert_allclose(fp[:2], [1 / 9, 2 / 6])
    np.testing.assert_allclose(fn[:2], [2 / 9, 1 / 6])
    np.testing.assert_allclose((iou_from_confusion(conf) + fp + fn)[:2], 1.0)


def test_spearman_vs_log_count_skips_missing_classes():
    counts = np.array([400, 100, 50, 20, 10, 0])
    ratio = np.array([1.5, 1.1, 1.2, 0.7, np.nan, 3.0])
    rho, p = spearman_vs_count(ratio, counts)
    expected = stats.spearmanr([1.5, 1.1, 1.2, 0.7], [400, 100, 50, 20])
    assert rho == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert np.isnan(spearman_vs_count(ratio[:2], counts[:2])[0])


def test_threshold_confusions_equal_one_confusion_per_threshold():
    rng = np.random.default_rng(3)
    k, n = 5, 400
    gt = rng.integers(0, k, n)
    fg_class = rng.integers(1, k, n)
    fg_score = rng.random(n).round(2)            # ties with the thresholds on purpose
    thresholds = np.array([0.1, 0.25, 0.5, 0.9])
    conf = threshold_confusions(fg_class, fg_score, gt, thresholds, k)
    assert conf.shape == (4, k, k)
    for i, t in enumerate(thresholds):
        pred = np.where(fg_score > t, fg_class, 0)
        np.testing.assert_array_equal(conf[i], loop_confusion(pred, gt, k))
