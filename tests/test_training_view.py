"""Notebook 02's training views (sfc_core/analysis/training.py): the step taken apart is the train
stage's step, its per-class terms add up to the losses, and the live loss plot redraws while a
block runs and once at its end, also when the block is interrupted."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

from sfc_core import engine
from sfc_core.analysis import training
from sfc_core.data import TrainDataset
from sfc_core.data.stats import class_weights
from sfc_core.train import build_trainer, sfc_step


def test_the_step_taken_apart_is_the_train_stages_step(smoke_config, smoke_dataset):
    cfg, cpu = smoke_config, torch.device("cpu")
    step = training.take_step(cfg, smoke_dataset, cpu, warm_batches=0)
    # the stage's own update from the same seed, on the same first batch of the list
    engine.seed_everything(cfg.runtime.seed)
    t = cfg.train
    train_set = TrainDataset(smoke_dataset, cfg.data.train_list, cfg.data.crop_size, cfg.data.resize_long,
                             seed=cfg.runtime.seed)
    weights = torch.as_tensor(class_weights(smoke_dataset, cfg), dtype=torch.float32)
    sfc = build_trainer(cfg, list(smoke_dataset.class_names), weights, cpu, engine.DistInfo(),
                        t.max_steps or t.epochs * (len(train_set) // t.batch_size))
    out = sfc_step(sfc, torch.utils.data.default_collate([train_set[(0, i)] for i in range(t.batch_size)]))
    assert step["losses"] == pytest.approx({name: float(v.detach()) for name, v in out["losses"].items()}, rel=1e-6)
    assert step["grad_norm"] == pytest.approx(float(out["grad_norm"]), rel=1e-5)
    assert step["draws"] == t.bank_draws and len(step["batch_images"]) == t.batch_size + t.bank_draws
    assert step["batch_images"].dtype.name == "uint8" and step["half_images"].shape[1] == cfg.data.crop_size // 2
    assert step["loss_after"] < step["losses"]["total"]          # the step lowered the batch's loss


def test_the_per_class_terms_add_up_to_the_weighted_losses(smoke_config, smoke_dataset):
    step = training.take_step(smoke_config, smoke_dataset, torch.device("cpu"))
    rows, losses = step["terms"], step["losses"]
    total = rows[-1]
    assert total["w_k x prototype term"] == pytest.approx(losses["prototype"], rel=1e-6)
    assert total["w_k x scale term"] == pytest.approx(losses["scale"], rel=1e-6)
    for column in ("w_k x prototype term", "w_k x scale term"):
        assert sum(r[column] for r in rows[:-1]) == pytest.approx(total[column], rel=1e-4)
    present = {smoke_dataset.class_names[k] for k in torch.nonzero(step["labels"].amax(dim=0)).flatten()}
    assert {r["class"] for r in rows[1:-1]} == present
    loss = smoke_config.loss
    assert losses["total"] == pytest.approx(losses["cls"] + loss.prototype_weight * losses["prototype"]
                                            + loss.scale_weight * losses["scale"], rel=1e-6)


class Handle:
    def __init__(self):
        self.shown = []

    def update(self, image):
        self.shown.append(image.data)


def _log(path, step):
    with path.open("a") as f:
        f.write(json.dumps({"step": step, "loss/total": 1.0 / step, "loss/cls": 0.5}) + "\n")


def test_live_losses_redraws_as_records_come_and_once_at_the_end(tmp_path):
    metrics, handle = tmp_path / "metrics.jsonl", Handle()
    with training.live_losses(metrics, every=0.05, handle=handle):
        time.sleep(0.2)
        assert handle.shown == []                         # no file yet: nothing drawn
        _log(metrics, 1)
        deadline = time.monotonic() + 5
        while not handle.shown and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(handle.shown) == 1 and handle.shown[0][:4] == b"\x89PNG"
        time.sleep(0.2)
        assert len(handle.shown) == 1                     # nothing new: not redrawn
        _log(metrics, 2)
        with metrics.open("a") as f:
            f.write('{"step": 3, "loss/to')               # a line being written is skipped
    assert len(handle.shown) >= 2                          # the last draw, at the end of the block
    assert [r["step"] for r in training.read_records(metrics)] == [1, 2]


def test_live_losses_stops_redrawing_when_the_block_is_interrupted(tmp_path):
    metrics, handle = tmp_path / "metrics.jsonl", Handle()
    _log(metrics, 1)
    with pytest.raises(KeyboardInterrupt):
        with training.live_losses(metrics, every=0.05, handle=handle):
            raise KeyboardInterrupt
    drawn = len(handle.shown)
    assert drawn == 1
    _log(metrics, 2)
    time.sleep(0.3)
    assert len(handle.shown) == drawn                      # the watcher ended with the block


def test_crops_to_rgb_undoes_the_normalisation():
    from sfc_core.data.transforms import normalize_on_device

    images = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    rgb = training.crops_to_rgb(normalize_on_device(images, "cpu"))
    assert rgb.shape == (2, 4, 5, 3) and (rgb == images.permute(0, 2, 3, 1).numpy()).all()
    assert not math.isnan(float(rgb.mean()))
