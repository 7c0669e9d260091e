"""CAM math (sfc_core.method.cam), the backbones' freeze policy and SfcNet, against values
computed independently here (by hand or with explicit loops)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sfc_core.config import Config, ModelConfig, parse_overrides
from sfc_core.errors import SfcError
from sfc_core.method import cam as cam_math
from sfc_core.method.network import SfcNet
from sfc_core.model.build import AUTHORS_IMAGENET_FILES, build_backbone, build_model


def test_classifier_cam_by_hand():
    logit_map = torch.tensor([[[[2.0, -1.0], [1.0, 0.0]],      # class 1: max 2
                               [[-3.0, -1.0], [-2.0, -4.0]]]])  # class 2: never positive
    valid = torch.tensor([1.0, 1.0, 0.0])[None, :, None, None] * torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    cam = cam_math.classifier_cam(logit_map, valid)
    eps = 1e-5
    class1 = torch.tensor([[2 / (2 + eps), 0.0], [1 / (2 + eps), 0.0]])
    expected = torch.stack([1 - class1, class1, torch.zeros(2, 2)]) * valid[0]
    assert torch.allclose(cam[0], expected, atol=1e-7)
    assert cam.shape == (1, 3, 2, 2)
    assert cam[0, 0, 1, 1] == 0                       # padding: background 0 too


def test_pixel_correlation_on_a_2x2_grid_by_hand():
    # pixels 0,1 share a feature direction, pixels 2,3 another: the affinity is two blocks,
    # each column sums to 1, so one pass averages the CAM within a block and a second keeps it.
    features = torch.tensor([[1.0, 2.0, 0.0, 0.0],
                             [0.0, 0.0, 3.0, 0.5]]).reshape(1, 2, 2, 2)
    cam = torch.tensor([[1.0, 0.0, 0.4, 0.2],
                        [0.0, 1.0, 1.0, 0.0]]).reshape(1, 2, 2, 2)
    refined = cam_math.pixel_correlation(cam, features)
    expected = torch.tensor([[0.5, 0.5, 0.3, 0.3],
                             [0.5, 0.5, 0.5, 0.5]]).reshape(1, 2, 2, 2)
    assert torch.allclose(refined, expected, atol=1e-4)


def test_pixel_correlation_matches_explicit_loops():
    torch.manual_seed(0)
    features, cam = torch.randn(2, 5, 3, 2), torch.rand(2, 4, 3, 2)
    refined = cam_math.pixel_correlation(cam, features)
    for n in range(2):
        f = [features[n, :, y, x] for y in range(3) for x in range(2)]
        f = [v / (v.norm() + 1e-5) for v in f]
        affinity = torch.tensor([[max(0.0, float(f[i] @ f[j])) for j in range(6)] for i in range(6)])
        for j in range(6):
            affinity[:, j] /= affinity[:, j].sum() + 1e-5
        flat = cam[n].reshape(4, 6)
        expected = (flat @ affinity @ affinity).reshape(4, 3, 2)
        assert torch.allclose(refined[n], expected, atol=1e-5)


def test_seeds_prototypes_and_prototype_cam_match_loops():
    torch.manual_seed(1)
    n_img, k, d, h, w = 2, 4, 6, 3, 3
    cam, features = torch.rand(n_img, k, h, w), torch.randn(n_img, d, h, w)
    cam[0, 0] = 0.9                                      # strong background: x0.3 must matter
    valid = torch.ones(n_img, k, h, w)
    valid[1, 2] = 0                                      # class 2 absent in image 1
    valid[0, :, 0, 0] = 0                                # one padding pixel
    seeds = cam_math.seeds(cam.clone().requires_grad_(), valid, background_scale=0.3)
    assert not seeds.requires_grad
    protos = cam_math.prototypes(seeds, features)
    proto_cam = cam_math.prototype_cam(features, protos)
    for n in range(n_img):
        for y in range(h):
            for x in range(w):
                scores = [float(cam[n, c, y, x]) * (0.3 if c == 0 else 1.0) for c in range(k)]
                winner = max(range(k), key=lambda c: scores[c])
                for c in range(k):
                    assert seeds[n, c, y, x] == (valid[n, c, y, x] if c == winner else 0)
        for c in range(k):
            proto = sum(seeds[n, c, y, x] * features[n, :, y, x] for y in range(h) for x in range(w)) / (h * w)
            assert torch.allclose(protos[n, c], proto, atol=1e-6)
            for y in range(h):
                for x in range(w):
                    cosine = F.cosine_similarity(features[n, :, y, x], proto, dim=0, eps=1e-8)
                    assert math.isclose(float(proto_cam[n, c, y, x]), max(0.0, float(cosine)), abs_tol=1e-5)
    assert proto_cam[1, 2].abs().sum() == 0              # absent class: zero prototype, zero CAM


def test_hierarchical_features_are_unit_blocks_on_one_grid():
    torch.manual_seed(2)
    sides = [torch.randn(1, 3, 8, 8), torch.randn(1, 2, 4, 4)]
    features = cam_math.hierarchical_features(sides, (4, 4))
    assert features.shape == (1, 5, 4, 4)
    assert torch.allclose(features[:, 3:].norm(dim=1), torch.ones(1, 4, 4), atol=1e-4)
    # the stride-2 block: normalise, then plain bilinear (not align_corners) down to 4x4
    normalised = sides[0] / (sides[0].norm(dim=1, keepdim=True) + 1e-5)
    # bilinear 8 -> 4 without align_corners samples midway between pixels 2i and 2i+1
    expected = (normalised[..., 0::2, 0::2] + normalised[..., 1::2, 0::2]
                + normalised[..., 0::2, 1::2] + normalised[..., 1::2, 1::2]) / 4
    assert torch.allclose(features[:, :3], expected, atol=1e-6)


def test_max_normalise():
    x = torch.tensor([[[[1.0, 4.0]], [[0.0, 0.0]]]])
    out = cam_math.max_normalise(x)
    assert torch.allclose(out, torch.tensor([[[[1 / (4 + 1e-5), 4 / (4 + 1e-5)]], [[0.0, 0.0]]]]))


# -- backbones ------------------------------------------------------------------------------

def test_resnet50_output_stride_16_and_freeze_policy():
    backbone = build_backbone("resnet50", "none")
    backbone.train()
    bn = backbone.stages[3][0].bn1
    assert not bn.training                               # BN stays in eval mode in train()
    running_mean = bn.running_mean.clone()
    x1, x2, x3, x4 = backbone(torch.randn(2, 3, 64, 64))
    assert [t.shape[1:] for t in (x1, x2, x3, x4)] == [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 4, 4)]
    assert backbone.channels == (256, 512, 1024, 2048)
    assert backbone.feature_size(64, 64) == (4, 4) and backbone.feature_size(500, 375) == (32, 24)
    assert not x2.requires_grad                          # stage-2 output detached
    (x4.mean() + x1.mean()).backward()
    assert torch.equal(bn.running_mean, running_mean)    # statistics frozen
    frozen = [backbone.stages[0][0].weight, backbone.stages[0][1].weight,
              backbone.stages[1][0].conv1.weight, backbone.stages[2][0].bn1.weight]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert backbone.stages[3][0].bn1.weight.grad is not None     # stage-3 BN affine trains
    assert backbone.stages[4][0].conv2.stride == (1, 1)
    assert all(m.dilation == (1, 1) for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))


def test_sfc_net_parameter_groups_leave_frozen_stages_out():
    model = build_model(ModelConfig(backbone="resnet50", backbone_weights="none"), num_classes=3)
    groups = model.parameter_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups.values() for p in g} == trainable
    assert all(p.requires_grad for p in groups["backbone"])
    assert model.classifier.weight.shape == (3, 2048, 1, 1) and model.classifier.bias is None
    assert model.pcm_projection.weight.shape == (2048, 2051, 1, 1)
    assert [s.weight.shape[0] for s in model.sides] == [128, 128, 256, 256]


def test_tiny_backbone_trains_everything_and_its_batchnorm():
    backbone = build_backbone("tiny", "none")
    x1, x2, x3, x4 = backbone(torch.randn(2, 3, 128, 128))
    assert x4.shape[-2:] == (16, 16) and x3.shape[-2:] == (16, 16) and x1.shape[-2:] == (32, 32)
    assert [t.shape[1] for t in (x1, x2, x3, x4)] == list(backbone.channels) == [16, 32, 64, 128]
    assert backbone.feature_size(96, 96) == (12, 12)
    bn = backbone.stages[0][1]
    assert bn.training and bn.num_batches_tracked == 1   # from-scratch: BN statistics train
    x4.mean().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_backbone_weights_errors_name_the_fix(tmp_path, monkeypatch):
    wrong = tmp_path / "tiny.pth"
    torch.save(build_backbone("tiny", "none").state_dict(), wrong)
    with pytest.raises(SfcError) as error:
        build_backbone("resnet50", str(wrong))
    assert str(wrong) in str(error.value) and "do not match" in str(error.value)

    def offline(**kwargs):
        raise OSError("no network")
    monkeypatch.setattr("torchvision.models.resnet50", offline)
    with pytest.raises(SfcError, match="model.backbone_weights=/path/resnet50-0676ba61.pth"):
        build_backbone("resnet50", "imagenet")
    with pytest.raises(SfcError, match="unknown backbone"):
        build_backbone("vgg", "none")


@pytest.mark.parametrize("name,file", [("resnet50", "resnet50-0676ba61.pth"), ("resnet101", "resnet101-63fe2227.pth")])
def test_imagenet_weights_message_names_the_file_torchvision_looks_for(tmp_path, monkeypatch, name, file):
    """torchvision 0.29 loads IMAGENET1K_V1 from $TORCH_HOME/hub/checkpoints/<its url's file
    name>: the message names that file (not the authors' older name) and the --set route."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(**kwargs):
        raise OSError("no network")
    monkeypatch.setattr(f"torchvision.models.{name}", offline)
    with pytest.raises(SfcError) as error:
        build_backbone(name, "imagenet")
    assert error.value.path == tmp_path / "hub" / "checkpoints" / file
    assert f"--set model.backbone_weights=/path/{file}" in error.value.fix
    assert AUTHORS_IMAGENET_FILES[name] in error.value.fix


class ToyResNet(nn.Module):
    """torchvision's ResNet attribute and key layout (conv1, bn1, layer1..4, fc) at toy widths:
    what the ResNet entries load a weights file into, small enough to save in a test."""

    def __init__(self, weights=None):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.conv1, self.bn1 = nn.Conv2d(3, 4, 7, 2, 3, bias=False), nn.BatchNorm2d(4)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.layer1, self.layer2, self.layer3 = (nn.Sequential(BasicBlock(4, 4)) for _ in range(3))
        down = nn.Sequential(nn.Conv2d(4, 4, 1, 2, bias=False), nn.BatchNorm2d(4))
        self.layer4 = nn.Sequential(BasicBlock(4, 4, stride=2, downsample=down))
        self.fc = nn.Linear(4, 10)


@pytest.mark.parametrize("file", ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"])
def test_torchvisions_and_the_authors_imagenet_files_load_through_set(tmp_path, monkeypatch, file):
    monkeypatch.setattr("torchvision.models.resnet50", ToyResNet)
    torch.manual_seed(0)
    state = ToyResNet().state_dict()
    torch.save(state, tmp_path / file)
    cfg = Config.from_preset("voc", parse_overrides([f"model.backbone_weights={tmp_path / file}"]))
    backbone = build_backbone(cfg.model.backbone, cfg.model.backbone_weights)
    assert torch.equal(backbone.stages[0][0].weight, state["conv1.weight"])
    assert torch.equal(backbone.stages[4][0].conv1.weight, state["layer4.0.conv1.weight"])


# -- SfcNet ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(3)
    return build_model(ModelConfig(backbone="tiny", backbone_weights="none"), num_classes=3).eval()


def test_infer_of_a_swapped_flip_pair_is_the_mirror_image(tiny_model):
    torch.manual_seed(4)
    image = torch.randn(1, 3, 40, 56)
    label = torch.tensor([1.0, 0.0, 1.0])
    cam, proto = tiny_model.infer(torch.cat([image, image.flip(-1)]), label)
    cam_swapped, proto_swapped = tiny_model.infer(torch.cat([image.flip(-1), image]), label)
    assert cam.shape == proto.shape == (4, 5, 7)
    assert torch.allclose(cam_swapped, cam.flip(-1), atol=1e-5)
    assert torch.allclose(proto_swapped, proto.flip(-1), atol=1e-5)
    assert proto[2].abs().sum() == 0                      # seeds are label-masked: absent class 0
    assert cam[2].abs().sum() > 0                         # classifier CAM is not (reference)
    cam_masked, _ = tiny_model.infer(torch.cat([image, image.flip(-1)]), label, mask_by_label=True)
    assert cam_masked[2].abs().sum() == 0


def test_infer_without_flip_equals_forward_with_the_label_mask(tiny_model):
    torch.manual_seed(5)
    image, label = torch.randn(1, 3, 48, 48), torch.tensor([0.0, 1.0, 1.0])
    cam, proto = tiny_model.infer(image, label, mask_by_label=True)
    with torch.no_grad():
        out = tiny_model(image, torch.cat([torch.ones(1), label])[None, :, None, None])
    assert torch.allclose(cam, out["cam"][0]) and torch.allclose(proto, out["prototype_cam"][0])
    assert out["score"].shape == (1, 3)


def test_without_pcm_the_cam_is_the_plain_classifier_cam(tiny_model):
    plain = build_model(ModelConfig(backbone="tiny", backbone_weights="none", pcm=False), num_classes=3).eval()
    plain.load_state_dict(tiny_model.state_dict())
    image, mask = torch.randn(1, 3, 32, 32), torch.tensor([1.0, 1.0, 0.0, 1.0])[None, :, None, None]
    with torch.no_grad():
        expected = cam_math.classifier_cam(plain.classifier(plain.backbone(image)[3]), mask)
        assert torch.equal(plain(image, mask)["cam"], expected)
        assert not torch.allclose(tiny_model(image, mask)["cam"], expected)


@pytest.mark.parametrize("pcm, seed_rule, background_scale",
                         [(True, "argmax", 0.3), (False, "argmax", 3.0), (True, "sipe", 0.5)])
def test_the_forwards_intermediate_maps_are_the_steps_to_its_outputs(pcm, seed_rule, background_scale):
    torch.manual_seed(0)
    model = SfcNet(build_backbone("tiny", "none"), 3, side_channels=(8, 8, 16, 16),
                   seed_background_scale=background_scale, pcm=pcm, seed_rule=seed_rule).eval()
    images, label = torch.randn(1, 3, 40, 56), torch.tensor([1.0, 0.0, 1.0])
    valid = torch.cat([torch.ones(1), label])[None, :, None, None]
    with torch.no_grad():
        out, maps = model(images, valid), model(images, valid, intermediates=True)
        assert out.keys() == {"score", "cam", "prototype_cam"}
        for key in out:
            torch.testing.assert_close(maps[key], out[key], rtol=0, atol=0)
        assert [x.shape[1] for x in maps["stages"]] == list(model.backbone.channels)
        assert torch.equal(maps["classifier_cam"], cam_math.classifier_cam(model.classifier(maps["stages"][3]), valid))
        assert (maps["classifier_cam"] is maps["cam"]) == (not pcm)
        scores = maps["cam"] if seed_rule == "argmax" else cam_math.correlation_iou(maps["cam"], maps["features"])
        assert torch.equal(maps["seed_scores"], scores)
        assert torch.equal(maps["seeds"], cam_math.seeds(scores, valid, background_scale))
        assert torch.equal(maps["prototypes"], cam_math.prototypes(maps["seeds"], maps["features"]))
    h, w = model.feature_size(40, 56)
    assert maps["seeds"].shape == (1, 4, h, w) and maps["features"].shape == (1, 48, h, w)
    assert maps["seeds"].sum(dim=1).max() <= 1 and maps["seeds"][0, 2].sum() == 0   # absent class: no seed
    assert maps["prototypes"].shape == (1, 4, 48)
