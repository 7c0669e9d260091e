"""`import-checkpoint`: the SFC authors' aliased state-dict layout (and SIPE's) into a kit run."""
from __future__ import annotations

import json
from collections import defaultdict

import torch

from sfc_core.cli import main
from sfc_core.config import Config, ModelConfig
from sfc_core.data.dataset import VOC_CLASSES
from sfc_core.import_checkpoint import FORMATS, import_checkpoint, kit_key
from sfc_core.model.build import build_model
from tests.fixtures import trained_model
from tests.reference_layout import REFERENCE_KEYS, reference_aliases, reference_state


def tiny_config() -> Config:
    return Config.from_preset("voc", {"model.backbone": "tiny", "model.backbone_weights": "none"})


def test_the_reference_key_list_maps_onto_the_kit_network_with_its_shapes():
    with torch.device("meta"):        # ResNet-50 shapes without allocating 100 MB
        kit = build_model(ModelConfig(backbone_weights="none"), 20).state_dict()
    groups = defaultdict(list)
    for key, shape, _ in json.loads(REFERENCE_KEYS.read_text()):
        target = kit_key(key, FORMATS["sfc-reference"])
        assert target in kit, key
        assert list(kit[target].shape) == shape, key
        groups[target].append(key)
    assert groups.keys() == kit.keys()
    assert {len(v) for k, v in groups.items() if k.startswith("backbone.")} == {3}
    assert {len(v) for k, v in groups.items() if not k.startswith("backbone.")} == {2}
    assert sorted(k for v in groups.values() for k in v) == sorted(reference_aliases_of_all(kit))


def reference_aliases_of_all(kit: dict) -> list[str]:
    return [alias for key in kit for alias in reference_aliases(key)]


def test_import_round_trips_a_reference_layout_state_dict_exactly(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg.model, 20)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    torch.save({"net": reference_state(model)}, tmp_path / "res50_SFC.pth")
    absent = import_checkpoint(tmp_path / "res50_SFC.pth", "sfc-reference", tmp_path / "run", cfg, list(VOC_CLASSES))
    assert absent == []
    loaded = trained_model(tmp_path / "run").state_dict()
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded[key], tensor), key
    assert json.loads((tmp_path / "run" / "class_names.json").read_text()) == list(VOC_CLASSES)


def test_sipe_checkpoint_loads_what_matches_and_names_what_is_absent(tmp_path, capsys):
    cfg = tiny_config()
    model = build_model(cfg.model, 20)
    torch.save({"net": reference_state(model, "sipe")}, tmp_path / "sipe.pth")
    rc = main(["import-checkpoint", "--format", "sipe", str(tmp_path / "sipe.pth"), "--out", str(tmp_path / "run"),
               "--set", "model.backbone=tiny"])
    assert rc == 0 and "absent from the checkpoint: pcm_projection.weight" in capsys.readouterr().out
    run_cfg = Config.load(tmp_path / "run" / "config.json")
    assert run_cfg.model.pcm is False and run_cfg.model.seed_background_scale == 0.5
    assert run_cfg.model.seed_rule == "sipe"
    loaded = trained_model(tmp_path / "run").state_dict()
    assert torch.equal(loaded["sides.2.weight"], model.state_dict()["sides.2.weight"])


def _refused(tmp_path, capsys, state, *needles, fmt="sfc-reference"):
    path = tmp_path / "bad.pth"
    torch.save({"net": state}, path)
    out = tmp_path / "run"
    rc = main(["import-checkpoint", "--format", fmt, str(path), "--out", str(out), "--set", "model.backbone=tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err and str(path) in err
    for needle in needles:
        assert needle in err, err
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def test_mismatches_are_refused_with_one_message_and_nothing_written(tmp_path, capsys):
    model = build_model(tiny_config().model, 20)
    state = reference_state(model)
    aliases = dict(state)
    aliases["stage3.0.0.conv1.weight"] = aliases["stage3.0.0.conv1.weight"] + 1
    _refused(tmp_path, capsys, aliases, "aliases resnet50.layer3.0.conv1.weight and stage3.0.0.conv1.weight")
    deeper = dict(state)
    deeper["resnet50.layer3.6.conv1.weight"] = torch.zeros(1)
    _refused(tmp_path, capsys, deeper, "not the configured network", "backbone.stages.3.6.conv1.weight")
    coco = build_model(tiny_config().model, 80)
    _refused(tmp_path, capsys, reference_state(coco), "classifier has 80 classes", "--preset coco")
    _refused(tmp_path, capsys, {"fc.weight": torch.zeros(2)}, "not in the sfc-reference layout", "--format")
    headless = {k: v for k, v in state.items() if not k.startswith(("classifier.", "newly_added.0."))}
    _refused(tmp_path, capsys, headless, "missing: classifier.weight")


def test_sipe_seed_scores_are_its_iou_of_feature_correlation_and_cam():
    """cam.correlation_iou against SIPE's get_seed written out with its (N, 1, P, P) broadcast."""
    from sfc_core.method.cam import correlation_iou

    gen = torch.Generator().manual_seed(0)
    cam, features = torch.rand(2, 4, 3, 5, generator=gen), torch.randn(2, 6, 3, 5, generator=gen)
    n, c, h, w = cam.shape
    f = features.view(n, -1, h * w)
    f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
    correlation = torch.relu(torch.matmul(f.transpose(2, 1), f)).unsqueeze(1)     # (n, 1, P, P)
    flat = cam.view(n, -1, h * w).unsqueeze(2)                                     # (n, c, 1, P)
    inter = (correlation * flat).sum(-1)
    union = correlation.sum(-1) + flat.sum(-1) - inter
    torch.testing.assert_close(correlation_iou(cam, features), (inter / union).view(n, c, h, w))
    from sfc_core.method.cam import seeds

    mask = torch.ones(1, c, 1, 1)
    assert not torch.equal(seeds(correlation_iou(cam, features), mask, 0.5), seeds(cam, mask, 0.5))
    model = build_model(tiny_config().model, 3).eval()
    model.seed_rule = "sipe"
    cam, prototype_cam = model.infer(torch.randn(2, 3, 64, 64, generator=gen), torch.tensor([1.0, 0.0, 1.0]))
    assert prototype_cam.shape == cam.shape and torch.isfinite(prototype_cam).all()
