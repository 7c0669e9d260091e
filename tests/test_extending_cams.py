"""Adding a CAM kind, as a researcher would: one registration, and eval-cams scores it, its row
is in cam_eval.json and in the printed tables, and the explorer has a button for it."""
from __future__ import annotations

import numpy as np
import pytest

from sfc_core.cam_files import CAM_KINDS, load_cam, register_kind
from sfc_core.evaluate import eval_cams
from sfc_core.method.fusion import label_rows
from sfc_core.metrics import mean_iou
from tests.fixtures import VOC_IMAGES, VOC_LISTS, fixture_mask
from tests.test_cams_eval import C, count_confusion, hand_run, write_cams  # noqa: F401 (hand_run: a fixture)


def elementwise_max(maps: dict[str, np.ndarray]) -> np.ndarray:
    """The toy kind: the larger of the classifier and prototype CAMs, pixel by pixel."""
    return np.maximum(maps["classifier"], maps["prototype"])


@pytest.fixture()
def max_kind():
    register_kind("max", elementwise_max)        # the researcher's one line (e.g. in a notebook)
    yield "max"
    del CAM_KINDS["max"]


def _standard(result: dict) -> dict:
    """Everything cam_eval.json says about the built-in kinds."""
    kinds = ("classifier", "prototype", "fused")
    sweep = {rule: {name: v for name, v in block.items() if name.split("@")[0] in kinds}
             for rule, block in result["sweep"].items()}
    return {"rows": {k: result["rows"][k] for k in kinds}, "calibration": {k: result["calibration"][k] for k in kinds},
            "authors_protocol": result["authors_protocol"], "sweep": sweep, "lambdas": result["lambdas"]}


def test_a_registered_kind_gets_its_row_and_leaves_the_standard_rows_as_they_were(hand_run, capsys):  # noqa: F811 (the fixture)
    run, cfg = hand_run
    write_cams(run, VOC_LISTS["train"], seed=2, perfect_classifier=False)
    before = eval_cams(run)
    assert "max" not in before["rows"]
    register_kind("max", elementwise_max)
    try:
        after = eval_cams(run)          # the cam_eval.json on disk lacks the new kind: scored again
    finally:
        del CAM_KINDS["max"]
    assert list(after["rows"]) == ["classifier", "prototype", "fused", "max"]
    assert _standard(after) == _standard(before)
    # its row is the toy kind's own: an independent count over np.maximum at the chosen threshold
    row = after["rows"]["max"]
    assert row["lambda"] is None and row["reference_rule"]["lambda"] is None
    ids = VOC_LISTS["train"]
    conf = 0
    for image_id in ids:
        record = load_cam(run, image_id)
        cam = np.maximum(record.maps["classifier"], record.maps["prototype"])
        pred = record.keys[label_rows(cam, "threshold", row["threshold"])]
        conf = conf + count_confusion(pred, fixture_mask(VOC_IMAGES[image_id]), C + 1)
    assert row["miou"] == pytest.approx(mean_iou(conf))
    assert after["sweep"]["threshold_rule"]["max"][after["thresholds"].index(row["threshold"])] == \
        pytest.approx(row["miou"])
    printed = capsys.readouterr().out.split("eval-cams")[-1]
    assert any(line.startswith("max ") for line in printed.splitlines())
    assert "IoU max" in printed and "ratio max" in printed


def test_the_explorer_has_a_button_for_a_registered_kind(hand_run, max_kind):  # noqa: F811 (the fixture)
    from sfc_core.analysis.explorer import CamExplorer

    run, _ = hand_run
    eval_cams(run)
    explorer = CamExplorer(run)
    assert list(explorer.kind.options) == ["classifier", "prototype", "fused", max_kind]
    before = explorer.prediction_image.value
    explorer.kind.value = "prototype"
    explorer.kind.value = max_kind
    assert explorer.lam.disabled and explorer.prediction_image.value
    assert "your own" in explorer.setting_line.value and explorer.prediction_image.value != before


def test_a_registered_kind_with_a_parameter_is_swept_over_lambda_like_fused(hand_run):  # noqa: F811 (the fixture)
    run, cfg = hand_run
    write_cams(run, VOC_LISTS["train"], seed=3, perfect_classifier=False)
    before = eval_cams(run)
    register_kind("sharpened", lambda maps, lam: maps["prototype"] ** (1.0 + lam), swept=True)
    try:
        after = eval_cams(run)
    finally:
        del CAM_KINDS["sharpened"]
    assert _standard(after) == _standard(before)
    row, sweep = after["rows"]["sharpened"], after["sweep"]["threshold_rule"]
    assert row["lambda"] in after["lambdas"] and row["reference_rule"]["lambda"] == cfg.cams.fusion_lambda
    assert {f"sharpened@{lam:g}" for lam in after["lambdas"]} <= set(sweep)
    best = max(v for lam in after["lambdas"] for v in sweep[f"sharpened@{lam:g}"] if v is not None)
    assert row["miou"] == pytest.approx(best)
    assert sweep[f"sharpened@{row['lambda']:g}"][after["thresholds"].index(row["threshold"])] == pytest.approx(best)
