"""End-to-end training on the smoke preset: a complete run directory, exact resume, the
refusals, training-time validation and the verb's flags."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sfc_core import engine
from sfc_core.config import Config
from sfc_core.errors import SfcError
from sfc_core.run_dir import RunDir
from sfc_core.train import train
from tests.fixtures import trained_model


def copy_config(cfg: Config, **overrides) -> Config:
    return Config.from_dict(cfg.to_dict()).override(overrides)


@pytest.mark.slow
def test_smoke_training_writes_a_complete_run(trained_run, smoke_dataset):
    run = trained_run
    assert json.loads(run.class_names_json.read_text()) == list(smoke_dataset.class_names)
    assert run.load_config().preset == "synthetic-smoke"
    ckpt = engine.load_checkpoint(run.last_checkpoint)
    assert ckpt["step"] == 20 and ckpt["num_classes"] == smoke_dataset.num_classes
    assert ckpt["backbone"] == "tiny" and ckpt["architecture"] == "sfc"
    assert {"model", "optimizer", "schedule", "scaler", "ranks", "config"} <= ckpt.keys()
    assert ckpt["ranks"][0]["bank"]["filled"].any()
    assert engine.load_checkpoint(run.best_checkpoint)["step"] == 20   # val_every=0: best = final
    records = [json.loads(line) for line in run.metrics_jsonl.read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 21, 2))       # log_every=2
    assert all(math.isfinite(r["loss/total"]) and r["images_per_second"] > 0 for r in records)
    assert {"loss/cls", "loss/prototype", "loss/scale", "lr/backbone", "lr/new"} <= records[0].keys()
    assert any(run.tensorboard.iterdir())

    model = trained_model(run.root)
    image = torch.randn(2, 3, 64, 64)
    cam, proto = model.infer(image, torch.tensor(smoke_dataset.label(smoke_dataset.ids("train")[0])))
    assert cam.shape == proto.shape == (smoke_dataset.num_classes + 1, 8, 8)
    assert torch.isfinite(cam).all() and torch.isfinite(proto).all()


@pytest.mark.slow
def test_a_started_run_is_not_overwritten(trained_run, smoke_config):
    with pytest.raises(SfcError, match="already holds a training run") as error:
        train(smoke_config, trained_run.root)
    assert "--resume" in str(error.value)


@pytest.mark.slow
def test_resume_after_an_interruption_ends_with_identical_weights(trained_run, smoke_config, tmp_path):
    run = RunDir(tmp_path / "interrupted")
    summary = train(smoke_config, run.root, stop_after=7)
    assert summary["steps"] == 7 and not summary["finished"]
    assert engine.load_checkpoint(run.last_checkpoint)["step"] == 5    # checkpoint_every=5
    summary = train(smoke_config, run.root, resume=True)               # a fresh start from step 5
    assert summary["finished"] and summary["steps"] == 20

    resumed = engine.load_checkpoint(run.last_checkpoint)
    uninterrupted = engine.load_checkpoint(trained_run.last_checkpoint)
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for a, b in zip(resumed["optimizer"]["state"].values(), uninterrupted["optimizer"]["state"].values()):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert torch.equal(resumed["ranks"][0]["bank"]["images"], uninterrupted["ranks"][0]["bank"]["images"])
    steps = [json.loads(line)["step"] for line in run.metrics_jsonl.read_text().splitlines()]
    assert steps == list(range(2, 21, 2))                              # no step logged twice


@pytest.mark.slow
def test_resume_refuses_a_different_configuration(trained_run, smoke_config):
    with pytest.raises(SfcError, match="loss.prototype_weight"):
        train(copy_config(smoke_config, **{"loss.prototype_weight": 0.0}), trained_run.root, resume=True)


def test_resume_accepts_changes_to_later_stages_only(smoke_config, tmp_path):
    from sfc_core.train import _claim_run_dir

    run = RunDir(tmp_path / "claimed")
    smoke_config.save(run.config_json)
    run.last_checkpoint.parent.mkdir(parents=True)
    run.last_checkpoint.write_bytes(b"")           # a finished step: the directory holds a run
    _claim_run_dir(run, copy_config(smoke_config, **{"refine.irn_epochs": 7, "segment.lr": 0.5}), resume=True)
    _claim_run_dir(run, copy_config(smoke_config, **{"runtime.checkpoint_minutes": 30.0}), resume=True)
    with pytest.raises(SfcError, match="train.lr"):
        _claim_run_dir(run, copy_config(smoke_config, **{"train.lr": 0.5}), resume=True)


@pytest.mark.slow
def test_the_paper_network_with_pcm_trains_its_projection(smoke_config, tmp_path):
    """The smoke preset, like the synthetic one, has no PCM; the paper's (voc) network has, and
    the consistency losses must train its projection. Same seed, so a run at lr 0 keeps the
    initial weights."""
    weights = {}
    for lr in (0.0, 2e-3):
        cfg = copy_config(smoke_config, **{"model.pcm": True, "model.seed_background_scale": 0.3,
                                           "train.lr": lr, "train.max_steps": 2, "train.checkpoint_every": 2})
        run = RunDir(tmp_path / f"lr{lr}")
        train(cfg, run.root)
        weights[lr] = engine.load_checkpoint(run.last_checkpoint)["model"]["pcm_projection.weight"]
    assert torch.isfinite(weights[2e-3]).all()
    assert not torch.equal(weights[0.0], weights[2e-3])


@pytest.mark.slow
def test_validation_keeps_the_best_checkpoint(smoke_config, smoke_dataset, tmp_path):
    run = RunDir(tmp_path / "validated")
    cfg = copy_config(smoke_config, **{"train.max_steps": 4, "train.val_every": 2, "train.checkpoint_every": 4})
    summary = train(cfg, run.root)
    records = [json.loads(line) for line in run.metrics_jsonl.read_text().splitlines()]
    scores = {r["step"]: r["val/miou_cam"] + r["val/miou_prototype"] for r in records if "val/miou_cam" in r}
    assert sorted(scores) == [2, 4]
    assert all(0 <= r.get("val/miou_cam", 0) <= 1 for r in records)
    best_step = max(scores, key=scores.get)
    best = engine.load_checkpoint(run.best_checkpoint)
    assert best["step"] == best_step == summary["best"]["step"]
    assert best["best"]["score"] == pytest.approx(scores[best_step])


@pytest.mark.parametrize("batch_size", [1, 8])
def test_validation_on_the_device_equals_the_per_image_numpy_scores(smoke_config, smoke_dataset, monkeypatch,
                                                                     batch_size):
    """validate (same-size batches, counts on the device, one read) gives the confusion
    matrices, hence the mIoUs, of the per-image loop it replaced: each image alone through
    the network, its arg-max read to the host, a numpy confusion per image."""
    import torch.nn.functional as F

    from sfc_core import train as train_module
    from sfc_core.data import MultiScaleDataset
    from sfc_core.data.transforms import device_views
    from sfc_core.method.cam import max_normalise
    from sfc_core.metrics import confusion_matrix, mean_iou
    from sfc_core.model.build import build_model

    torch.manual_seed(0)
    model = build_model(smoke_config.model, smoke_dataset.num_classes)          # random weights
    k = smoke_dataset.num_classes + 1
    expected = {"cam": np.zeros((k, k), np.int64), "prototype_cam": np.zeros((k, k), np.int64)}
    model.eval()
    with torch.no_grad():
        for item in MultiScaleDataset(smoke_dataset, smoke_config.data.eval_list, scales=(1.0,)):
            out = model(device_views(item["images"][0], "cpu", flip=False),
                        torch.cat([torch.ones(1), item["label"]])[None, :, None, None])
            gt = smoke_dataset.read_mask(item["name"])
            for key, conf in expected.items():
                cam = F.interpolate(out[key].float(), size=gt.shape, mode="bilinear", align_corners=False)
                conf += confusion_matrix(max_normalise(cam)[0].argmax(dim=0).to(torch.uint8).numpy(), gt, k)
    assert all((conf.sum(0) > 0).sum() > 1 for conf in expected.values())       # not one class everywhere
    seen, read = [], train_module.confusion_from_counts
    monkeypatch.setattr(train_module, "confusion_from_counts", lambda *a: seen.append(read(*a)) or seen[-1])
    batches, batch = [], train_module.same_size_batches
    monkeypatch.setattr(train_module, "same_size_batches",
                        lambda *a: (batches.append(len(b)) or b for b in batch(*a)))
    model.train()
    cfg = copy_config(smoke_config, **{"runtime.num_workers": 2, "cams.batch_size": batch_size})
    scores = train_module.validate(model, smoke_dataset, cfg, torch.device("cpu"))
    assert model.training                                                       # left as it was
    assert max(batches) == batch_size and sum(batches) == len(smoke_dataset.ids(cfg.data.eval_list))
    # a batch of 8 goes through other convolution kernels than one image: on some CPUs (AVX2
    # dispatch) an arg-max near-tie flips a pixel, so batches may move a few pixels, never more
    moved = 0 if batch_size == 1 else 4
    for conf, key in zip(seen, ("cam", "prototype_cam")):
        assert conf.sum() == expected[key].sum() and np.abs(conf - expected[key]).sum() <= 2 * moved, key
    miou = {"miou_cam": mean_iou(expected["cam"]), "miou_prototype": mean_iou(expected["prototype_cam"])}
    assert scores == (miou if batch_size == 1 else pytest.approx(miou, abs=1e-3))


def test_train_verb_applies_ablation_flags_then_explicit_sets(monkeypatch, tmp_path):
    from sfc_core import train as train_module
    from sfc_core.cli import main

    seen = {}

    def fake_train(cfg, out, resume=False, stop_after=None):
        seen.update(cfg=cfg, out=out, resume=resume, stop_after=stop_after)
        return {"steps": 0, "max_steps": 0, "seconds": 0.0, "images_per_second": 0.0, "best": {}}
    monkeypatch.setattr(train_module, "train", fake_train)
    code = main(["train", "--preset", "synthetic-smoke", "--out", str(tmp_path / "r"), "--baseline",
                 "--set", "train.bank_draws=1", "--backbone-weights", "/w.pth", "--resume", "--stop-after", "3"])
    cfg = seen["cfg"]
    assert code == 0 and seen["resume"] and seen["stop_after"] == 3
    assert cfg.loss.prototype_weight == 0 and cfg.loss.scale_weight == 0
    assert cfg.train.bank_draws == 1                       # --set wins over --baseline
    assert cfg.model.backbone_weights == "/w.pth"


# -- one message, exit code 2, no traceback; the command that resumes ------------------------


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``python -m sfc_core ARGV``, with a check of the error form."""
    from sfc_core.cli import main

    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code == 2:
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    return code, err


def test_a_checkpoint_of_other_side_channels_names_the_field(trained_run, tmp_path, capsys):
    import shutil

    run = RunDir(tmp_path / "edited")
    shutil.copytree(trained_run.root, run.root, ignore=shutil.ignore_patterns("cams", "refine", "pseudo", "segment"))
    run.load_config().override({"model.side_channels": (8, 8, 16, 16)}).save(run.config_json)
    code, err = _cli(capsys, "cams", "--run", str(run.root))
    assert code == 2
    assert "model.side_channels = (128, 128, 256, 256) in the checkpoint, (8, 8, 16, 16) in this run" in err
    assert not list(run.cams.glob("*.npz"))                               # no CAM was made


def test_a_failed_start_is_started_over_by_the_same_command(smoke_config, tmp_path, capsys):
    from sfc_core.io import append_jsonl

    for resume in ([], ["--resume"]):
        run = RunDir(tmp_path / f"failed{len(resume)}")
        command = ["train", "--preset", "synthetic-smoke", "--data-root", smoke_config.data.root,
                   "--out", str(run.root), "--set", "train.max_steps=2", "--set", "runtime.num_workers=0", *resume]
        code, _ = _cli(capsys, *command, "--backbone-weights", str(tmp_path / "missing.pth"))
        assert code == 2 and run.config_json.is_file() and not run.last_checkpoint.exists()
        append_jsonl(run.metrics_jsonl, {"step": 1, "loss/total": 99.0})   # logged before it failed
        code, err = _cli(capsys, *command)                                  # weights back: same command
        assert code == 0, err
        assert engine.load_checkpoint(run.last_checkpoint)["step"] == 2
        records = [json.loads(line) for line in run.metrics_jsonl.read_text().splitlines()]
        assert [r["step"] for r in records] == [2] and records[0]["loss/total"] != 99.0
        code, err = _cli(capsys, *command)                                  # now it holds a run
        assert code == 0 if resume else (code == 2 and "already holds a training run" in err)


def test_interrupt_messages_give_the_command_that_resumes(monkeypatch, tmp_path, capsys):
    from sfc_core import segment as segment_module
    from sfc_core import train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_module, "train", interrupted)
    monkeypatch.setattr(segment_module, "segment", interrupted)
    out = tmp_path / "r"
    code, err = _cli(capsys, "train", "--preset", "synthetic-smoke", "--out", str(out), "--stop-after", "3")
    assert code == 130
    assert f"run: python -m sfc_core train --preset synthetic-smoke --out {out} --stop-after 3 --resume\n" in err
    code, err = _cli(capsys, "train", "--preset", "synthetic-smoke", "--out", str(out), "--resume")
    assert err.rstrip().endswith(f"--out {out} --resume")                     # not twice
    code, err = _cli(capsys, "segment", "--run", str(out), "--masks", "gt")
    assert code == 130 and err.rstrip().endswith(f"run: python -m sfc_core segment --run {out} --masks gt")
