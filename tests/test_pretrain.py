"""The synthetic pretraining set and the pretrain stage, on tiny sizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sfc_core.config import Config
from sfc_core.data.pretrain_set import (
    MIN_COLOUR_DISTANCE,
    PretrainClass,
    PretrainSpec,
    benchmark_styles,
    check_disjoint,
    class_definitions,
    make_images,
)
from sfc_core.errors import SfcError
from sfc_core.model.build import build_backbone
from sfc_core.model.pretrained import (
    Classifier,
    Recipe,
    accuracy,
    pretrain,
    resolve_backbone_weights,
    train_classifier,
)

TINY = PretrainSpec(image_size=32, num_pairs=3, colours_per_pair=2, train_per_class=12, val_per_class=4)
QUICK = Recipe(epochs=2, batch_size=16)


def test_set_is_deterministic_and_seeded():
    images, labels = make_images(TINY, "train")
    again, labels_again = make_images(TINY, "train")
    assert images.shape == (6 * 12, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert np.bincount(labels).tolist() == [12] * 6
    other, _ = make_images(PretrainSpec(**{**TINY.__dict__, "seed": 1001}), "train")
    assert not np.array_equal(images, other)
    val, _ = make_images(TINY, "val")
    assert not any(np.array_equal(val[0], image) for image in images)


def test_classes_are_distinct_and_disjoint_from_the_benchmark():
    classes = class_definitions(PretrainSpec())
    assert len(classes) == 80
    triples = {(c.style.shape, c.style.texture, c.style.colour) for c in classes}
    assert len(triples) == 80
    bench = benchmark_styles()
    bench_pairs = {(b.shape, b.texture) for b in bench}
    assert len(bench_pairs) == 20      # 3 shared + 7 control large parts + 10 own parts
    for c in classes:
        assert (c.style.shape, c.style.texture) not in bench_pairs
        assert min(math.dist(c.style.colour, b.colour) for b in bench) >= MIN_COLOUR_DISTANCE
    check_disjoint(classes)
    copied = PretrainClass("copy", bench[0])
    with pytest.raises(SfcError, match="overlaps the benchmark part"):
        check_disjoint([*classes, copied])


def test_bad_sizes_are_sfc_errors():
    with pytest.raises(SfcError, match="free"):
        class_definitions(PretrainSpec(num_pairs=500))
    with pytest.raises(SfcError, match="--epochs 1 or more"):
        train_classifier(Classifier(build_backbone("tiny", "none"), 2), np.zeros((4, 32, 32, 3), np.uint8),
                         np.zeros(4, np.int64), Recipe(epochs=0), progress=False)


def test_a_few_steps_beat_chance():
    torch.manual_seed(0)
    images, labels = make_images(TINY, "train")
    model = Classifier(build_backbone("tiny", "none"), TINY.num_classes)
    before = accuracy(model, images, labels)
    train_classifier(model, images, labels, Recipe(epochs=4, batch_size=12), progress=False)
    after = accuracy(model, images, labels)
    assert after >= 2 / TINY.num_classes and after > before


def test_pretrain_caches_by_parameters_and_the_weights_load(tmp_path):
    path = pretrain(tmp_path, TINY, QUICK, progress=False)
    stamp = path.stat().st_mtime_ns
    assert pretrain(tmp_path, TINY, QUICK, progress=False) == path and path.stat().st_mtime_ns == stamp
    other = pretrain(tmp_path, TINY, Recipe(epochs=1, batch_size=16), progress=False)
    assert other != path and other.is_file()
    assert not list(tmp_path.glob(".*.tmp"))

    backbone = build_backbone("tiny", str(path))
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in backbone.state_dict().items())
    # the paper's freeze policy: stem, layer1, layer2 without gradient; BN statistics frozen
    assert backbone.frozen_stages == 2 and backbone.frozen_bn
    assert not any(p.requires_grad for stage in backbone.stages[:3] for p in stage.parameters())
    assert all(p.requires_grad for stage in backbone.stages[3:] for p in stage.parameters())
    backbone.train()
    assert not any(m.training for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    scratch = build_backbone("tiny", "none")
    assert scratch.frozen_stages == -1 and all(p.requires_grad for p in scratch.parameters())


def test_a_cache_miss_copies_the_shipped_file_and_force_trains(tmp_path, monkeypatch):
    from sfc_core.model import pretrained

    made = pretrain(tmp_path / "made", TINY, QUICK, progress=False)
    monkeypatch.setattr(pretrained, "SHIPPED", made.parent)
    copied = pretrain(tmp_path / "cache", TINY, QUICK, progress=False)
    assert copied.name == made.name and copied.read_bytes() == made.read_bytes()
    assert pretrained._is_complete(copied, pretrained.parameters(TINY, QUICK))
    other = pretrain(tmp_path / "cache", TINY, Recipe(epochs=1, batch_size=16), progress=False)
    assert other.name != made.name            # other parameters: not the shipped file, trained
    assert pretrain(tmp_path / "cache", TINY, QUICK, force=True, progress=False).read_bytes() != b""


def test_the_shipped_file_is_the_default_recipes_and_loads():
    from sfc_core.model import pretrained

    path = pretrained.SHIPPED / pretrained.weights_path(".", pretrained.DEFAULT_SPEC, pretrained.DEFAULT_RECIPE).name
    assert pretrained._is_complete(path, pretrained.parameters(pretrained.DEFAULT_SPEC, pretrained.DEFAULT_RECIPE))
    build_backbone("tiny", str(path))       # the keys and shapes of today's backbone


def test_named_weights_resolve_to_the_pretrained_file(tmp_path):
    cfg = Config.from_preset("synthetic-paper", {"data.root": str(tmp_path)})
    with pytest.raises(SfcError, match="holds no pretrained tiny backbone") as caught:
        resolve_backbone_weights(cfg, TINY, QUICK)        # train never pretrains on the side
    assert caught.value.fix.endswith(f"python -m sfc_core pretrain --out {tmp_path / 'pretrain'} --backbone tiny")
    assert not (tmp_path / "pretrain").exists()
    pretrain(tmp_path / "pretrain", TINY, QUICK, progress=False)
    resolved = resolve_backbone_weights(cfg, TINY, QUICK)
    assert resolved.model.backbone_weights == resolved.refine.irn_backbone_weights
    assert resolved.model.backbone_weights.startswith(str(tmp_path / "pretrain"))
    assert cfg.model.backbone_weights == "pretrain"       # the input is not changed
    with pytest.raises(SfcError, match="python -m sfc_core pretrain"):
        build_backbone("tiny", "pretrain")


def test_paper_preset_keeps_the_voc_recipe_but_the_two_moved_constants():
    paper, voc = Config.from_preset("synthetic-paper"), Config.from_preset("voc")
    # the three moved constants (measured, see config.py)
    assert (paper.model.pcm, paper.model.seed_background_scale) == (False, 4.0)
    assert (paper.train.optimizer, paper.train.schedule, paper.train.lr) == ("adamw", "onecycle", 2e-3)
    assert paper.model.backbone_weights == "pretrain"
    assert paper.refine.method == "crf"      # measured: IRN's masks fell below their CAMs here
    assert (paper.train.epochs, voc.train.epochs) == (4, 6)   # the time budget, measured over 3 seeds
    for key in ("model.side_channels", "loss.prototype_weight",
                "loss.scale_weight", "loss.class_weights", "train.weight_decay", "train.batch_size",
                "train.bank_draws", "cams.scales", "cams.fusion_lambda",
                "cams.background", "refine.walk_bg_constant"):
        section, name = key.split(".")
        assert getattr(getattr(paper, section), name) == getattr(getattr(voc, section), name), key


def test_notebook_00_pictures_of_the_set_and_of_the_features():
    from sfc_core.analysis.pretraining import class_examples, feature_pictures
    from sfc_core.data.pretrain_set import class_definitions

    images, names = class_examples(TINY, count=4)
    classes = class_definitions(TINY)
    assert len(images) == len(set(names)) == 4 and names[0] == classes[0].name and names[-1] == classes[-1].name
    full, labels = make_images(TINY, "train")
    assert np.array_equal(images[0], full[0])       # the same image as the set's own
    pictures = feature_pictures(build_backbone("tiny", "none"), [full[0], full[1]])
    assert [p.shape for p in pictures] == [(TINY.image_size // 8, TINY.image_size // 8, 3)] * 2   # output stride 8
    assert all(p.min() >= 0 and p.max() <= 1 for p in pictures)
