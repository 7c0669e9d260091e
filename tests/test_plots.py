"""The figure helpers of sfc_core/analysis/plots.py that compute what a figure says: the
symptom's magnitude, frequency thirds, the chosen settings at a sweep's edge, which images
show the CAM kinds differing, and the charts drawing what those helpers computed."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from sfc_core.analysis import plots  # noqa: E402
from sfc_core.cam_files import CamRecord  # noqa: E402
from sfc_core.eval_files import CamEval  # noqa: E402


def test_frequency_thirds_split_by_count_with_the_rest_in_the_middle():
    most, middle, least = plots.frequency_thirds([5, 50, 10, 40, 20, 30, 1])     # 7 classes: 2 / 3 / 2
    assert most.tolist() == [1, 3] and middle.tolist() == [5, 4, 2] and least.tolist() == [0, 6]


def test_symptom_magnitude_is_the_log_log_slope_and_the_thirds_means():
    counts = np.array([1000, 100, 10, 1000, 100, 10])
    ratios = 0.1 * counts ** 0.5                          # log ratio = log 0.1 + 0.5 log count
    m = plots.symptom_magnitude(counts, ratios)
    assert m["slope"] == pytest.approx(0.5)
    assert m["most_frequent_third"] == pytest.approx(0.1 * 1000 ** 0.5)
    assert m["middle_third"] == pytest.approx(1.0)
    assert m["least_frequent_third"] == pytest.approx(0.1 * 10 ** 0.5)
    # a calibrated CAM: slope 0, every third at 1; a zero ratio (never predicted) leaves the fit
    flat = plots.symptom_magnitude(counts, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12)
    assert flat["least_frequent_third"] == pytest.approx(0.5)
    assert math.isnan(plots.symptom_magnitude([10, 10, 10], [1.0, 2.0, 3.0])["slope"])


def test_symptom_rows_name_each_third_and_carry_no_target():
    rows = plots.symptom_rows([30, 20, 10], [2.0, 1.0, 0.5], ["a", "b", "c"], "baseline")
    assert [r["figure"] for r in rows] == [
        "slope of log(activation ratio) on log(image count)", "mean ratio of the most frequent third (a)",
        "mean ratio of the middle third (b)", "mean ratio of the least frequent third (c)"]
    assert [r["measured"] for r in rows[1:]] == [2.0, 1.0, 0.5]
    assert all(r["scope"] == "baseline" and r["target"] == "" and r["met"] == "" for r in rows)
    # rows without a target are left out of the verdict
    assert plots.targets_summary(rows + [plots.target_row("x", 1.0, ">", 0.0)]) == "All 1 targets met."


def test_iou_gain_by_frequency_gives_the_middle_third_too():
    counts = [100, 50, 40, 30, 20, 10]
    gains = plots.iou_gain_by_frequency(counts, [0.5, 0.5, 0.4, 0.3, 0.2, 0.1], [0.5, 0.7, 0.1, 0.3, 0.4, math.nan])
    assert list(gains) == list(plots.GAIN_KEYS)
    assert gains["middle_third_gain"] == pytest.approx(-0.15)
    assert math.isnan(plots.iou_gain_by_frequency([2, 1], [0.1, math.nan], [0.2, 0.5])["tail_third_gain"])


def _cam_eval(thresholds, lambdas, chosen):
    rows = {kind: {"threshold": t, "lambda": lam, "miou": 0.4, "background": "threshold"}
            for kind, (lam, t) in chosen.items()}
    values = [0.3] * len(thresholds)
    sweep = {"classifier": values, "prototype": values, **{f"fused@{lam:g}": values for lam in lambdas}}
    return CamEval({"list": "train", "num_images": 4, "thresholds": thresholds, "lambdas": lambdas,
                    "rows": rows, "sweep": {"threshold_rule": sweep}})


def test_sweep_edges_name_the_settings_at_an_end_of_their_sweep():
    e = _cam_eval([0.1, 0.5, 0.9], [0.0, 0.5, 1.0],
                  {"classifier": (None, 0.5), "prototype": (None, 0.9), "fused": (1.0, 0.1)})
    assert plots.sweep_edges(e) == [
        "prototype: the chosen threshold 0.9 is the largest swept (0.1-0.9)",
        "fused: the chosen threshold 0.1 is the smallest swept (0.1-0.9)",
        "fused: the chosen lambda 1 is the largest swept (0-1)"]
    inside = _cam_eval([0.1, 0.5, 0.9], [0.0, 0.5, 1.0],
                       {"classifier": (None, 0.5), "prototype": (None, 0.5), "fused": (0.5, 0.5)})
    assert plots.sweep_edges(inside) == []
    fig = plots.threshold_sweep(e)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "chosen prototype: t=0.9 (edge)" in labels and "chosen classifier: t=0.5" in labels


def _record(classifier, prototype, keys):
    return CamRecord("x", np.asarray(keys, dtype=np.int64), {"classifier": np.asarray(classifier, np.float32),
                     "prototype": np.asarray(prototype, np.float32)}, 3)


def test_kind_spread_is_the_mean_range_over_kinds_of_the_clipped_maps():
    # classes 1 and 3; class 1: classifier 1 / prototype 0 on both pixels; class 3: same maps
    classifier = [[[0.0, 0.0]], [[1.0, 1.0]], [[0.5, 2.0]]]
    prototype = [[[0.0, 0.0]], [[0.0, 0.0]], [[0.5, 1.5]]]
    spread = plots.kind_spread(_record(classifier, prototype, [0, 1, 3]), lam=1.0)
    # fused = (c + p) / 2 lies between them: the range is |c - p| after clipping to [0, 1]
    assert spread == {1: pytest.approx(1.0), 3: pytest.approx(0.0)}


def test_pick_differing_takes_tail_classes_first_then_the_largest_spreads():
    candidates = [("a", 1, 0.9), ("b", 1, 0.8), ("c", 2, 0.7), ("d", 5, 0.2), ("e", 6, 0.1),
                  ("a", 6, 0.05), ("f", 5, 0.15), ("g", 7, 0.0)]
    picked = plots.pick_differing(candidates, tail_classes={5, 6}, n=4, n_tail=2)
    # tail: d (5) and e (6); then a (1, the largest), c (2: class 1 already shown by a)
    assert picked == [("a", 1, 0.9), ("c", 2, 0.7), ("d", 5, 0.2), ("e", 6, 0.1)]
    # a tail class whose kinds agree everywhere (spread 0) is not shown
    assert plots.pick_differing(candidates, tail_classes={7}, n=1) == [("a", 1, 0.9)]
    # no tail candidate: the largest spreads, one image each, classes repeated when they must be
    assert plots.pick_differing(candidates[:2], tail_classes={9}, n=3) == [("a", 1, 0.9), ("b", 1, 0.8)]


def test_activation_ratio_scatter_labels_the_slope_and_thirds():
    counts = np.array([1000, 100, 10])
    fig = plots.activation_ratio_scatter(counts, {"baseline": [3.0, 0.3, 0.0]}, ["h", "m", "t"])
    ax = fig.axes[0]
    label = ax.get_legend_handles_labels()[1][0]
    assert label == "baseline: slope +1.00; thirds 3.00 / 0.30 / 0.00"
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    floor = ax.collections[1].get_offsets()                            # the zero ratio on the floor
    assert floor.tolist() == [[10.0, plots.RATIO_FLOOR]]


def test_iou_gain_bars_draw_the_thirds_means_in_points():
    fig = plots.iou_gain_bars([30, 20, 10], [0.5, 0.5, 0.2], [0.4, 0.6, 0.5], ["a", "b", "c"])
    heights = [patch.get_height() for patch in fig.axes[0].patches]
    assert heights == pytest.approx([-10.0, 10.0, 30.0])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        "most frequent third\na", "middle third\nb", "least frequent third\nc"]


def test_image_grid_adds_one_colour_bar_for_the_overlays():
    panel = np.zeros((4, 4, 3), np.uint8)
    assert len(plots.image_grid([[panel, panel]]).axes) == 2
    fig = plots.image_grid([[panel, panel]], colorbar=plots.CAM_COLOURBAR)
    assert len(fig.axes) == 3 and fig.axes[-1].get_ylabel() == plots.CAM_COLOURBAR


def test_coefficients_caption_says_where_the_second_count_comes_from():
    from sfc_core.data.stats import VOC_REFERENCE_EXTRA, VOC_REFERENCE_SECOND_COUNTS
    from sfc_core.method.coefficients import default_second_counts

    voc = plots.coefficients_caption(VOC_REFERENCE_SECOND_COUNTS, VOC_REFERENCE_EXTRA)
    assert voc.endswith("b_k and E = 396 are the reference's VOC constants")
    kit = plots.coefficients_caption(default_second_counts(np.array([50, 10, 5]), 2.5), 2.5)
    assert "E = 2.5" in kit and "b_k = t_k^2 / m + m" in kit and "VOC only" in kit
