"""Dense CRF and the confident (relation) labels, on tiny hand-made images."""
import numpy as np
import pytest

from sfc_core.config import Config, RefineConfig
from sfc_core.crf import confidence_scores, confident_labels, crf_labels
from sfc_core.errors import SfcError
from sfc_core.method.fusion import fuse


def three_regions():
    """A 12x18 image of three flat colours in vertical bands (0: cols 0-5, 1: 6-11, 2: 12-17)."""
    image = np.zeros((12, 18, 3), np.uint8)
    image[:, :6] = (200, 30, 30)
    image[:, 6:12] = (30, 200, 30)
    image[:, 12:] = (30, 30, 200)
    bands = np.repeat(np.arange(3), 6)[None].repeat(12, 0)
    return image, bands


def test_crf_snaps_labels_to_colour_edges():
    image, bands = three_regions()
    noisy = bands.copy()
    noisy[:, 5] = 1                       # label boundary one pixel off the colour boundary
    noisy[3, 14] = 0                      # a stray pixel
    image.setflags(write=False)           # as np.asarray(PIL image) gives it
    (out,) = crf_labels(image, [noisy], 3, RefineConfig())
    assert out.shape == bands.shape and out.dtype == np.int64
    np.testing.assert_array_equal(out, bands)


def test_crf_with_one_label_is_all_that_label():
    image, _ = three_regions()
    (out,) = crf_labels(image, [np.zeros((12, 18), np.int64)], 1, RefineConfig())
    assert out.shape == (12, 18) and (out == 0).all()


def test_crf_maps_of_one_image_equal_one_crf_each():
    """The pairwise terms built once for several maps give each map's own CRF result."""
    image, bands = three_regions()
    rng = np.random.default_rng(0)
    maps = [np.where(rng.random(bands.shape) < 0.3, rng.integers(0, 3, bands.shape), (bands + shift) % 3)
            for shift in range(3)]
    cfg = RefineConfig(crf_iterations=3)
    together = crf_labels(image, maps, 3, cfg)
    alone = [crf_labels(image, [m], 3, cfg)[0] for m in maps]
    assert not np.array_equal(together[0], together[1])     # different maps, different results
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a, b)


def test_confident_labels_keep_agreement_and_ignore_disagreement():
    image, bands = three_regions()
    keys = np.array([0, 3, 7])
    # foreground-favouring map: band 0 is class 3 (row 1), bands 1-2 background
    fg_scores = np.stack([bands != 0, bands == 0, np.zeros_like(bands)]).astype(np.float32)
    # background-favouring map: band 0 class 3, band 1 class 7 (row 2), band 2 background
    bg_scores = np.stack([bands == 2, bands == 0, bands == 1]).astype(np.float32)
    out = confident_labels(image, fg_scores, bg_scores, keys, RefineConfig())
    assert out.dtype == np.uint8
    assert (out[bands == 0] == 3).all()       # both say class 3
    assert (out[bands == 1] == 255).all()     # fg map says background, bg map says class 7
    assert (out[bands == 2] == 0).all()       # both say background


def test_reference_rule_labels_like_the_reference_sum_of_pad_tricked_maps():
    rng = np.random.default_rng(0)
    classifier, prototype = rng.random((2, 4, 9, 9)).astype(np.float32)
    cfg = RefineConfig()
    fg_scores, bg_scores = confidence_scores(fuse(classifier, prototype, cfg.relation_lambda), cfg)

    def pad_trick(x):                       # reference make_cam: bg + 0.4, 2 x fg
        return np.concatenate([x[:1] + 0.4, 2 * x[1:]])

    reference = pad_trick(classifier) + 0.7 * pad_trick(prototype)       # cam2ir, lambda 0.7
    np.testing.assert_array_equal(fg_scores.argmax(0), reference.argmax(0))
    reference[0] *= 0.5
    np.testing.assert_array_equal(bg_scores.argmax(0), reference.argmax(0))
    assert (bg_scores.argmax(0) > 0).sum() > (fg_scores.argmax(0) > 0).sum()


def test_threshold_rule_is_irns_constant_background():
    classifier = np.array([[[0.9]], [[0.2]], [[0.1]]], np.float32)      # (3, 1, 1)
    prototype = np.array([[[0.1]], [[0.4]], [[0.0]]], np.float32)
    cfg = Config.from_preset("voc", {"refine.relation_rule": "thresholds"}).refine
    fg_scores, bg_scores = confidence_scores(fuse(classifier, prototype, cfg.relation_lambda), cfg)
    fused_fg = (np.array([0.2, 0.1]) + 0.7 * np.array([0.4, 0.0])) / 1.7  # 0.282, 0.059
    np.testing.assert_allclose(fg_scores[:, 0, 0], [0.30, *fused_fg], rtol=1e-6)
    np.testing.assert_allclose(bg_scores[:, 0, 0], [0.05, *fused_fg], rtol=1e-6)
    assert fg_scores.argmax(0)[0, 0] == 0 and bg_scores.argmax(0)[0, 0] == 1


def test_unknown_relation_rule_names_the_key():
    cfg = RefineConfig(relation_rule="otsu")
    with pytest.raises(SfcError, match="refine.relation_rule"):
        confidence_scores(np.zeros((2, 3, 3)), cfg)


def test_crf_processes_follow_the_threads_this_process_was_given():
    import torch

    from sfc_core.refine import crf_processes

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)                 # a side-by-side worker's share: the CRF runs in-process
        assert crf_processes("auto") == 1
        torch.set_num_threads(2)
        assert crf_processes("auto") == 2 and crf_processes(0) == 0 and crf_processes("3") == 3
    finally:
        torch.set_num_threads(threads)
