import pytest

from sfc_core.config import ABLATIONS, PRESETS, Config, parse_overrides
from sfc_core.errors import SfcError


def test_voc_preset_carries_the_papers_constants():
    cfg = Config.from_preset("voc")
    assert cfg.train.batch_size == 16 and cfg.train.bank_draws == 4
    assert cfg.train.lr == 0.1 and cfg.train.new_layer_lr_mult == 10.0
    assert cfg.loss.prototype_weight == 1.6 and cfg.loss.scale_weight == 0.8
    assert cfg.cams.scales == (1.0, 0.5, 1.5, 2.0)
    assert cfg.model.seed_background_scale == 0.3


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = Config.from_preset(name)
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_overrides_are_typed_from_strings():
    cfg = Config.from_preset("voc", parse_overrides(["train.lr=0.02", "cams.scales=1,0.5",
                                                      "train.amp=false", "train.epochs=3"]))
    assert cfg.train.lr == 0.02 and cfg.cams.scales == (1.0, 0.5)
    assert cfg.train.amp is False and cfg.train.epochs == 3


@pytest.mark.parametrize("bad", [{"train.nope": 1}, {"nosection.lr": 1}, {"train.epochs": "x"}])
def test_bad_overrides_name_the_key(bad):
    with pytest.raises(SfcError, match="train.nope|nosection|train.epochs"):
        Config.from_preset("voc", bad)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(SfcError, match="synthetic-smoke"):
        Config.from_preset("vocc")


def test_baseline_switches_off_every_sfc_component():
    cfg = Config.from_preset("synthetic", ABLATIONS["baseline"])
    assert cfg.loss.prototype_weight == 0 and cfg.loss.scale_weight == 0 and cfg.train.bank_draws == 0
