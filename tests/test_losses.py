"""The three losses against explicit loops over every element (docs/reference.md 3.3), and the
objective that weighs them."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sfc_core.config import Config
from sfc_core.data.transforms import valid_mask_from_boxes
from sfc_core.method.losses import HALF_SCALE, SfcObjective, classification_loss
from sfc_core.method.losses import prototype_consistency as prototype_term
from sfc_core.method.losses import scale_consistency as scale_term
from sfc_core.model.build import build_model, build_objective


def prototype_consistency(cam, prototype_cam, class_weights):
    return prototype_term({"cam": cam, "prototype_cam": prototype_cam}, {}, None, class_weights)


def scale_consistency(cam_full, cam_half, labels, class_weights):
    return scale_term({"cam": cam_full}, {"cam": cam_half}, labels, class_weights)


def test_classification_loss_is_the_multilabel_soft_margin():
    scores = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 0.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])

    def log_sigmoid(x):
        return -math.log(1 + math.exp(-x))
    expected = -sum(y * log_sigmoid(s) + (1 - y) * log_sigmoid(-s)
                    for s, y in zip(scores.flatten().tolist(), labels.flatten().tolist())) / 6
    assert math.isclose(float(classification_loss(scores, labels)), expected, rel_tol=1e-6)


def test_prototype_consistency_weights_foreground_channels_only():
    torch.manual_seed(0)
    n, k, h, w = 2, 4, 3, 2
    cam, proto = torch.rand(n, k, h, w), torch.rand(n, k, h, w) * 3
    weights = torch.tensor([0.5, 2.0, 1.5])
    total = 0.0
    for i in range(n):
        for c in range(k):
            peak = float(proto[i, c].max()) + 1e-5
            for y in range(h):
                for x in range(w):
                    diff = abs(float(cam[i, c, y, x]) - float(proto[i, c, y, x]) / peak)
                    total += diff * (1.0 if c == 0 else float(weights[c - 1]))
    loss = prototype_consistency(cam, proto, weights)
    assert math.isclose(float(loss), total / (n * k * h * w), rel_tol=1e-5)

    # a difference only in the background channel does not depend on the class weights
    bg_only = cam.clone()
    bg_only[:, 1:] = proto[:, 1:] / (proto[:, 1:].amax(dim=(2, 3), keepdim=True) + 1e-5)
    assert torch.allclose(prototype_consistency(bg_only, proto, weights),
                          prototype_consistency(bg_only, proto, weights * 10))


def test_prototype_consistency_gradients_reach_both_inputs():
    cam = torch.rand(1, 3, 2, 2, requires_grad=True)
    proto = torch.rand(1, 3, 2, 2, requires_grad=True)
    prototype_consistency(cam, proto, torch.ones(2)).backward()
    assert cam.grad.abs().sum() > 0 and proto.grad.abs().sum() > 0


def test_scale_consistency_by_hand():
    torch.manual_seed(1)
    n, c = 2, 3
    cam_full, cam_half = torch.rand(n, c + 1, 4, 4), torch.rand(n, c + 1, 2, 2)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    weights = torch.tensor([2.0, 0.5, 3.0])
    # bilinear 4 -> 2 with align_corners=True samples exactly the corner pixels 0 and 3
    total = 0.0
    for i in range(n):
        for k in range(c):
            for y in range(2):
                for x in range(2):
                    down = float(cam_full[i, k + 1, 3 * y, 3 * x])
                    y_ik = float(labels[i, k])
                    total += abs(down * y_ik - float(cam_half[i, k + 1, y, x]) * y_ik) * float(weights[k])
    loss = scale_consistency(cam_full, cam_half, labels, weights)
    assert math.isclose(float(loss), total / (n * c * 2 * 2), rel_tol=1e-5)

    # absent classes and the background channel do not count
    changed_full, changed_half = cam_full.clone(), cam_half.clone()
    changed_full[:, 0] += 5
    changed_half[0, 2] -= 7                # image 0 lacks class index 1 (channel 2)
    changed_half[1, 1] += 3                # image 1 lacks class index 0 (channel 1)
    assert torch.allclose(scale_consistency(changed_full, changed_half, labels, weights), loss)


def test_the_objective_is_classification_at_two_scales_plus_the_weighted_terms():
    cfg = Config.from_preset("synthetic-smoke")
    torch.manual_seed(0)
    model, class_weights = build_model(cfg.model, 3), torch.tensor([0.5, 1.0, 2.0])
    images, labels = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    boxes = torch.tensor([[0, 64, 0, 64], [0, 48, 8, 64]])
    losses, out = build_objective(model, class_weights, cfg)(images, boxes, labels)
    assert list(losses) == ["cls", "prototype", "scale", "total"]
    assert torch.equal(losses["total"], losses["cls"] + 1.6 * losses["prototype"] + 0.8 * losses["scale"])
    half_images = F.interpolate(images, scale_factor=HALF_SCALE, mode="bilinear", align_corners=True)
    full = model(images, valid_mask_from_boxes(boxes, labels, 64, (8, 8)))
    half = model(half_images, valid_mask_from_boxes(boxes, labels, 64, (4, 4)))
    cls = (classification_loss(full["score"], labels) + classification_loss(half["score"], labels)) / 2
    assert torch.equal(losses["cls"], cls) and torch.equal(out["prototype_cam"], full["prototype_cam"])
    assert torch.equal(losses["scale"], scale_consistency(full["cam"], half["cam"], labels, class_weights))

    cfg.override({"loss.prototype_weight": 0.0})       # a zero weight: the term is not computed
    losses, out = build_objective(model, class_weights, cfg)(images, boxes, labels)
    assert list(losses) == ["cls", "scale", "total"] and "prototype_cam" not in out
    with pytest.raises(ValueError, match="_weight in LossConfig"):
        SfcObjective(model, class_weights, {"prototype": 1.0}, valid_mask_from_boxes)
