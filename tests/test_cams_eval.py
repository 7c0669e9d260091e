"""CAM files, eval-cams and eval-seg on hand-written CAMs, and the smoke-preset end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sfc_core.cam_files import load_cam, predict_mask, present_keys, save_cam
from sfc_core.cams import make_cams
from sfc_core.cli import main
from sfc_core.config import Config
from sfc_core.data import SegmentationDataset
from sfc_core.data.transforms import normalize, rescale
from sfc_core.errors import SfcError
from sfc_core.eval_files import read_seg_eval
from sfc_core.evaluate import eval_cams, eval_seg, image_confusions
from sfc_core.io import atomic_write_json
from sfc_core.masks import voc_palette
from sfc_core.metrics import mean_iou
from sfc_core.run_dir import RunDir
from tests.fixtures import FIXTURE_CLASSES, VOC_IMAGES, VOC_LISTS, fixture_label, fixture_mask, write_voc_tree

C = len(FIXTURE_CLASSES)


def count_confusion(pred, gt, k):
    """Independent of sfc_core.metrics: np.add.at over the non-ignored pixels."""
    conf = np.zeros((k, k), dtype=np.int64)
    keep = gt != 255
    np.add.at(conf, (gt[keep].astype(int), pred[keep].astype(int)), 1)
    return conf


def write_cams(run, ids, seed=0, perfect_classifier=True):
    """CAMs for `ids`: classifier = the GT foreground (perfect) or noise, prototype = noise."""
    rng = np.random.default_rng(seed)
    for image_id in ids:
        spec = VOC_IMAGES[image_id]
        keys = present_keys(fixture_label(spec, C))
        mask = fixture_mask(spec)
        shape = (len(keys), *mask.shape)
        classifier = rng.random(shape).astype(np.float32)
        if perfect_classifier:
            classifier = np.stack([(mask == k).astype(np.float32) for k in keys])
        prototype = rng.random(shape).astype(np.float32)
        save_cam(run.cam_file(image_id), keys, {"classifier": classifier, "prototype": prototype}, C)


@pytest.fixture()
def hand_run(tmp_path):
    """A run directory on the tiny VOC fixture tree, with CAMs for the train list."""
    root = write_voc_tree(tmp_path / "voc", labels="json")
    run = RunDir(tmp_path / "run")
    cfg = Config.from_preset("synthetic-smoke", {"data.dataset": "voc", "data.root": str(root),
                                                 "data.train_list": "train", "data.eval_list": "train",
                                                 "data.heldout_list": "val", "runtime.num_workers": 0})
    cfg.save(run.config_json)
    atomic_write_json(run.class_names_json, list(FIXTURE_CLASSES))
    write_cams(run, VOC_LISTS["train"])
    return run, cfg


def test_cam_file_round_trip_and_class_list_check(hand_run):
    run, _ = hand_run
    record = load_cam(run, "2007_000005")
    np.testing.assert_array_equal(record.keys, [0, 1, 2, 3])
    assert record.maps["classifier"].dtype == np.float32 and record.size == (20, 30)
    assert record.num_classes == C
    keys = np.array([0, 2])
    save_cam(run.cam_file("2007_000001"), keys, {"classifier": np.zeros((2, 20, 30)), "prototype": np.zeros((2, 20, 30))}, 20)
    with pytest.raises(SfcError, match="made for 20 classes, the run has 3") as e:
        load_cam(run, "2007_000001", num_classes=C)
    assert "2007_000001.npz" in str(e.value)
    run.cam_file("2007_000002").write_bytes(b"not a zip")
    with pytest.raises(SfcError, match="unreadable CAM file"):
        load_cam(run, "2007_000002")


def test_make_cams_sums_scales_max_normalises_and_resumes(hand_run):
    """An untrained tiny network: the saved maps equal the per-scale inference done by hand."""
    from sfc_core.io import atomic_torch_save as save_checkpoint
    from sfc_core.model.build import build_model, checkpoint_identity

    run, cfg = hand_run
    torch.manual_seed(0)
    model = build_model(cfg.model, C).eval()
    save_checkpoint(run.last_checkpoint, {"model": model.state_dict(),
                                          **checkpoint_identity(cfg.model, list(FIXTURE_CLASSES))})
    shutil.rmtree(run.cams)
    assert make_cams(run.root, device="cpu") == run.cams
    image_id = "2007_000002"
    dataset = SegmentationDataset(cfg.data.root)
    image = dataset.read_image(image_id)
    label = torch.from_numpy(dataset.label(image_id))
    totals = [torch.zeros(C + 1, 20, 30), torch.zeros(C + 1, 20, 30)]
    with torch.inference_mode():
        for scale in cfg.cams.scales:
            scaled = normalize(rescale(image, scale))
            pair = torch.from_numpy(np.stack([scaled, scaled[:, ::-1]]).transpose(0, 3, 1, 2).copy())
            for total, cam in zip(totals, model.infer(pair, label)):
                total += F.interpolate(cam[None], (20, 30), mode="bilinear", align_corners=False)[0]
    record = load_cam(run, image_id, num_classes=C)
    np.testing.assert_array_equal(record.keys, [0, 1, 2])
    for saved, total in zip((record.maps["classifier"], record.maps["prototype"]), totals):
        expected = (total / (total.amax(dim=(1, 2), keepdim=True) + 1e-5))[[0, 1, 2]].numpy()
        # the float32 CPU pipeline of old (normalise and flip in the loader) rounded to float16,
        # within one float16 step: the stage runs channels-last (model.build.inference_layout)
        np.testing.assert_allclose(saved, expected.astype(np.float16).astype(np.float32), rtol=0,
                                   atol=FLOAT16_STEP + 1e-6)
    # resumable: only the missing file is made again
    before = {i: run.cam_file(i).stat().st_mtime_ns for i in VOC_LISTS["train"]}
    run.cam_file(image_id).unlink()
    make_cams(run.root, device="cpu")
    after = {i: run.cam_file(i).stat().st_mtime_ns for i in VOC_LISTS["train"]}
    assert [i for i in before if before[i] != after[i]] == [image_id]


def _tiny_checkpoint(run, cfg, seed):
    from sfc_core.io import atomic_torch_save as save_checkpoint
    from sfc_core.model.build import build_model, checkpoint_identity

    torch.manual_seed(seed)
    model = build_model(cfg.model, C).eval()
    save_checkpoint(run.last_checkpoint, {"model": model.state_dict(), "step": seed,
                                          **checkpoint_identity(cfg.model, list(FIXTURE_CLASSES))})


def _mtimes(run):
    return {i: run.cam_file(i).stat().st_mtime_ns for i in VOC_LISTS["train"]}


def test_make_cams_heals_a_truncated_file_and_remakes_on_other_settings(hand_run, capsys):
    from sfc_core.provenance import read_record

    run, cfg = hand_run
    _tiny_checkpoint(run, cfg, seed=0)
    shutil.rmtree(run.cams)
    make_cams(run.root, device="cpu")
    record = read_record(run.cams)
    assert record["scales"] == list(cfg.cams.scales) and record["checkpoint"]["step"] == 0
    # a truncated file is made again, the others are kept
    before, broken = _mtimes(run), VOC_LISTS["train"][1]
    data = run.cam_file(broken).read_bytes()
    run.cam_file(broken).write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    make_cams(run.root, device="cpu")
    assert "1 unreadable CAM file(s) made again" in capsys.readouterr().out
    assert [i for i, t in _mtimes(run).items() if t != before[i]] == [broken]
    load_cam(run, broken, num_classes=C)
    # other scales: every file is made again, and the record says so
    before = _mtimes(run)
    make_cams(run.root, scales=(1.0,), device="cpu")
    out = capsys.readouterr().out
    assert "made from other inputs" in out and "scales" in out
    assert f"{len(before)} image(s) made, 0 already there" in out
    assert all(t != before[i] for i, t in _mtimes(run).items())
    assert read_record(run.cams)["scales"] == [1.0]
    # the same settings again: nothing is made
    make_cams(run.root, scales=(1.0,), device="cpu")
    assert f"0 image(s) made, {len(before)} already there" in capsys.readouterr().out
    # another checkpoint (new weights): made again
    _tiny_checkpoint(run, cfg, seed=1)
    make_cams(run.root, scales=(1.0,), device="cpu")
    assert "checkpoint" in capsys.readouterr().out
    assert read_record(run.cams)["checkpoint"]["step"] == 1


FLOAT16_STEP = 2.0 ** -11     # float16 spacing in [0.5, 1): one rounding step of a CAM file's value


def test_infer_batch_equals_one_image_at_a_time():
    """B images (and their flips) in one forward give each image's CAMs alone, PCM on and off."""
    from sfc_core.cams import multiscale_cams, multiscale_cams_batch
    from sfc_core.data.transforms import device_views
    from sfc_core.model.build import build_model

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (5, 3, round(48 * s), round(48 * s)), generator=gen, dtype=torch.uint8)
              for s in (1.0, 0.5)]
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]])
    for pcm in (True, False):
        cfg = Config.from_preset("synthetic-smoke", {"model.pcm": pcm})
        torch.manual_seed(0)
        model = build_model(cfg.model, C).eval()
        with torch.inference_mode():
            for flip in (True, False):
                batched = multiscale_cams_batch(model, [device_views(x, "cpu", flip) for x in images], labels,
                                                (48, 48), mask_by_label=flip)
                for i in range(len(labels)):
                    single = multiscale_cams(model, [device_views(x[i], "cpu", flip) for x in images], labels[i],
                                             (48, 48), mask_by_label=flip)
                    for b, one in zip(batched, single):
                        assert b.shape == (5, C + 1, 48, 48)
                        torch.testing.assert_close(b[i], one, rtol=0, atol=1e-5)


def test_channels_last_inference_equals_the_contiguous_one():
    from sfc_core.cams import multiscale_cams_batch
    from sfc_core.data.transforms import device_views
    from sfc_core.model.build import build_model

    gen = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, 3, round(48 * s), round(48 * s)), generator=gen, dtype=torch.uint8)
              for s in (1.0, 0.5)]
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1], [1, 1, 1]])
    cfg = Config.from_preset("synthetic-smoke")
    torch.manual_seed(0)
    model = build_model(cfg.model, C).eval()
    with torch.inference_mode():
        plain = multiscale_cams_batch(model, [device_views(x, "cpu") for x in images], labels, (48, 48))
        model = model.to(memory_format=torch.channels_last)
        last = multiscale_cams_batch(model, [device_views(x, "cpu").contiguous(memory_format=torch.channels_last)
                                             for x in images], labels, (48, 48))
    for a, b in zip(plain, last):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_same_size_batches_cut_where_the_size_changes_or_the_batch_is_full():
    from sfc_core.cams import same_size_batches

    sizes = [(20, 30), (20, 30), (30, 20), (20, 30), (20, 30), (20, 30)]
    items = [{"name": str(i), "size": torch.tensor(size)} for i, size in enumerate(sizes)]
    names = lambda batches: [[item["name"] for item in batch] for batch in batches]   # noqa: E731
    assert names(same_size_batches(items, 2)) == [["0", "1"], ["2"], ["3", "4"], ["5"]]
    assert names(same_size_batches(items, 16)) == [["0", "1"], ["2"], ["3", "4", "5"]]
    assert names(same_size_batches(items, 1)) == [[str(i)] for i in range(6)]
    assert names(same_size_batches([], 4)) == []


def _cam_arrays(run, ids):
    out = {}
    for image_id in ids:
        record = load_cam(run, image_id)
        out[image_id] = (record.keys, record.maps["classifier"], record.maps["prototype"])
    return out


def assert_same_cams(a: dict, b: dict) -> None:
    """The same kept rows, maps within one float16 rounding step (the float32 maps agree to
    1e-5, test_infer_batch_equals_one_image_at_a_time; a last-bit difference can still round
    a value to the neighbouring float16)."""
    assert a.keys() == b.keys()
    for image_id in a:
        np.testing.assert_array_equal(a[image_id][0], b[image_id][0])
        for x, y in zip(a[image_id][1:], b[image_id][1:]):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=0, atol=FLOAT16_STEP + 1e-6)


def test_batched_cams_of_two_image_sizes_equal_one_at_a_time_and_are_kept(hand_run, capsys):
    """The fixture's train list has 20x30 and 30x20 images (batches [1, 2], [3], [4, 5] at
    batch size 4); the batch size is not in the provenance record, so the files are kept."""
    from sfc_core.provenance import read_record

    run, cfg = hand_run
    _tiny_checkpoint(run, cfg, seed=0)
    ids = VOC_LISTS["train"]
    shutil.rmtree(run.cams)
    make_cams(run.root, device="cpu", overrides={"cams.batch_size": 1})
    one_at_a_time, record = _cam_arrays(run, ids), read_record(run.cams)
    assert {load_cam(run, i).size for i in ids} == {(20, 30), (30, 20)}
    shutil.rmtree(run.cams)
    make_cams(run.root, device="cpu", overrides={"cams.batch_size": 4})
    assert_same_cams(_cam_arrays(run, ids), one_at_a_time)
    assert read_record(run.cams) == record
    capsys.readouterr()
    make_cams(run.root, device="cpu", overrides={"cams.batch_size": 1})
    assert f"0 image(s) made, {len(ids)} already there" in capsys.readouterr().out
    with pytest.raises(SfcError, match="cams.batch_size"):
        make_cams(run.root, device="cpu", overrides={"cams.batch_size": 0})


def test_make_cams_with_a_refused_checkpoint_keeps_the_cams_there(hand_run):
    run, cfg = hand_run
    _tiny_checkpoint(run, cfg, seed=0)
    make_cams(run.root, device="cpu")
    before, record = _mtimes(run), (run.cams / "provenance.json").read_bytes()
    cfg.override({"model.side_channels": (8, 8, 16, 16)}).save(run.config_json)   # not the checkpoint's
    with pytest.raises(SfcError, match="does not fit the network"):
        make_cams(run.root, scales=(1.0,), device="cpu")
    assert _mtimes(run) == before and (run.cams / "provenance.json").read_bytes() == record


def test_image_confusions_match_predict_mask_for_every_sweep_point(hand_run):
    run, _ = hand_run
    write_cams(run, VOC_LISTS["train"], seed=1, perfect_classifier=False)
    record = load_cam(run, "2007_000005")
    gt = fixture_mask(VOC_IMAGES["2007_000005"])
    lambdas, thresholds = [0.3, 1.0], [0.1, 0.4, 0.7]
    by_threshold, by_reference = image_confusions(record, gt, C + 1, lambdas, thresholds)
    variants = [("classifier", 0.0), ("prototype", 0.0), ("fused", 0.3), ("fused", 1.0)]
    assert by_threshold.shape == (4, 3, C + 1, C + 1) and by_reference.shape == (4, C + 1, C + 1)
    for m, (kind, lam) in enumerate(variants):
        for i, t in enumerate(thresholds):
            expected = count_confusion(predict_mask(record, kind, lam, "threshold", t), gt, C + 1)
            np.testing.assert_array_equal(by_threshold[m, i], expected)
        expected = count_confusion(predict_mask(record, kind, lam, "reference"), gt, C + 1)
        np.testing.assert_array_equal(by_reference[m], expected)


def test_eval_cams_rows_sweep_and_calibration(hand_run):
    run, cfg = hand_run
    result = eval_cams(run)
    assert set(result["rows"]) == {"classifier", "prototype", "fused"}
    # the classifier CAM is the GT itself: perfect at every threshold, lowest one chosen
    classifier = result["rows"]["classifier"]
    assert classifier["miou"] == pytest.approx(1.0)
    assert classifier["threshold"] == min(cfg.cams.threshold_sweep)
    assert all(v == pytest.approx(1.0) for v in result["sweep"]["threshold_rule"]["classifier"])
    assert set(classifier["iou"]) == {"background", *FIXTURE_CLASSES}
    # the prototype CAM is noise: its figures equal an independent count over predict_mask
    ids = VOC_LISTS["train"]
    records = [load_cam(run, i) for i in ids]
    gts = [fixture_mask(VOC_IMAGES[i]) for i in ids]
    for i, t in enumerate(result["thresholds"]):
        for name, kind, lam in [("prototype", "prototype", 0.0), ("fused@0.5", "fused", 0.5)]:
            conf = sum(count_confusion(predict_mask(r, kind, lam, "threshold", t), g, C + 1)
                       for r, g in zip(records, gts))
            assert result["sweep"]["threshold_rule"][name][i] == pytest.approx(mean_iou(conf))
    prototype = result["rows"]["prototype"]
    conf = sum(count_confusion(predict_mask(r, "prototype", 0.0, "threshold", prototype["threshold"]), g, C + 1)
               for r, g in zip(records, gts))
    assert prototype["miou"] == pytest.approx(max(result["sweep"]["threshold_rule"]["prototype"]))
    ratio = result["calibration"]["prototype"]["activation_ratio"]
    np.testing.assert_allclose([ratio[n] for n in FIXTURE_CLASSES], conf.sum(0)[1:] / conf.sum(1)[1:])
    assert result["calibration"]["classifier"]["activation_ratio"]["cat"] == pytest.approx(1.0)
    reference = sum(count_confusion(predict_mask(r, "prototype", 0.0, "reference"), g, C + 1)
                    for r, g in zip(records, gts))
    assert prototype["reference_rule"]["miou"] == pytest.approx(mean_iou(reference))
    fused = result["rows"]["fused"]
    assert fused["lambda"] in result["lambdas"] and fused["reference_rule"]["lambda"] == cfg.cams.fusion_lambda
    assert result["image_counts"]["cat"] == 3
    assert "note" in result["heldout"]          # no CAMs for val yet: said, not skipped silently
    assert json.loads(run.cam_eval_json.read_text())["rows"]["fused"]["miou"] == pytest.approx(fused["miou"])


def test_authors_protocol_is_a_fixed_rule_row_never_tuned_on_the_list(hand_run, capsys):
    """The rows to compare with the paper: the authors' eval_cam.py rule (bg + 0.4 vs 2 x fg) on
    the prototype CAM and on the fused CAM at cams.fusion_lambda, whatever the sweeps would pick;
    counted here independently through predict_mask."""
    from sfc_core.eval_files import read_cam_eval

    run, cfg = hand_run
    cfg = run.load_config()
    cfg.cams.fusion_lambda = 0.1                        # not the lambda the sweep picks
    cfg.save(run.config_json)
    result = eval_cams(run)
    printed = capsys.readouterr().out
    ids = VOC_LISTS["train"]
    records, gts = [load_cam(run, i) for i in ids], [fixture_mask(VOC_IMAGES[i]) for i in ids]
    authors = result["authors_protocol"]["rows"]
    assert set(authors) == {"prototype", "fused"} and "0.4" in result["authors_protocol"]["rule"]
    for kind, lam in (("prototype", 0.0), ("fused", 0.1)):
        conf = sum(count_confusion(predict_mask(r, kind, lam, "reference"), g, C + 1) for r, g in zip(records, gts))
        assert authors[kind]["miou"] == pytest.approx(mean_iou(conf))
    assert authors["fused"]["lambda"] == 0.1 != result["rows"]["fused"]["lambda"]
    assert read_cam_eval(run.cam_eval_json).authors_miou("fused") == authors["fused"]["miou"]
    assert "authors' protocol" in printed and "tuned on the list it reports" in printed
    assert printed.index("authors' protocol") < printed.index("tuned on the list it reports")


def test_eval_cams_reads_back_only_a_cam_eval_json_of_the_same_cams(hand_run, capsys):
    run, _ = hand_run
    first = eval_cams(run)
    assert eval_cams(run) == first
    assert "up to date" in capsys.readouterr().out
    write_cams(run, VOC_LISTS["train"], seed=7, perfect_classifier=False)   # other CAMs, same names
    second = eval_cams(run)
    assert "up to date" not in capsys.readouterr().out
    assert second["rows"]["classifier"]["miou"] < first["rows"]["classifier"]["miou"] == pytest.approx(1.0)
    write_cams(run, VOC_LISTS["val"], seed=3)                # held-out CAMs appear: scored now
    assert eval_cams(run)["heldout"]["num_images"] == 1
    cfg = run.load_config()
    cfg.cams.threshold_sweep = (0.2, 0.5)                    # other settings
    cfg.save(run.config_json)
    assert eval_cams(run)["thresholds"] == [0.2, 0.5]


def test_the_typed_readers_name_what_the_evaluation_files_hold(hand_run):
    from sfc_core.eval_files import read_cam_eval

    run, _ = hand_run
    write_cams(run, VOC_LISTS["val"], seed=3)
    raw = eval_cams(run)
    typed = read_cam_eval(run.cam_eval_json)
    assert (typed.list_name, typed.num_images, typed.classes) == (raw["list"], raw["num_images"], raw["classes"])
    for kind in ("classifier", "prototype", "fused"):
        row = raw["rows"][kind]
        assert (typed.miou(kind), typed.iou(kind), typed.reference_miou(kind)) == \
            (row["miou"], row["iou"], row["reference_rule"]["miou"])
        assert typed.setting(kind) == {"kind": kind, "lam": row["lambda"] or 0.0, "background": "threshold",
                                       "threshold": row["threshold"]}
        calib = typed.calibration(kind)
        assert calib.spearman == raw["calibration"][kind]["spearman_ratio_vs_log_count"]
        assert calib.activation_ratio == raw["calibration"][kind]["activation_ratio"]
        assert typed.heldout.miou(kind) == raw["heldout"]["rows"][kind]["miou"]
    assert typed.heldout_list == "val" and typed.image_counts == raw["image_counts"]
    assert typed.sweep("reference_rule") == raw["sweep"]["reference_rule"]
    run.cam_eval_json.write_text("{not json")
    with pytest.raises(SfcError, match="cannot read CAM evaluation"):
        read_cam_eval(run.cam_eval_json)


def test_eval_cams_reports_heldout_at_the_chosen_settings(hand_run):
    run, _ = hand_run
    write_cams(run, VOC_LISTS["val"], seed=3)
    result = eval_cams(run)
    held = result["heldout"]
    assert held["list"] == "val" and held["num_images"] == 1
    for kind in ("classifier", "prototype", "fused"):
        assert held["rows"][kind]["threshold"] == result["rows"][kind]["threshold"]
        assert held["rows"][kind]["lambda"] == result["rows"][kind]["lambda"]
    record, gt = load_cam(run, "2007_000006"), fixture_mask(VOC_IMAGES["2007_000006"])
    row = result["rows"]["fused"]
    conf = count_confusion(predict_mask(record, "fused", row["lambda"], "threshold", row["threshold"]), gt, C + 1)
    assert held["rows"]["fused"]["miou"] == pytest.approx(mean_iou(conf))


def test_eval_cams_refuses_a_partly_made_heldout_list_before_any_work(hand_run):
    run, cfg = hand_run
    lists = Path(cfg.data.root) / "ImageSets" / "Segmentation"
    (lists / "val2.txt").write_text("2007_000001\n2007_000006\n")     # 000001 has CAMs, 000006 not
    cfg.data.heldout_list = "val2"
    cfg.save(run.config_json)
    with pytest.raises(SfcError, match="1 of 2 images of list 'val2' have no CAM file, first: 2007_000006"):
        eval_cams(run)
    assert not run.cam_eval_json.exists()


def test_eval_cams_refuses_missing_cams_missing_gt_and_another_class_list(hand_run, capsys):
    run, cfg = hand_run
    run.cam_file("2007_000003").unlink()
    with pytest.raises(SfcError, match="1 of 5 images of list 'train' have no CAM file, first: 2007_000003"):
        eval_cams(run)
    assert main(["eval-cams", "--run", str(run.root)]) == 2
    assert "have no CAM file" in capsys.readouterr().err
    write_cams(run, ["2007_000003"])
    (Path(cfg.data.root) / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(SfcError, match="1 of 5 images of list 'train' have no ground-truth mask"):
        eval_cams(run)
    write_voc_tree(cfg.data.root, labels="json")
    save_cam(run.cam_file("2007_000004"), np.array([0, 2, 3]), {"classifier": np.zeros((3, 20, 30)), "prototype": np.zeros((3, 20, 30))}, 20)
    with pytest.raises(SfcError, match="made for 20 classes"):
        eval_cams(run)


def test_eval_seg_counts_uncertain_pixels_both_ways(hand_run):
    run, _ = hand_run
    folder = run.pseudo_masks("crf")
    folder.mkdir(parents=True)
    expected_bg = expected_ignored = 0
    uncertain = 0
    for image_id in VOC_LISTS["train"]:
        gt = fixture_mask(VOC_IMAGES[image_id])
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        pred[5:8, :] = 255                      # a band of uncertain pixels
        uncertain += int(((pred == 255) & (gt != 255)).sum())
        png = Image.fromarray(pred)
        png.putpalette(voc_palette())
        png.save(folder / f"{image_id}.png")
        expected_bg = expected_bg + count_confusion(np.where(pred == 255, 0, pred), gt, C + 1)
        expected_ignored = expected_ignored + count_confusion(pred, np.where(pred == 255, 255, gt), C + 1)
    eval_cams(run)
    result = eval_seg(run)
    crf = result["methods"]["crf"]
    typed = read_seg_eval(run.seg_eval_json)
    assert typed.methods == ["crf"] and typed.miou("crf") == crf["uncertain_as_background"]["miou"]
    assert typed.miou("crf", uncertain="ignored") == crf["uncertain_ignored"]["miou"]
    assert typed.uncertain_share("crf") == crf["uncertain_share"] and typed.fused_cam == result["fused_cam"]
    assert crf["uncertain_pixels"] == uncertain
    assert crf["uncertain_as_background"]["miou"] == pytest.approx(mean_iou(expected_bg))
    assert crf["uncertain_ignored"]["miou"] == pytest.approx(1.0) == mean_iou(expected_ignored)
    assert crf["uncertain_as_background"]["miou"] < 1.0
    assert result["fused_cam"]["miou"] is not None
    assert json.loads(run.seg_eval_json.read_text())["methods"]["crf"]["uncertain_pixels"] == uncertain
    # scoring one method keeps the other's scores; they go when its masks go
    shutil.copytree(folder, run.pseudo_masks("irn"))
    assert set(eval_seg(run, ["irn"])["methods"]) == {"crf", "irn"}
    assert json.loads(run.seg_eval_json.read_text())["methods"]["crf"]["uncertain_pixels"] == uncertain
    shutil.rmtree(run.pseudo_masks("irn"))
    assert set(eval_seg(run, ["crf"])["methods"]) == {"crf"}
    (folder / "2007_000001.png").unlink()
    with pytest.raises(SfcError, match="have no pseudo mask \\(crf\\)"):
        eval_seg(run)


@pytest.mark.slow
def test_cams_then_eval_cams_on_the_smoke_preset(cam_run, smoke_dataset, capsys):
    cfg = cam_run.load_config()
    ids = smoke_dataset.ids(cfg.data.train_list)
    assert all(cam_run.cam_file(i).is_file() for i in ids)
    record = load_cam(cam_run, ids[0], num_classes=smoke_dataset.num_classes)
    gt = smoke_dataset.read_mask(ids[0])
    assert record.size == gt.shape
    np.testing.assert_array_equal(record.keys, present_keys(smoke_dataset.label(ids[0])))
    assert record.maps["classifier"].max() <= 1.0 and record.maps["classifier"].max() > 0.5
    # resumable: a second call finds every image done and rewrites nothing
    mtime = cam_run.cam_file(ids[0]).stat().st_mtime_ns
    assert main(["cams", "--run", str(cam_run.root)]) == 0
    assert cam_run.cam_file(ids[0]).stat().st_mtime_ns == mtime
    assert main(["eval-cams", "--run", str(cam_run.root)]) == 0
    out = capsys.readouterr().out
    assert "classifier" in out and "prototype" in out and "fused" in out and "Spearman" in out
    result = json.loads(cam_run.cam_eval_json.read_text())
    names = smoke_dataset.class_names
    for kind in ("classifier", "prototype", "fused"):
        row = result["rows"][kind]
        assert 0.0 <= row["miou"] <= 1.0
        assert set(row["iou"]) == {"background", *names}
        assert set(result["calibration"][kind]["activation_ratio"]) == set(names)
        assert row["miou"] == pytest.approx(max(v for v in result["sweep"]["threshold_rule"][
            kind if kind != "fused" else f"fused@{row['lambda']:g}"]))


@pytest.mark.slow
def test_smoke_cams_batched_equal_one_at_a_time(cam_run, smoke_dataset, tmp_path):
    """cam_run's CAMs were made at the default cams.batch_size (8 images of one size a
    forward); a copy of the run made one image at a time has the same files."""
    cfg = cam_run.load_config()
    assert cfg.cams.batch_size > 1
    ids = smoke_dataset.ids(cfg.data.train_list)
    copy = RunDir(tmp_path / "run")
    shutil.copytree(cam_run.root, copy.root, ignore=shutil.ignore_patterns("cams"))
    make_cams(copy.root, overrides={"cams.batch_size": 1})
    assert_same_cams(_cam_arrays(copy, ids), _cam_arrays(cam_run, ids))
