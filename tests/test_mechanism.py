"""Mechanism diagnostics on hand-made masks, and on a generated smoke dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sfc_core.analysis.mechanism import (
    OWN_PART,
    SHARED_PART,
    Groups,
    accumulate_part_confusion,
    lost_to_head,
    lost_to_other_class,
    mechanism_summary,
    part_confusion,
    part_recall,
    read_groups,
    read_part_mask,
)
from sfc_core.errors import SfcError

# Classes: A (head), B (A's group), C (head). Ground truth 1..3, one ignore pixel.
GT = np.array([[1, 1, 2, 2, 0, 255],
               [1, 1, 2, 2, 0, 0],
               [0, 0, 0, 0, 3, 3],
               [0, 0, 0, 0, 3, 3]], dtype=np.uint8)
PART = np.array([[1, 2, 1, 2, 0, 0],
                 [1, 1, 1, 1, 0, 0],
                 [0, 0, 0, 0, 1, 2],
                 [0, 0, 0, 0, 1, 1]], dtype=np.uint8)
PRED = np.array([[1, 0, 1, 2, 1, 2],
                 [1, 1, 1, 2, 0, 0],
                 [0, 0, 0, 0, 3, 3],
                 [0, 0, 0, 0, 0, 3]], dtype=np.uint8)
GROUPS = Groups(("A", "B", "C"), head=np.array([0, 0, 2]), group=np.array([0, 0, 1]), shared_parts=True)


def brute_force_counts(triples, k):
    counts = np.zeros((k, 3, k), dtype=np.int64)
    for pred, gt, part in triples:
        for p, g, s in zip(pred.ravel().tolist(), gt.ravel().tolist(), part.ravel().tolist()):
            if g != 255:
                counts[g, s, p] += 1
    return counts


def test_hand_made_image():
    counts = part_confusion(PRED, GT, PART, 4)
    assert counts.sum() == GT.size - 1                      # the ignore pixel is left out
    # A: shared pixels (0,0) (1,0) (1,1) all predicted A; own pixel (0,1) predicted bg.
    # B: shared (0,2) (1,2) -> A, (1,3) -> B; own (0,3) -> B.   C: shared 2 of 3, own 1 of 1.
    np.testing.assert_allclose(part_recall(counts, SHARED_PART), [1.0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(part_recall(counts, OWN_PART), [0.0, 1.0, 1.0])
    share, taker = lost_to_other_class(counts)
    np.testing.assert_allclose(share, [0.0, 0.5, 0.0])
    assert taker.tolist() == [-1, 0, -1]
    to_head = lost_to_head(counts, GROUPS)
    assert np.isnan(to_head[[0, 2]]).all() and to_head[1] == 0.5
    assert lost_to_head(counts, GROUPS, part_value=1)[1] == pytest.approx(2 / 3)   # (0,2) (1,2) of 3

    summary = mechanism_summary(counts, GROUPS)
    assert summary["heads_shared_part_recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["non_head_lost"] == pytest.approx(0.5)
    assert summary["non_head_lost_to_head"] == pytest.approx(0.5)
    assert summary["non_head_shared_part_to_head"] == pytest.approx(2 / 3)
    assert summary["classes"][1]["top_taker"] == "A" and summary["classes"][0]["top_taker"] is None
    json.dumps(summary, default=float)                       # plain enough to store


def test_accumulation_matches_pixel_by_pixel_counting():
    rng = np.random.default_rng(0)
    triples = [(rng.integers(0, 4, (5, 7)), rng.choice([0, 1, 2, 3, 255], (5, 7)), rng.integers(0, 3, (5, 7)))
               for _ in range(6)]
    counts = accumulate_part_confusion(iter(triples), 4, progress=False)
    np.testing.assert_array_equal(counts, brute_force_counts(triples, 4))


def test_pooled_non_head_share_weights_classes_by_pixels():
    # Two non-heads of one head: B has 1 pixel, fully lost; D has 3 pixels, none lost.
    groups = Groups(("A", "B", "D"), head=np.array([0, 0, 0]), group=np.array([0, 0, 0]), shared_parts=True)
    gt = np.array([[2, 3, 3, 3]])
    pred = np.array([[1, 3, 3, 3]])
    summary = mechanism_summary(part_confusion(pred, gt, np.ones_like(gt), 4), groups)
    assert summary["non_head_lost"] == pytest.approx(0.25)
    assert np.isnan(summary["heads_shared_part_recall"])     # the head has no pixels here


@pytest.mark.parametrize("pred, gt, part", [
    (PRED[:, :5], GT, PART),                                  # shapes differ
    (PRED + 3, GT, PART),                                     # prediction class 6 of 4
    (PRED, GT, PART + 1),                                     # part value 3
])
def test_bad_inputs_raise_sfc_errors(pred, gt, part):
    with pytest.raises(SfcError):
        part_confusion(pred, gt, part, 4)


def test_on_a_generated_dataset(tmp_path):
    from sfc_core.data.dataset import SegmentationDataset
    from sfc_core.data.synthetic import class_table, generate

    root = generate(tmp_path, size="smoke", seed=0)
    groups = read_groups(root)
    assert list(groups.head) == [info.head for info in class_table()] and groups.shared_parts
    assert not read_groups(generate(tmp_path, size="smoke", seed=0, shared_parts=False)).shared_parts

    dataset = SegmentationDataset(root)
    ids = dataset.ids("train")
    masks = [dataset.read_mask(i) for i in ids]
    parts = [read_part_mask(root, i) for i in ids]
    k = dataset.num_classes + 1
    perfect = accumulate_part_confusion(((m, m, p) for m, p in zip(masks, parts)), k, progress=False)
    summary = mechanism_summary(perfect, groups)
    assert summary["heads_shared_part_recall"] == 1.0 and summary["non_head_lost"] == 0.0
    # Every object painted as its group's head: heads keep everything, non-heads lose all.
    as_head = [np.where(m > 0, groups.head[np.maximum(m, 1) - 1] + 1, 0) for m in masks]
    counts = accumulate_part_confusion(zip(as_head, masks, parts), k, progress=False)
    summary = mechanism_summary(counts, groups)
    assert summary["heads_shared_part_recall"] == 1.0
    assert summary["non_head_lost"] == 1.0 and summary["non_head_lost_to_head"] == 1.0
    assert summary["non_head_shared_part_to_head"] == 1.0


def test_missing_groups_json_says_what_to_do(tmp_path):
    with pytest.raises(SfcError, match="synth"):
        read_groups(tmp_path)
