"""The CAM explorer, for real: JupyterLab in headless Chromium runs the visualisation notebook,
the explorer opens at the setting eval-cams chose, a slider moves, and the overlay the browser
shows changes.

Also the explorer's pure frame function, its two settings, and its widget, without a browser.

The browser test needs Debian's `chromium` (run_tests.sh installs it on CI) and the
`playwright` Python package pointed at it; it skips with the reason when either is missing.
It uses the smoke run of tests/conftest.py (`cam_run`, evaluated here); set
SFC_EXPLORER_RUN_ROOT to a folder holding an evaluated run `sfc/` to drive the explorer on
that run instead, and SFC_SCREENSHOT_DIR to keep the screenshot (default: the test's temp
dir). The screenshot committed in figures/ is made by `python -m sfc_core.analysis.explorer_browser`.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from sfc_core.analysis.explorer_browser import chromium

CHROMIUM = chromium()


# -- the frame function and the widget, no browser ---------------------------------------------


def _record(classifier: np.ndarray, prototype: np.ndarray, keys: list[int], num_classes: int):
    from sfc_core.cam_files import CamRecord

    return CamRecord("x", np.asarray(keys, dtype=np.int64), {"classifier": classifier.astype(np.float32),
                     "prototype": prototype.astype(np.float32)}, num_classes)


def test_explorer_view_matches_a_hand_computed_frame():
    from sfc_core.analysis.explorer import explorer_view

    # 1 x 4 image, classes {2}; classifier says class 2 on the left half, prototype everywhere.
    classifier = np.array([[[0.1, 0.1, 0.9, 0.9]], [[1.0, 0.8, 0.0, 0.0]]])
    prototype = np.array([[[0.0, 0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 0.6]]])
    record = _record(classifier, prototype, [0, 2], num_classes=3)
    image = np.full((1, 4, 3), 100, dtype=np.uint8)
    truth = np.array([[2, 2, 2, 0]], dtype=np.uint8)

    view = explorer_view(image, truth, record, 2, "classifier", 0.0, "threshold", 0.5)
    assert view.prediction.tolist() == [[2, 2, 0, 0]]
    # class 2: TP 2, GT 3, pred 2 -> 2/3; background: TP 1, GT 1, pred 2 -> 1/2
    assert view.class_iou == pytest.approx(2 / 3)
    assert view.image_miou == pytest.approx((2 / 3 + 1 / 2) / 2)

    # fused with lambda 1: (c + p) / 2 = [1.0, 0.9, 0.5, 0.3] -> the third pixel ties at 0.5
    # and ties go to the background; at threshold 0.25 the fourth joins too
    fused = explorer_view(image, truth, record, 2, "fused", 1.0, "threshold", 0.25)
    assert fused.prediction.tolist() == [[2, 2, 2, 2]]
    assert fused.class_iou == pytest.approx(3 / 4)
    # the overlay is the class's fused CAM through the jet colour map: hotter on the left
    red = fused.overlay[0, :, 0].astype(int)
    assert red[0] > red[3]
    assert not np.array_equal(fused.overlay, view.overlay)


def test_colour_scale_runs_through_the_overlays_jet_map():
    from sfc_core.analysis.explorer import colour_scale

    scale = colour_scale(5, height=2)
    assert scale.shape == (2, 5, 3) and scale.dtype == np.uint8
    assert scale[0, 0].tolist() == [0, 0, 128] and scale[0, -1].tolist() == [128, 0, 0]   # jet(0), jet(1)


def test_explorer_view_rejects_a_class_without_a_cam():
    from sfc_core.analysis.explorer import explorer_view
    from sfc_core.errors import SfcError

    record = _record(np.ones((2, 2, 2)), np.ones((2, 2, 2)), [0, 1], num_classes=2)
    with pytest.raises(SfcError, match="class 2 has no CAM"):
        explorer_view(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint8), record,
                      2, "fused", 0.3, "reference", 0.25)


def _fake_run(tmp_path, chosen: dict, reference_miou: float):
    """A run directory with a config.json (synthetic-smoke) and a cam_eval.json whose rows
    hold ``chosen`` ({kind: (lambda, threshold, miou)})."""
    from sfc_core.config import Config
    from sfc_core.run_dir import RunDir

    run = RunDir(tmp_path / "sfc")
    run.root.mkdir()
    cfg = Config.from_preset("synthetic-smoke")
    cfg.save(run.config_json)
    rows = {kind: {"background": "threshold", "lambda": lam, "threshold": t, "miou": miou,
                   "reference_rule": {"lambda": cfg.cams.fusion_lambda if kind == "fused" else None,
                                      "miou": reference_miou}}
            for kind, (lam, t, miou) in chosen.items()}
    run.cam_eval_json.write_text(json.dumps({"list": "train", "num_images": 3, "rows": rows}))
    return run, cfg


def test_explorer_settings_are_the_evaluations_choice_and_the_reference_rule(tmp_path):
    from sfc_core.analysis.explorer import chosen_setting, reference_setting

    run, cfg = _fake_run(tmp_path, {"fused": (0.5, 0.75, 0.432), "classifier": (None, 0.6, 0.3)}, 0.372)
    chosen = chosen_setting(run, cfg)
    assert (chosen.kind, chosen.lam, chosen.background, chosen.threshold) == ("fused", 0.5, "threshold", 0.75)
    assert chosen.caption == ("chosen by eval-cams on list train: fused CAM, lambda 0.5, background "
                              "threshold 0.75 (mIoU 43.2 on train)")
    classifier = chosen_setting(run, cfg, "classifier")
    assert (classifier.kind, classifier.lam, classifier.threshold) == ("classifier", 0.0, 0.6)
    reference = reference_setting(run, cfg)
    assert (reference.kind, reference.lam, reference.background) == ("fused", cfg.cams.fusion_lambda, "reference")
    assert reference.threshold == 0.75 and "(mIoU 37.2 on train)" in reference.caption
    # before eval-cams: the configuration's own setting, and the line says so
    run.cam_eval_json.unlink()
    fallback = chosen_setting(run, cfg)
    assert (fallback.lam, fallback.background, fallback.threshold) == (
        cfg.cams.fusion_lambda, cfg.cams.background, cfg.cams.bg_threshold)
    assert "no cam_eval.json yet" in fallback.caption


@pytest.fixture(scope="module")
def evaluated_run(cam_run):
    """The smoke run with its evaluation and held-out CAMs made and scored."""
    from sfc_core.orchestration.pipeline import evaluated

    return cam_run, evaluated(cam_run.root)


@pytest.mark.slow
def test_explorer_widget_opens_at_the_chosen_setting_and_redraws_when_a_control_moves(evaluated_run):
    from sfc_core.analysis.explorer import CamExplorer

    run, cam_eval = evaluated_run
    explorer = CamExplorer(run)
    chosen = cam_eval.setting("fused")
    assert (explorer.kind.value, explorer.background.value) == ("fused", chosen["background"])
    assert explorer.lam.value == pytest.approx(chosen["lam"])
    assert explorer.threshold.value == pytest.approx(chosen["threshold"])
    assert f"chosen by eval-cams on list {cam_eval.list_name}" in explorer.setting_line.value
    explorer.reference_button.click()
    assert explorer.background.value == "reference" and "the reference rule" in explorer.setting_line.value
    explorer.chosen_button.click()
    assert explorer.background.value == "threshold" and "chosen by eval-cams" in explorer.setting_line.value
    explorer.threshold.value = 0.0 if chosen["threshold"] > 0.4 else 0.9
    assert "your own" in explorer.setting_line.value
    explorer.threshold.value = chosen["threshold"] + 1e-9          # a slider sent back rounded
    assert "chosen by eval-cams" in explorer.setting_line.value
    assert explorer.ids and explorer.overlay_image.value and explorer.cls.options
    before = (explorer.overlay_image.value, explorer.prediction_image.value)
    explorer.kind.value = "prototype"
    explorer.background.value = "threshold"
    explorer.threshold.value = 0.0 if explorer.threshold.value > 0.4 else 0.9
    assert (explorer.overlay_image.value, explorer.prediction_image.value) != before
    assert explorer.lam.disabled and not explorer.threshold.disabled
    if len(explorer.ids) > 1:
        explorer.image.value = explorer.ids[1]
        keys = [int(k) for k in explorer._record(explorer.ids[1]).keys[1:]]
        assert [value for _, value in explorer.cls.options] == keys


# -- the browser round trip --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(apt-get install -y chromium; run_tests.sh does it on CI)")
def test_explorer_in_jupyterlab_opens_at_the_chosen_setting_and_redraws_when_the_slider_moves(request, tmp_path):
    pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    from sfc_core.analysis.explorer import SLIDER_STEP
    from sfc_core.analysis.explorer_browser import explorer_page
    from sfc_core.eval_files import read_cam_eval
    from sfc_core.run_dir import RunDir

    given = os.environ.get("SFC_EXPLORER_RUN_ROOT")
    run = RunDir(Path(given) / "sfc") if given else request.getfixturevalue("evaluated_run")[0]
    cam_eval = read_cam_eval(run.cam_eval_json)
    chosen = cam_eval.setting("fused")
    presses = 3
    expected_lambda = min(1.0, chosen["lam"] + presses * SLIDER_STEP) if chosen["lam"] < 1.0 else 1.0 - presses * SLIDER_STEP
    shots = Path(os.environ.get("SFC_SCREENSHOT_DIR", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    with explorer_page(run, tmp_path / "work") as page:
        readouts = {name: float(page.locator(f".sfc-explorer-{name} .widget-readout").inner_text())
                    for name in ("lambda", "threshold")}
        setting_line = page.locator(".sfc-explorer-setting").inner_text()
        background = page.locator(".sfc-explorer-background button.mod-active").inner_text()
        page.locator(".sfc-explorer").scroll_into_view_if_needed()
        page.screenshot(path=str(shots / "explorer_screenshot.png"))

        overlay = page.locator(".sfc-explorer-overlay")
        overlay.scroll_into_view_if_needed()
        before = overlay.screenshot()
        score_before = page.locator(".sfc-explorer-iou").inner_text()
        # move the fusion-lambda slider with the keyboard, as a user would
        page.locator(".sfc-explorer-lambda .noUi-handle").focus()
        for _ in range(presses):
            page.keyboard.press("ArrowRight" if chosen["lam"] < 1.0 else "ArrowLeft")
        deadline = time.monotonic() + 60
        after = overlay.screenshot()
        while after == before and time.monotonic() < deadline:
            page.wait_for_timeout(500)
            after = overlay.screenshot()
        readout = page.locator(".sfc-explorer-lambda .widget-readout").inner_text()
        moved_line = page.locator(".sfc-explorer-setting").inner_text()

    assert readouts["lambda"] == pytest.approx(chosen["lam"]) and readouts["threshold"] == pytest.approx(chosen["threshold"])
    assert background.strip() == chosen["background"]
    assert f"chosen by eval-cams on list {cam_eval.list_name}" in setting_line
    assert float(readout) == pytest.approx(expected_lambda), f"the slider did not move (readout {readout})"
    assert after != before, "the overlay did not change after the lambda slider moved"
    assert "your own" in moved_line
    assert score_before.startswith("image ")
    assert (shots / "explorer_screenshot.png").stat().st_size > 10_000
