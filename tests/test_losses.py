"""The three losses against explicit loops over every element (docs/reference.md 3.3)."""
from __future__ import annotations

import math

import torch

from sfc_core.losses import classification_loss, prototype_consistency, scale_consistency


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
