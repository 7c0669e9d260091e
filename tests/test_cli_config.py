"""--config / --set on every verb that reads a configuration, and the one weights flag."""
from __future__ import annotations

import json

import pytest
import torch

from sfc_core.cli import VERBS, build_parser, main
from sfc_core.config import Config, read_config_file
from sfc_core.errors import SfcError
from sfc_core.model.build import build_backbone

# Verbs that build or read a configuration (synth, prepare and pretrain take none).
CONFIGURED = {verb for verb, *_ in VERBS} - {"synth", "prepare", "pretrain"}


def subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "verb")
    return action.choices


def options(verb: str) -> set[str]:
    return {flag for a in subparsers()[verb]._actions for flag in a.option_strings}


@pytest.mark.parametrize("verb", sorted(CONFIGURED))
def test_every_configured_verb_takes_config_and_set(verb):
    assert {"--config", "--set"} <= options(verb)


def test_config_files_saved_dotted_or_lines(tmp_path):
    saved = tmp_path / "config.json"
    Config.from_preset("synthetic", {"train.lr": 0.5}).save(saved)
    preset, flat = read_config_file(saved)
    assert preset == "synthetic" and flat["train.lr"] == 0.5 and flat["data.crop_size"] == 96
    (tmp_path / "dotted.json").write_text(json.dumps({"cams.fusion_lambda": 0.7}))
    assert read_config_file(tmp_path / "dotted.json") == (None, {"cams.fusion_lambda": 0.7})
    (tmp_path / "lines.txt").write_text("# step 3\nsegment.iterations=20  # short\n\nruntime.device=cpu\n")
    assert read_config_file(tmp_path / "lines.txt") == (None, {"segment.iterations": "20", "runtime.device": "cpu"})
    (tmp_path / "bad.txt").write_text("segment.iterations 20\n")
    with pytest.raises(SfcError) as info:
        read_config_file(tmp_path / "bad.txt")
    assert str(info.value.path) == str(tmp_path / "bad.txt")


def test_a_run_verb_applies_config_then_set_with_trains_validation(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    Config.from_preset("voc", {"data.root": str(tmp_path / "nowhere")}).save(run / "config.json")
    (run / "class_names.json").write_text('["a", "b"]')
    (tmp_path / "more.txt").write_text(f"data.root={tmp_path / 'elsewhere'}\n")
    assert main(["eval-cams", "--run", str(run), "--config", str(tmp_path / "more.txt")]) == 2
    assert str(tmp_path / "elsewhere") in capsys.readouterr().err      # the file's root was used
    assert main(["eval-cams", "--run", str(run), "--config", str(tmp_path / "more.txt"),
                 "--set", "cams.bg_threshold=2"]) == 2
    err = capsys.readouterr().err
    assert "cams.bg_threshold" in err and err.count("error:") == 1 and "Traceback" not in err
    with pytest.raises(SfcError, match="cams.bg_threshold"):       # the same check as train's
        Config.from_preset("synthetic-smoke", {"cams.bg_threshold": 2})
    assert main(["train", "--preset", "synthetic-smoke", "--out", str(tmp_path / "t"),
                 "--set", "cams.bg_threshold=2"]) == 2 and "cams.bg_threshold" in capsys.readouterr().err


def test_train_takes_a_saved_config_and_its_preset(tmp_path):
    saved = tmp_path / "config.json"
    Config.from_preset("synthetic-smoke", {"train.lr": 0.25}).save(saved)
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--config", str(saved),
                                      "--set", "train.epochs=1"])
    from sfc_core.cli import config_from_args

    cfg = config_from_args(args)
    assert cfg.preset == "synthetic-smoke" and cfg.train.lr == 0.25 and cfg.train.epochs == 1


@pytest.mark.parametrize("verb,key,backbone", [("train", "model.backbone_weights", "tiny"),
                                               ("refine", "refine.irn_backbone_weights", "resnet50")])
def test_cannot_load_weights_errors_name_a_flag_of_the_verb(tmp_path, monkeypatch, verb, key, backbone):
    """The fix names --set KEY=PATH, and the verb that builds that network has --set."""
    missing = tmp_path / "missing.pth"
    with pytest.raises(SfcError) as info:
        build_backbone(backbone, str(missing), key)
    assert f"--set {key}=PATH" in info.value.fix and "--set" in options(verb)

    def offline(**kwargs):
        raise OSError("no network")
    monkeypatch.setattr("torchvision.models.resnet50", offline)
    with pytest.raises(SfcError) as info:
        build_backbone("resnet50", "imagenet", key)
    assert f"--set {key}=/path/resnet50-0676ba61.pth" in info.value.fix
    wrong = tmp_path / "wrong.pth"
    torch.save({"x": torch.zeros(1)}, wrong)
    with pytest.raises(SfcError, match="do not match") as info:
        build_backbone("tiny", str(wrong), key)
    assert f"--set {key}=PATH" in info.value.fix


def test_step_3_weights_error_names_segments_set(monkeypatch):
    from sfc_core.segment import build_network

    def offline(**kwargs):
        raise OSError("no network")
    monkeypatch.setattr("torchvision.models.get_model_builder", lambda name: offline)
    with pytest.raises(SfcError) as info:
        build_network("lraspp_mobilenet_v3_large", 4, "imagenet")
    assert "--set segment.backbone_weights=PATH" in info.value.fix and "--set" in options("segment")
