"""Step 3 (sfc_core.segment): joint transforms, network set-up, evaluation, the stage end to end,
its bad inputs and an exact resume."""
from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from sfc_core import loop
from sfc_core import segment as seg
from sfc_core.engine import DistInfo
from sfc_core.errors import SfcError
from sfc_core.io import atomic_write_json
from sfc_core.metrics import confusion_matrix, mean_iou
from sfc_core.run_dir import RunDir

# Few steps of small crops, one eval scale, no workers: what the end-to-end tests run with.
FAST = {"segment.iterations": 3, "segment.batch_size": 4, "segment.crop_size": 48,
        "segment.eval_scales": (1.0,), "segment.checkpoint_every": 2, "segment.log_every": 1,
        "runtime.num_workers": 0}


def test_epoch_keys_deal_one_permutation_to_the_ranks():
    whole = loop.epoch_keys(10, seed=3, epoch=1, dist=DistInfo())
    assert sorted(i for _, i in whole) == list(range(10)) and {e for e, _ in whole} == {1}
    assert whole == loop.epoch_keys(10, seed=3, epoch=1, dist=DistInfo())
    assert whole != loop.epoch_keys(10, seed=3, epoch=2, dist=DistInfo())
    ranks = [loop.epoch_keys(10, 3, 1, DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert [len(r) for r in ranks] == [3, 3, 3]
    flat = [i for r in ranks for _, i in r]
    assert len(set(flat)) == 9 and set(flat) <= set(range(10))


# -- loss and network --------------------------------------------------------------------------


def test_pixel_loss_is_the_mean_over_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6)
    masks = torch.randint(0, 4, (2, 5, 6))
    masks[0, :2] = 255
    expected = F.cross_entropy(logits, masks, ignore_index=255)
    assert torch.allclose(seg.pixel_loss(logits, masks), expected)
    assert seg.pixel_loss(logits, torch.full_like(masks, 255)).item() == 0.0


def test_build_network_names_and_weights():
    with pytest.raises(SfcError, match="unknown segmentation network"):
        seg.build_network("unet_of_my_own", 3, "none")
    model = seg.build_network("lraspp_mobilenet_v3_large", 5, "none")
    assert model(torch.zeros(1, 3, 32, 32))["out"].shape == (1, 5, 32, 32)


def test_imagenet_backbone_offline_names_the_setting(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(SfcError, match="segment.backbone_weights=PATH"):
        seg.build_network("lraspp_mobilenet_v3_large", 3, "imagenet")


def test_backbone_weights_from_a_local_checkpoint(tmp_path):
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    path = tmp_path / "mobilenet_v3_large.pth"
    torch.save(classifier.state_dict(), path)
    model = seg.build_network("lraspp_mobilenet_v3_large", 3, str(path))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[f"features.{key}"]), key
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(SfcError, match="do not fit"):
        seg.build_network("lraspp_mobilenet_v3_large", 3, str(tmp_path / "resnet18.pth"))
    with pytest.raises(SfcError, match="not found"):
        seg.build_network("lraspp_mobilenet_v3_large", 3, str(tmp_path / "missing.pth"))


def test_parameter_groups_split_backbone_and_head():
    from sfc_core.config import SegmentConfig

    model = seg.build_network("lraspp_mobilenet_v3_large", 3, "none")
    groups = seg.parameter_groups(model, SegmentConfig(lr=0.2, backbone_lr_mult=0.1))
    assert [g["lr"] for g in groups] == pytest.approx([0.02, 0.2])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(groups[0]["params"]) == len(list(model.backbone.parameters()))


def test_crf_prediction_keeps_to_the_predicted_classes():
    from sfc_core.config import RefineConfig

    rng = np.random.default_rng(0)
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 200
    pred = np.full((24, 24), 7, np.uint8)
    pred[:, 13:] = 3
    pred[rng.random((24, 24)) < 0.05] = 3          # speckle the CRF should clean on the left
    out = seg.crf_prediction(image, pred, RefineConfig())
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {3, 7}
    assert (out[:, :10] == 7).mean() > (pred[:, :10] == 7).mean()


# -- the stage on the smoke dataset ------------------------------------------------------------


def _make_run(path, config, dataset) -> RunDir:
    """A run directory with a configuration and class list: what the stage reads of a run."""
    run = RunDir(path)
    config.save(run.config_json)
    atomic_write_json(run.class_names_json, list(dataset.class_names))
    return run


@pytest.fixture
def run(smoke_config, smoke_dataset, tmp_path):
    return _make_run(tmp_path / "run", smoke_config, smoke_dataset)


@pytest.fixture
def no_evaluation(monkeypatch):
    """Skip the held-out evaluation in tests about training (one test scores it for real)."""
    monkeypatch.setattr(seg, "evaluate_network", lambda *args, **kwargs: {})


def _write_pseudo_masks(run: RunDir, dataset, ids, method: str = "irn") -> None:
    """Ground truth with a 255 band on the left: stands in for the refinement stage's PNGs."""
    folder = run.pseudo_masks(method)
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        mask = dataset.read_mask(image_id).copy()
        mask[:, :4] = 255
        image = Image.fromarray(mask, mode="P")
        image.putpalette([0, 0, 0] * 256)
        image.save(folder / f"{image_id}.png")


@pytest.mark.slow
def test_segment_gt_trains_evaluates_and_writes_its_files(run, smoke_config, smoke_dataset):
    settings = {**FAST, "segment.eval_scales": (0.75, 1.0)}
    result = seg.segment(run, "gt", settings, save_predictions=True)
    out = RunDir(run.segment_dir("gt"))
    assert json.loads(run.final_eval_json("gt").read_text()) == json.loads(json.dumps(result))
    assert torch.load(out.last_checkpoint, weights_only=True)["step"] == 3
    logged = [json.loads(line) for line in out.metrics_jsonl.read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in logged)
    assert out.load_config().segment.iterations == 3
    assert result["classes"] == ["background", *smoke_dataset.class_names]
    # the multi-scale mIoU, recomputed here from the saved predictions and the ground truth
    ids = smoke_dataset.ids(smoke_config.data.heldout_list)
    k = smoke_dataset.num_classes + 1
    conf = sum(confusion_matrix(np.asarray(Image.open(run.segment_predictions("gt") / f"{i}.png")),
                                smoke_dataset.read_mask(i), k) for i in ids)
    assert result["multi_scale_flip"]["miou"] == pytest.approx(mean_iou(conf))
    assert result["num_images"] == len(ids) and result["train_images_per_s"] > 0
    assert "multi_scale_flip_crf" not in result
    # a finished run is not trained again; evaluating it again gives the same figures
    again = seg.segment(run, "gt", {**settings, "segment.eval_crf": True})
    assert again["train_images_per_s"] is None
    assert again["multi_scale_flip"]["miou"] == pytest.approx(result["multi_scale_flip"]["miou"])
    assert 0 <= again["multi_scale_flip_crf"]["miou"] <= 1


@pytest.mark.slow
def test_segment_irn_reads_pseudo_masks(run, smoke_config, smoke_dataset, no_evaluation):
    _write_pseudo_masks(run, smoke_dataset, smoke_dataset.ids(smoke_config.data.train_list))
    result = seg.segment(run, "irn", {**FAST, "segment.iterations": 1})
    assert result["masks"] == "irn" and run.final_eval_json("irn").is_file()
    assert torch.load(RunDir(run.segment_dir("irn")).last_checkpoint, weights_only=True)["masks"] == "irn"


@pytest.mark.slow
def test_segment_cam_uses_the_threshold_eval_cams_chose(run, smoke_config, smoke_dataset, no_evaluation):
    from sfc_core.cam_files import save_cam

    ids = smoke_dataset.ids(smoke_config.data.train_list)
    for image_id in ids:   # CAMs that are one-hot ground truth: the mask must come back
        gt = smoke_dataset.read_mask(image_id)
        keys = np.concatenate([[0], np.flatnonzero(smoke_dataset.label(image_id)) + 1])
        maps = (gt[None] == keys[:, None, None]).astype(np.float32) * 0.8
        save_cam(run.cam_file(image_id), keys, {"classifier": maps, "prototype": maps}, smoke_dataset.num_classes)
    source = seg.mask_source(run, smoke_dataset, "cam", smoke_config)
    assert source.settings["background"] == "reference"
    atomic_write_json(run.cam_eval_json, {"rows": {"fused": {"background": "threshold", "lambda": 0.5, "threshold": 0.3}}})
    source = seg.mask_source(run, smoke_dataset, "cam", smoke_config)
    assert source.settings == {"lambda": 0.5, "background": "threshold", "threshold": 0.3,
                               "from": "cam_eval.json"}
    gt = smoke_dataset.read_mask(ids[0])
    assert np.array_equal(source.read(ids[0]), np.where(gt == 255, 0, gt))
    result = seg.segment(run, "cam", {**FAST, "segment.iterations": 1})
    assert result["mask_settings"]["threshold"] == 0.3


@pytest.mark.slow
def test_segment_on_the_pipeline_irn_masks_and_gt(cam_run, smoke_dataset):
    """train -> cams -> refine irn -> segment: the refinement stage's real pseudo masks."""
    from sfc_core.refine import refine

    refine(cam_run, "irn")   # a no-op when test_refine made them
    irn = seg.segment(cam_run, "irn", FAST)
    gt = seg.segment(cam_run, "gt", FAST)
    for result in (irn, gt):
        assert result["steps"] == 3 and result["num_images"] == len(smoke_dataset.ids("val"))
        assert 0 <= result["single_scale"]["miou"] <= 1
        assert 0 <= result["multi_scale_flip"]["miou"] <= 1
    assert json.loads(cam_run.final_eval_json("irn").read_text())["masks"] == "irn"


def test_missing_pseudo_masks_name_count_and_list(run, smoke_config, smoke_dataset, capsys):
    from sfc_core.cli import main

    ids = smoke_dataset.ids(smoke_config.data.train_list)
    _write_pseudo_masks(run, smoke_dataset, ids[3:])
    with pytest.raises(SfcError, match=rf"3 of {len(ids)} images of list 'train_aug' have no irn mask"):
        seg.segment(run, "irn", FAST)
    assert main(["segment", "--run", str(run.root), "--masks", "crf"]) == 2
    assert "refine --run" in capsys.readouterr().err
    assert not run.segment_dir("irn").exists() and not run.segment_dir("crf").exists()


@pytest.mark.parametrize("damage, message", [
    ("size", "is 6x5 but its image is"),
    ("class", "has class index 42"),
])
def test_bad_pseudo_masks_stop_before_writing(run, smoke_config, smoke_dataset, damage, message):
    ids = smoke_dataset.ids(smoke_config.data.train_list)
    _write_pseudo_masks(run, smoke_dataset, ids)
    bad = run.pseudo_masks("irn") / f"{ids[7]}.png"
    mask = np.zeros((5, 6), np.uint8) if damage == "size" else smoke_dataset.read_mask(ids[7]).copy()
    if damage == "class":
        mask[2, 2] = 42
    Image.fromarray(mask, mode="L").save(bad)
    with pytest.raises(SfcError, match=message) as info:
        seg.segment(run, "irn", FAST)
    assert info.value.path == bad
    assert not run.segment_dir("irn").exists()


@pytest.mark.slow
def test_checkpoint_of_another_network_or_class_count_is_refused(run, no_evaluation):
    seg.segment(run, "gt", {**FAST, "segment.iterations": 1})
    last = RunDir(run.segment_dir("gt")).last_checkpoint
    before = last.read_bytes()
    with pytest.raises(SfcError, match="architecture='lraspp_mobilenet_v3_large'"):
        seg.segment(run, "gt", {**FAST, "segment.network": "deeplabv3_mobilenet_v3_large"})
    ckpt = torch.load(last, weights_only=True)
    torch.save({**ckpt, "num_classes": ckpt["num_classes"] + 1}, last)
    with pytest.raises(SfcError, match="num_classes"):
        seg.segment(run, "gt", FAST)
    torch.save(torch.load(last, weights_only=True) | {"num_classes": ckpt["num_classes"]}, last)
    assert torch.load(last, weights_only=True)["step"] == 1 and len(before) > 0


@pytest.mark.slow
def test_a_step3_run_of_other_settings_is_refused_or_trained_again_with_force(run, no_evaluation):
    seg.segment(run, "gt", {**FAST, "segment.iterations": 1})
    with pytest.raises(SfcError, match="made from other inputs") as info:
        seg.segment(run, "gt", {**FAST, "segment.iterations": 2})
    assert "--force" in info.value.fix
    result = seg.segment(run, "gt", {**FAST, "segment.iterations": 2}, force=True)
    assert result["steps"] == 2 and result["made_from"]["segment"]["iterations"] == 2
    assert seg.segment(run, "gt", {**FAST, "segment.iterations": 2, "segment.eval_crf": True})["steps"] == 2


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(run, smoke_config, smoke_dataset, tmp_path, monkeypatch,
                                                 no_evaluation):
    # deeplabv3 has dropout (global RNG); 80 images / 16 = 5 steps an epoch: the kill in step 5
    # resumes from the step-3 checkpoint, mid-epoch, and the run crosses into the next epoch.
    settings = {**FAST, "segment.network": "deeplabv3_mobilenet_v3_large", "segment.batch_size": 16,
                "segment.crop_size": 32, "segment.iterations": 7, "segment.checkpoint_every": 3,
                "runtime.num_workers": 1}
    seg.segment(run, "gt", settings)
    reference = torch.load(RunDir(run.segment_dir("gt")).last_checkpoint, weights_only=True)

    other = _make_run(tmp_path / "other", smoke_config, smoke_dataset)
    last = RunDir(other.segment_dir("gt")).last_checkpoint
    original, calls = seg.train_step, []

    def killed_in_step_five(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(seg, "train_step", killed_in_step_five)
    with pytest.raises(KeyboardInterrupt):
        seg.segment(other, "gt", settings)
    assert torch.load(last, weights_only=True)["step"] == 3
    assert not other.final_eval_json("gt").exists()
    monkeypatch.setattr(seg, "train_step", original)
    seg.segment(other, "gt", settings)
    final = torch.load(last, weights_only=True)
    assert final["step"] == 7
    assert reference["model"].keys() == final["model"].keys()
    for key, value in reference["model"].items():
        assert torch.equal(value, final["model"][key]), key
    assert torch.equal(reference["ranks"][0]["rng"]["torch"], final["ranks"][0]["rng"]["torch"])
    logged = RunDir(other.segment_dir("gt")).metrics_jsonl.read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == list(range(1, 8))   # step 4 once


# -- the held-out evaluation -------------------------------------------------------------------


def _per_image_confusions(model, dataset, cfg) -> dict[str, np.ndarray]:
    """The evaluation as it was before batching: each image's (image, flip) pair of every scale
    through the network alone, label maps read to the host, a numpy confusion per image."""
    import copy

    from sfc_core.data import MultiScaleDataset
    from sfc_core.data.transforms import device_views
    from sfc_core.model.build import fold_batchnorms

    s, k = cfg.segment, dataset.num_classes + 1
    model = fold_batchnorms(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)
    scales = s.eval_scales if 1.0 in s.eval_scales else (1.0, *s.eval_scales)
    kinds = ["single_scale", "multi_scale_flip"] + (["multi_scale_flip_crf"] if s.eval_crf else [])
    conf = {kind: np.zeros((k, k), np.int64) for kind in kinds}
    with torch.no_grad():
        for item in MultiScaleDataset(dataset, cfg.data.heldout_list, scales=scales):
            gt = dataset.read_mask(item["name"])
            probs = []
            for views in item["images"]:
                logits = model(device_views(views, "cpu").contiguous(memory_format=torch.channels_last))["out"]
                logits = torch.stack([logits[0], logits[1].flip(-1)])
                probs.append(F.interpolate(logits, gt.shape, mode="bilinear", align_corners=False).softmax(1))
            labels = {"single_scale": probs[scales.index(1.0)][0].argmax(0),
                      "multi_scale_flip": sum(p.sum(0) for p, scale in zip(probs, scales)
                                              if scale in s.eval_scales).argmax(0)}
            labels = {kind: label.numpy().astype(np.uint8) for kind, label in labels.items()}
            if s.eval_crf:
                labels["multi_scale_flip_crf"] = seg.crf_prediction(dataset.read_image(item["name"]),
                                                                    labels["multi_scale_flip"], cfg.refine)
            for kind in kinds:
                conf[kind] += confusion_matrix(labels[kind], gt, k)
    return conf


@pytest.mark.parametrize("batch_size, eval_scales, eval_crf", [(1, (0.75, 1.0, 1.25), False),
                                                               (4, (0.75, 1.0, 1.25), False),
                                                               (4, (0.75, 1.25), False),
                                                               (4, (1.0,), True)])
def test_batched_evaluation_equals_the_per_image_scores(smoke_config, smoke_dataset, monkeypatch, tmp_path,
                                                        batch_size, eval_scales, eval_crf):
    """evaluate_network (same-size batches, one forward per scale of a batch and its flips,
    confusions counted on the device and read once) gives the per-image loop's confusions
    exactly, CRF included; the PNGs it writes are the last kind's label maps."""
    from sfc_core.config import Config

    torch.manual_seed(0)
    model = seg.build_network("lraspp_mobilenet_v3_large", smoke_dataset.num_classes + 1, "none").eval()
    for head in (model.classifier.low_classifier, model.classifier.high_classifier):
        torch.nn.init.zeros_(head.bias)     # else a random network's biases pick one class everywhere
    cfg = Config.from_dict(smoke_config.to_dict()).override(
        {"runtime.num_workers": 1, "segment.batch_size": batch_size, "segment.eval_scales": eval_scales,
         "segment.eval_crf": eval_crf})
    expected = _per_image_confusions(model, smoke_dataset, cfg)
    assert all((conf.sum(0) > 0).sum() > 1 for conf in expected.values())       # not one class everywhere
    batches, batch = [], seg.same_size_batches
    monkeypatch.setattr(seg, "same_size_batches", lambda *a: (batches.append(len(b)) or b for b in batch(*a)))
    conf = seg.evaluate_network(model, smoke_dataset, cfg.data.heldout_list, cfg, torch.device("cpu"),
                                DistInfo(), predictions=tmp_path)
    ids = smoke_dataset.ids(cfg.data.heldout_list)
    assert max(batches) == batch_size and sum(batches) == len(ids)
    assert conf.keys() == expected.keys()
    for kind in expected:
        np.testing.assert_array_equal(conf[kind], expected[kind], err_msg=kind)
    written = sum(confusion_matrix(np.asarray(Image.open(tmp_path / f"{i}.png")), smoke_dataset.read_mask(i),
                                   smoke_dataset.num_classes + 1) for i in ids)
    np.testing.assert_array_equal(written, expected[list(expected)[-1]])


# -- DeepLab-v2 (the voc preset's step 3) ------------------------------------------------------


@pytest.fixture(scope="module")
def deeplab_v2():
    torch.manual_seed(0)
    return seg.build_network("deeplabv2_resnet101", 4, "none")


def test_deeplab_v2_is_a_dilated_resnet101_with_aspp_and_msc(deeplab_v2):
    from sfc_core.model.deeplab_v2 import ASPP

    model = deeplab_v2
    blocks = [len(getattr(model.backbone, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 23, 3]
    for name, dilation in (("layer3", 2), ("layer4", 4)):     # output stride 8, every block dilated
        assert {(b.conv2.dilation, b.conv2.padding, b.conv2.stride) for b in getattr(model.backbone, name)} \
            == {((dilation, dilation), (dilation, dilation), (1, 1))}
    assert isinstance(model.aspp, ASPP)
    assert [(c.in_channels, c.out_channels, c.dilation, c.padding) for c in model.aspp.convs] == \
        [(2048, 4, (r, r), (r, r)) for r in (6, 12, 18, 24)]
    weights = torch.cat([c.weight.flatten() for c in model.aspp.convs])
    assert abs(weights.std().item() - 0.01) < 0.001 and all(c.bias.abs().sum() == 0 for c in model.aspp.convs)
    model.train()
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not m.training and not m.weight.requires_grad for m in batchnorms)   # frozen
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 41))
        assert [tuple(x.shape) for x in out["scales"]] == [(1, 4, 5, 6), (1, 4, 2, 3), (1, 4, 3, 4)]
        best = torch.stack([out["scales"][0]] + [F.interpolate(x, size=(5, 6), mode="bilinear",
                                                              align_corners=False) for x in out["scales"][1:]])
        torch.testing.assert_close(out["out"], best.amax(0))    # the pixel-wise max of the three
        model.eval()
        assert set(model(torch.randn(1, 3, 33, 41))) == {"out"}  # the test takes the max only
    model.train()


def test_deeplab_v2_batchnorm_stays_frozen_as_syncbatchnorm(deeplab_v2):
    import copy

    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(deeplab_v2)).train()
    norms = [m for m in synced.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert norms and all(not m.training and not m.weight.requires_grad for m in norms)


def test_deeplab_v2_parameter_groups_are_deeplab_pytorchs(deeplab_v2):
    from sfc_core.config import Config
    from sfc_core.engine import make_optimizer

    cfg = Config.from_preset("voc").segment
    optimizer = make_optimizer(cfg.optimizer, seg.parameter_groups(deeplab_v2, cfg), cfg.momentum, cfg.weight_decay)
    rows = [v for g in optimizer.param_groups for v in (g["lr"], g["weight_decay"], g["momentum"])]
    assert rows == pytest.approx([2.5e-4, 5e-4, 0.9, 20 * 2.5e-4, 0.0, 0.9, 10 * 2.5e-4, 5e-4, 0.9])
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    convs = [m for m in deeplab_v2.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(grouped) == len({id(p) for p in grouped}) == len(convs) + 8    # 104 convs + 4 ASPP weights, 4 biases
    trainable = {id(p) for p in deeplab_v2.parameters() if p.requires_grad}
    assert {id(p) for p in grouped} == trainable                           # BatchNorm in no group


def test_msc_loss_sums_four_terms_on_masks_resized_as_pil():
    torch.manual_seed(0)
    masks = torch.randint(0, 3, (2, 41, 41))
    masks[:, :5] = 255
    output = {"scales": (torch.randn(2, 3, 6, 6), torch.randn(2, 3, 3, 3), torch.randn(2, 3, 5, 5)),
              "out": torch.randn(2, 3, 6, 6)}
    terms = []
    for logits in (*output["scales"], output["out"]):
        size = logits.shape[-1]
        resized = np.stack([np.asarray(Image.fromarray(m.numpy().astype(np.uint8)).resize((size, size),
                                                                                          Image.NEAREST))
                            for m in masks])
        terms.append(F.cross_entropy(logits, torch.from_numpy(resized).long(), ignore_index=255))
    assert len(terms) == 4
    assert seg.msc_loss(output, masks).item() == pytest.approx(sum(terms).item(), rel=1e-6)
    assert seg.network_loss(output, masks).item() == pytest.approx(sum(terms).item(), rel=1e-6)


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_accumulated_chunks_update_as_the_whole_batch():
    """Two chunks of 2, each loss / 2 backpropagated, then one step: the update of the batch of 4
    (every pixel labelled, so the chunks' means average to the batch's)."""
    torch.manual_seed(0)
    images, masks = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))
    weights, losses = [], []
    for accumulation in (1, 2):
        torch.manual_seed(1)
        model = _Conv()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        losses.append(seg.train_step(model, images, masks, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                                     False, accumulation).item())
        weights.append(model.conv.weight.detach().clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(weights[0], weights[1])
    assert not torch.equal(weights[0], _seeded_conv_weight())      # an update happened


def _seeded_conv_weight() -> torch.Tensor:
    torch.manual_seed(1)
    return _Conv().conv.weight.detach()


def test_accumulation_must_divide_the_batch_per_process():
    from sfc_core.config import SegmentConfig

    seg.check_accumulation(SegmentConfig(batch_size=10, accumulation_steps=2), DistInfo())
    with pytest.raises(SfcError, match="segment.accumulation_steps=2 does not divide"):
        seg.check_accumulation(SegmentConfig(batch_size=10, accumulation_steps=2), DistInfo(rank=0, world_size=2))


def test_crop_scales_on_deeplab_pytorchs_grid():
    from sfc_core.config import Config

    cfg = Config.from_preset("voc").segment
    rng = np.random.default_rng(0)
    drawn = {seg.crop_scale(rng, cfg) for _ in range(200)}
    assert drawn == {0.5, 0.75, 1.0, 1.25, 1.5}
    smooth = Config.from_preset("coco").segment       # DeepLabV3's recipe: U(0.5, 2.0)
    assert len({seg.crop_scale(rng, smooth) for _ in range(20)}) == 20


def test_network_title_says_which_network_and_init():
    from sfc_core.config import Config

    voc, coco = Config.from_preset("voc").segment, Config.from_preset("coco").segment
    assert seg.network_title(voc) == ("DeepLab-v2 ResNet-101 + MSC, deeplab-pytorch's VOC recipe; "
                                      "ImageNet init (its own: a COCO init)")
    assert seg.network_title(coco) == "deeplabv3_resnet101; ImageNet init"
