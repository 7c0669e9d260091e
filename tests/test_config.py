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
                                                      "runtime.amp=false", "train.epochs=3"]))
    assert cfg.train.lr == 0.02 and cfg.cams.scales == (1.0, 0.5)
    assert cfg.runtime.amp is False and cfg.train.epochs == 3


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


def test_smoke_preset_is_the_synthetic_one_with_its_differences():
    from sfc_core.config import PRESET_BASES, preset_overrides

    synthetic, smoke = Config.from_preset("synthetic"), Config.from_preset("synthetic-smoke")
    assert PRESET_BASES["synthetic-smoke"] == "synthetic"
    assert not PRESETS["synthetic-smoke"].keys() & {k for k, v in PRESETS["synthetic"].items()
                                                    if PRESETS["synthetic-smoke"].get(k) == v}, "repeated"
    assert smoke.cams.threshold_sweep == synthetic.cams.threshold_sweep       # inherited
    assert smoke.model.backbone == "tiny" and smoke.refine.method == "crf"
    assert smoke.data.synthetic_size == "smoke" and synthetic.data.synthetic_size == "default"
    assert preset_overrides("synthetic-smoke")["segment.lr"] == 0.02          # its own value wins


def test_a_config_json_with_a_key_the_kit_does_not_have_names_the_file_and_the_key(tmp_path):
    """No migration: the kit has no released version, so a key it does not know (here one of an
    older layout, train.device) is an error naming the file, not a value moved elsewhere."""
    import json

    saved = Config.from_preset("synthetic-smoke").to_dict()
    saved["train"]["device"] = "cpu"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(SfcError, match="unknown configuration key 'train.device'") as info:
        Config.load(tmp_path / "config.json")
    assert info.value.path == tmp_path / "config.json" and "fields of 'train'" in info.value.fix


# -- allowed values ----------------------------------------------------------------------------

def _fields(section_type) -> list[tuple[str, type]]:
    import dataclasses
    import typing

    return list(typing.get_type_hints(section_type).items()) if dataclasses.is_dataclass(section_type) else []


def test_every_count_size_rate_and_choice_has_a_limit():
    """A field added without a limit (or a limit left behind by a renamed field) fails here."""
    from sfc_core.config import DEVICE_KEYS, FREE_FORM, LIMITS

    keys = {f"{section}.{name}" for section, section_type in _fields(Config)
            for name, hint in _fields(section_type) if hint is not bool}
    assert not keys - LIMITS.keys() - FREE_FORM - DEVICE_KEYS, "fields without a limit"
    assert not (LIMITS.keys() | FREE_FORM | DEVICE_KEYS) - keys, "limits of fields that do not exist"


def test_choice_sets_are_the_registries():
    import torchvision

    from sfc_core.config import LIMITS
    from sfc_core.data import DATASETS
    from sfc_core.data.synthetic import SIZES
    from sfc_core.method.backbones import BACKBONES
    from sfc_core.model.deeplab_v2 import NAME as DEEPLAB_V2

    assert set(LIMITS["data.dataset"].choices) == set(DATASETS)
    assert set(LIMITS["data.synthetic_size"].choices) == set(SIZES)
    assert set(LIMITS["model.backbone"].choices) == set(BACKBONES) == set(LIMITS["refine.irn_backbone"].choices)
    segmentation = torchvision.models.list_models(module=torchvision.models.segmentation)
    assert set(LIMITS["segment.network"].choices) == {*segmentation, DEEPLAB_V2}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("ablation", [None, *sorted(ABLATIONS)])
def test_every_preset_and_ablation_is_within_the_limits(name, ablation):
    Config.from_preset(name, ABLATIONS.get(ablation))     # raises on a value out of range


@pytest.mark.parametrize("key, value, allowed", [
    ("train.batch_size", "0", "a value >= 1"),
    ("data.crop_size", "0", "a value >= 32"),
    ("train.epochs", "0", "a value >= 1"),
    ("train.momentum", "1", "a value in [0, 1)"),
    ("cams.scales", "1,-0.5", "every value > 0"),
    ("data.resize_long", "80,48", "low <= high"),
    ("train.optimizer", "adam", "one of sgd, adamw"),
    ("refine.crf_label_confidence", "1", "a value in (0, 1)"),
    ("runtime.device", "gpu0", "auto, cpu, cuda or cuda:N"),
])
def test_a_value_out_of_range_names_the_key_the_value_and_the_range(key, value, allowed):
    with pytest.raises(SfcError) as info:
        Config.from_preset("synthetic-smoke", {key: value})
    message = str(info.value)
    assert key in info.value.problem and value.split(",")[-1] in info.value.problem
    assert allowed in message and key in info.value.fix


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1"])
def test_device_strings_the_kit_accepts(device):
    assert Config.from_preset("voc", {"runtime.device": device}).runtime.device == device


def test_a_config_json_with_a_bad_value_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    cfg = Config.from_preset("synthetic-smoke").to_dict()
    cfg["train"]["batch_size"] = 0
    path.write_text(__import__("json").dumps(cfg))
    with pytest.raises(SfcError, match="train.batch_size=0") as info:
        Config.load(path)
    assert info.value.path == path


def _float_fields() -> dict[str, int]:
    """Every configuration key whose value is a float or a tuple of floats: how many values it
    takes (1: one, or a tuple of any length)."""
    import typing

    fields = {}
    for section, section_type in _fields(Config):
        for name, hint in _fields(section_type):
            items = typing.get_args(hint) if typing.get_origin(hint) is tuple else (hint,)
            if float in items:
                fields[f"{section}.{name}"] = 1 if Ellipsis in items else len(items)
    return fields


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_field_refuses_a_value_that_is_not_finite(value):
    """`train.lr=inf` passes ">= 0" and then diverges: refused where it is parsed, naming the key."""
    fields = _float_fields()
    assert {"train.lr", "cams.scales", "refine.irn_scale_range"} <= fields.keys() and len(fields) > 30
    for key, count in fields.items():
        text = ",".join([value] * count)
        with pytest.raises(SfcError) as info:
            Config.from_preset("voc", {key: text})
        assert info.value.problem == f"{key}={text} is not a finite number" and key in info.value.fix
