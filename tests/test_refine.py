"""IRN's affinity targets, loss and boundary network; the refine stage end to end on the smoke run."""
import itertools
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from sfc_core.config import Config
from sfc_core.errors import SfcError
from sfc_core.model.build import build_backbone
from sfc_core.provenance import read_record
from sfc_core.refine.irn import BoundaryNet, affinity_loss, affinity_targets, edge_layer_table, edge_map
from sfc_core.refine.random_walk import PathIndex


def test_affinity_targets_classify_every_pair_and_ignore_255():
    labels = np.zeros((7, 9), np.int64)
    labels[1:4, 2:6] = 3
    labels[4:, 6:] = 5
    labels[0, :3] = 255
    labels[5, 1] = 255
    index = PathIndex.build(3)
    bg_pos, fg_pos, neg = (t[0].numpy() for t in affinity_targets(torch.from_numpy(labels)[None], index))
    m = index.margin
    assert bg_pos.shape == (len(index.offsets), 7 - m, 9 - 2 * m)
    counts = {"bg": 0, "fg": 0, "neg": 0, "ignored": 0}
    for d, y, x in itertools.product(range(len(index.offsets)), range(7 - m), range(9 - 2 * m)):
        dy, dx = index.offsets[d]
        a, b = labels[y, x + m], labels[y + dy, x + m + dx]
        expected = ("ignored" if 255 in (a, b) else "bg" if a == b == 0 else "fg" if a == b else "neg")
        got = [name for name, t in (("bg", bg_pos), ("fg", fg_pos), ("neg", neg)) if t[d, y, x]]
        assert got == ([] if expected == "ignored" else [expected]), (d, y, x, a, b)
        counts[expected] += 1
    assert min(counts.values()) > 0                 # the map exercises every case


def test_affinity_loss_matches_irns_formula_by_hand():
    affinity = torch.tensor([0.9, 0.5, 0.2, 0.7]).view(1, 4, 1, 1)
    bg_pos = torch.tensor([1, 0, 0, 0], dtype=torch.bool).view(1, 4, 1, 1)
    fg_pos = torch.tensor([0, 1, 0, 0], dtype=torch.bool).view(1, 4, 1, 1)
    neg = torch.tensor([0, 0, 1, 1], dtype=torch.bool).view(1, 4, 1, 1)
    eps = 1e-5
    bg = -np.log(0.9 + eps)
    fg = -np.log(0.5 + eps)
    ng = (-np.log(1 + eps - 0.2) - np.log(1 + eps - 0.7)) / (2 + eps)
    expected = (bg * 1 / (1 + eps) / 2 + fg * 1 / (1 + eps) / 2 + ng) / 2
    assert affinity_loss(affinity, bg_pos, fg_pos, neg).item() == pytest.approx(expected, rel=1e-5)


def test_boundary_net_trains_only_its_branch_on_a_frozen_backbone():
    torch.manual_seed(0)
    net = BoundaryNet(build_backbone("tiny", "none"))
    assert net.stride == 4
    bn_means = [m.running_mean.clone() for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    backbone_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    net.train()
    logits = net(torch.randn(2, 3, 40, 56))
    assert logits.shape == (2, 10, 14)
    logits.sigmoid().mean().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert all(p.grad is not None for p in net.head_parameters())
    after = [m.running_mean for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn_means, after))   # BN statistics frozen
    assert all(torch.equal(v, net.backbone.state_dict()[k]) for k, v in backbone_before.items())


def test_boundary_net_has_irns_five_edge_branches():
    """IRN's resnet50_irn.py: fc_edge1 on the stem (64 channels, stride 4), fc_edge2..5 on
    layer1..layer4, each Conv 1x1 -> 32 (no bias), GroupNorm(4, 32); fc_edge6 Conv(160, 1, 1)."""
    net = BoundaryNet(build_backbone("resnet50", "none"))
    assert edge_layer_table(net) == [("fc_edge1", 64, 4, 1), ("fc_edge2", 256, 4, 1), ("fc_edge3", 512, 8, 2),
                                     ("fc_edge4", 1024, 16, 4), ("fc_edge5", 2048, 16, 4)]
    for conv, norm in net.branches:
        assert (conv.out_channels, conv.kernel_size, conv.bias) == (32, (1, 1), None)
        assert (norm.num_groups, norm.num_channels) == (4, 32)
    assert (net.boundary.in_channels, net.boundary.out_channels, net.boundary.kernel_size) == (160, 1, (1, 1))
    assert net.boundary.bias is not None
    tiny = BoundaryNet(build_backbone("tiny", "none"))      # its own widths: a 16-channel stem
    assert [row[1] for row in edge_layer_table(tiny)] == [16, 16, 32, 64, 128]
    assert tiny.boundary.in_channels == 160


def test_edge_map_pads_image_and_flip_to_the_crop_as_irn():
    """IRN's EdgeDisplacement: [image, flip] padded right/bottom to the crop, one batch, cut to
    ((H-1)//4+1, (W-1)//4+1), sigmoid(logit/2 + flipped logit of the flip/2)."""
    torch.manual_seed(0)
    net = BoundaryNet(build_backbone("tiny", "none")).eval()
    torch.nn.init.normal_(net.boundary.weight)
    image = torch.randn(3, 37, 45)
    with torch.no_grad():
        padded = torch.nn.functional.pad(torch.stack([image, image.flip(-1)]), (0, 64 - 45, 0, 64 - 37))
        logits = net(padded)[:, :10, :12]
        expected = torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)
        got = edge_map(net, image, 64)
        unpadded = net(torch.stack([image, image.flip(-1)]))
    assert got.shape == (10, 12)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(torch.sigmoid(unpadded[0] / 2 + unpadded[1].flip(-1) / 2), got)  # padding matters
    assert edge_map(net, image, 32).shape == (10, 12)       # an image larger than the crop: no padding there


def test_unknown_method_no_run_and_missing_cams_are_sfc_errors(tmp_path, smoke_config, smoke_dataset):
    from sfc_core.refine import refine

    with pytest.raises(SfcError, match="--method irn or crf"):
        refine(tmp_path, "deeplab")
    with pytest.raises(SfcError, match="not a run directory"):
        refine(tmp_path, "crf")
    smoke_config.save(tmp_path / "config.json")
    with pytest.raises(SfcError, match=f"{len(smoke_dataset.ids('train_aug'))} of .* have no CAM file"):
        refine(tmp_path, "crf")


def test_sfc_weights_need_the_runs_backbone(tmp_path):
    from sfc_core.refine.irn import initial_backbone
    from sfc_core.run_dir import RunDir

    cfg = Config.from_preset("synthetic-smoke", {"refine.irn_backbone": "resnet50"})
    with pytest.raises(SfcError, match="refine.irn_backbone=tiny"):
        initial_backbone(RunDir(tmp_path), cfg)


def read_png(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["crf", "irn"])
def test_refine_writes_resumable_palette_masks_for_the_train_list(cam_run, smoke_dataset, method):
    from sfc_core.cli import main

    cfg = cam_run.load_config()
    ids = smoke_dataset.ids(cfg.data.train_list)
    assert main(["refine", "--run", str(cam_run.root), "--method", method]) == 0
    folder = cam_run.pseudo_masks(method)
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted(ids)
    allowed = set(range(smoke_dataset.num_classes + 1)) | {255}
    for image_id in ids[:10]:
        mode, mask = read_png(folder / f"{image_id}.png")
        assert mode == "P" and mask.shape == smoke_dataset.read_image(image_id).shape[:2]
        present = set(np.flatnonzero(smoke_dataset.label(image_id)) + 1) | {0, 255}
        assert set(np.unique(mask)) <= allowed & present          # only the image's own classes
    if method == "irn":
        assert cam_run.irn_checkpoint.is_file()
        assert len(list(cam_run.relation_labels.glob("*.png"))) == len(ids)
        assert not any((read_png(folder / f"{i}.png")[1] == 255).any() for i in ids)  # the walk decides all
    lines = cam_run.pseudo_list(method, cfg.data.train_list).read_text().splitlines()
    assert lines[0] == f"/JPEGImages/{ids[0]}.jpg /SegmentationClassPseudo/{ids[0]}.png"
    assert len(lines) == len(ids)

    # resumable: finished masks are kept, a missing one is made again
    kept, removed = folder / f"{ids[0]}.png", folder / f"{ids[1]}.png"
    mtime = kept.stat().st_mtime_ns
    before = read_png(removed)[1]
    removed.unlink()
    assert main(["refine", "--run", str(cam_run.root), "--method", method]) == 0
    assert kept.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(read_png(removed)[1], before)
    # an incomplete PNG (cut short) is made again too
    data = removed.read_bytes()
    removed.write_bytes(data[: len(data) // 2])
    assert main(["refine", "--run", str(cam_run.root), "--method", method]) == 0
    assert kept.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(read_png(removed)[1], before)
    if method == "crf":       # other settings: the folder is made again, never reused
        assert main(["refine", "--run", str(cam_run.root), "--method", method,
                     "--set", "refine.crf_gaussian_sxy=2.0"]) == 0
        assert kept.stat().st_mtime_ns != mtime
        assert read_record(folder.parent)["refine"]["crf_gaussian_sxy"] == 2.0


@pytest.mark.slow
def test_eval_seg_scores_both_methods(cam_run):
    from sfc_core.evaluate import eval_seg
    from sfc_core.refine import refine

    for method in ("crf", "irn"):
        refine(cam_run, method)                  # no-op when the test above made them
    result = eval_seg(cam_run)
    assert set(result["methods"]) >= {"crf", "irn"}
    for method in ("crf", "irn"):
        assert 0 <= result["methods"][method]["uncertain_ignored"]["miou"] <= 1


@pytest.mark.slow
def test_irn_training_resumes_to_the_weights_of_an_uninterrupted_run(cam_run, smoke_dataset, tmp_path):
    """Two epochs of 10 steps, checkpoints every 3: stopped after 13, resumed from step 12 (mid
    second epoch), it ends with the uninterrupted run's weights, each step logged once."""
    import json
    import shutil

    from sfc_core.engine import load_checkpoint, seed_everything
    from sfc_core.refine import write_confident_labels
    from sfc_core.refine.irn import train_irn
    from sfc_core.run_dir import RunDir

    whole, killed = RunDir(tmp_path / "whole"), RunDir(tmp_path / "killed")
    shutil.copytree(cam_run.root, whole.root, ignore=shutil.ignore_patterns("refine", "pseudo", "segment"))
    cfg = whole.load_config().override({"refine.irn_epochs": 2, "refine.irn_checkpoint_every": 3,
                                        "runtime.num_workers": 0})
    ids = smoke_dataset.ids(cfg.data.train_list)
    write_confident_labels(whole, cfg, smoke_dataset, ids, whole.relation_labels)
    shutil.copytree(whole.root, killed.root)
    cpu = torch.device("cpu")
    for run, stop_after in ((whole, None), (killed, 13), (killed, None)):
        seed_everything(0)      # the boundary branch starts from the process's global RNG (as in refine)
        train_irn(run, cfg, smoke_dataset, ids, cpu, stop_after=stop_after)
        if stop_after:
            assert load_checkpoint(killed.irn_checkpoint)["step"] == 12
    reference, resumed = load_checkpoint(whole.irn_checkpoint), load_checkpoint(killed.irn_checkpoint)
    assert reference["step"] == resumed["step"] == 20 and reference["model"].keys() == resumed["model"].keys()
    for key, value in reference["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    steps = [json.loads(line)["step"] for line in killed.irn_metrics_jsonl.read_text().splitlines()]
    assert steps == list(range(2, 21, 2))                     # irn_log_every=2, step 12's lines once


def _killed_worker(image_id: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(60)
def test_a_crf_worker_killed_is_one_error_naming_the_rerun(tmp_path, monkeypatch):
    """refine's CRF goes through sfc_core.pool: a killed worker ends the stage promptly."""
    from sfc_core import pool, refine

    monkeypatch.setattr(refine, "pool_map", lambda task, *args, **kwargs: pool.pool_map(_killed_worker, *args, **kwargs))
    cfg = Config.from_preset("synthetic-smoke", {"runtime.num_workers": 2})
    with pytest.raises(SfcError, match="a worker process died") as caught:
        refine.write_confident_labels(None, cfg, None, ["a", "b", "c"], tmp_path)
    assert caught.value.path == tmp_path and "lower runtime.num_workers (now 2)" in caught.value.fix
