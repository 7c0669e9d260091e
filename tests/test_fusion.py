"""Fusion and background rules on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest

from sfc_core.cam_files import CamRecord, predict_mask
from sfc_core.errors import SfcError
from sfc_core.method.fusion import background_score, best_foreground, fuse, label_rows


def random_cam(rng, rows=4, shape=(9, 11)):
    cam = rng.random((rows, *shape)).astype(np.float32)
    return cam / cam.max(axis=(1, 2), keepdims=True)


def test_fuse_is_the_weighted_mean_and_keeps_the_unit_range():
    rng = np.random.default_rng(0)
    classifier, prototype = random_cam(rng), random_cam(rng)
    fused = fuse(classifier, prototype, 0.3)
    np.testing.assert_allclose(fused, (classifier + 0.3 * prototype) / 1.3, rtol=1e-6)
    np.testing.assert_array_equal(fuse(classifier, prototype, 0.0), classifier)
    assert fused.max() <= 1.0 and fused.min() >= 0.0
    with pytest.raises(ValueError, match="lambda"):
        fuse(classifier, prototype, -0.1)


def pad_trick(cam):
    """The reference's make_cam step, written out: background + 0.4, foreground x 2."""
    return np.concatenate([cam[:1] + 0.4, 2 * cam[1:]])


def test_reference_rule_equals_the_pad_trick_and_half_background_plus_0_2():
    rng = np.random.default_rng(1)
    cam = random_cam(rng, rows=5, shape=(40, 30))
    cam[:, :5] = np.round(cam[:, :5] * 4) / 4            # exact ties in part of the image
    np.testing.assert_array_equal(label_rows(cam, "reference"), np.argmax(pad_trick(cam), axis=0))
    halved = np.concatenate([0.5 * cam[:1] + 0.2, cam[1:]])
    np.testing.assert_array_equal(label_rows(cam, "reference"), np.argmax(halved, axis=0))
    np.testing.assert_allclose(background_score(cam, "reference"), 0.5 * cam[0] + 0.2, rtol=1e-6)


def test_best_foreground_takes_the_first_maximum_like_argmax():
    rng = np.random.default_rng(4)
    cam = np.round(rng.random((6, 50, 20)) * 3) / 3         # many ties
    row, score = best_foreground(cam)
    np.testing.assert_array_equal(row, np.argmax(cam[1:], axis=0) + 1)
    np.testing.assert_array_equal(score, cam[1:].max(axis=0))
    threshold_rows = np.argmax(np.concatenate([np.full_like(cam[:1], 1 / 3), cam[1:]]), axis=0)
    np.testing.assert_array_equal(label_rows(cam, "threshold", 1 / 3), threshold_rows)


def test_reference_rule_on_the_fused_map_matches_the_reference_step2_sum():
    """cam2ir fuses pad-tricked maps, P' + lam * IS'; the normalised fusion labels the same."""
    rng = np.random.default_rng(2)
    classifier, prototype = random_cam(rng).astype(np.float64), random_cam(rng).astype(np.float64)
    lam = 0.7
    reference_sum = pad_trick(classifier) + lam * pad_trick(prototype)
    np.testing.assert_array_equal(label_rows(fuse(classifier, prototype, lam), "reference"),
                                  np.argmax(reference_sum, axis=0))


def test_threshold_rule_hand_made_pixels_and_ties_go_to_background():
    # rows: background, class a, class b; three pixels
    cam = np.array([[[0.9, 0.0, 0.1]],
                    [[0.3, 0.6, 0.2]],
                    [[0.1, 0.7, 0.25]]], dtype=np.float32)
    np.testing.assert_array_equal(label_rows(cam, "threshold", 0.25), [[1, 2, 0]])   # 0.25 tie -> bg
    np.testing.assert_array_equal(label_rows(cam, "threshold", 0.65), [[0, 2, 0]])
    row, score = best_foreground(cam)
    np.testing.assert_array_equal(row, [[1, 2, 2]])
    np.testing.assert_allclose(score, [[0.3, 0.7, 0.25]])
    # the reference rule: bg + 0.4 vs 2 fg -> 1.3 vs (0.6, 0.2): bg; 0.4 vs 1.4: b; 0.5 vs 0.5: tie -> bg
    np.testing.assert_array_equal(label_rows(cam, "reference"), [[0, 2, 0]])
    with pytest.raises(ValueError, match="unknown background rule"):
        label_rows(cam, "otsu")
    with pytest.raises(ValueError, match="needs a threshold"):
        label_rows(cam, "threshold")


def test_predict_mask_maps_rows_to_class_indices_for_each_kind():
    keys = np.array([0, 3, 7])
    classifier = np.array([[[0.0, 0.0]], [[0.9, 0.1]], [[0.2, 0.8]]], dtype=np.float32)
    prototype = np.array([[[0.0, 0.0]], [[0.1, 0.9]], [[0.8, 0.2]]], dtype=np.float32)
    record = CamRecord("x", keys, {"classifier": classifier, "prototype": prototype}, num_classes=8)
    for kind, expected in [("classifier", [[3, 7]]), ("prototype", [[7, 3]])]:
        mask = predict_mask(record, kind, 0.3, "threshold", 0.05)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, expected)
    # fused at lambda 1: pixel 0 -> (0.5, 0.5) tie -> first foreground row (class 3)
    np.testing.assert_array_equal(predict_mask(record, "fused", 1.0, "threshold", 0.05), [[3, 3]])
    np.testing.assert_array_equal(predict_mask(record, "fused", 1.0, "threshold", 0.6), [[0, 0]])
    with pytest.raises(SfcError, match="unknown CAM kind"):
        predict_mask(record, "mixed", 0.3, "threshold", 0.2)
