"""The step's speed changes compute what the eager step computes.

- ``runtime.compile``: the SFC objective under torch.compile gives the eager losses and
  gradients (within 1e-5) on the smoke preset's network (PCM on, every loss), traced as one
  graph; the setting is checked and chooses inductor on CUDA, eager on the CPU.
- The PCM projection as two convolutions on the slices of its one weight equals the
  2051-channel convolution of the concatenation (within 1e-6); the weight keeps its key and
  shape, so checkpoints (the kit's and the reference's layout) load as before.
- ``model.build.fold_batchnorms`` (the CAM stage's network): the tiny and ResNet-50 backbones with
  every BatchNorm folded into its convolution give the unfolded CAMs within float rounding,
  with no BatchNorm left.
- DDP broadcasts no buffers when the backbone's BatchNorm is frozen: the ResNets' BatchNorm
  stays in eval mode in training and its running statistics never change.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.utils import counters

from benchmarks import measure
from sfc_core import engine
from sfc_core.config import Config, ModelConfig
from sfc_core.errors import SfcError
from sfc_core.method.coefficients import distribution_coefficients
from sfc_core.method.losses import SfcObjective
from sfc_core.model.build import build_model, build_objective, fold_batchnorms

CPU = torch.device("cpu")
NUM_CLASSES = 10


def _objective_and_batch(cfg: Config) -> tuple[SfcObjective, dict]:
    torch.manual_seed(0)
    statistics = measure.class_statistics(NUM_CLASSES, batch_size=4, bank_draws=0)
    weights = torch.as_tensor(distribution_coefficients(*statistics), dtype=torch.float32)
    objective = build_objective(build_model(cfg.model, NUM_CLASSES), weights, cfg)
    batch = measure.loader_batches(1, 4, cfg.data.crop_size, cfg.data.resize_long, statistics[0], seed=3)[0]
    return objective, batch


@pytest.mark.slow                        # 26-33 s on a loaded 2-core CPU: tracing forward and backward
def test_the_compiled_objective_gives_the_eager_losses_and_gradients():
    cfg = measure.bench_config(Config.from_preset("synthetic-smoke"))       # PCM on: the paper's network
    eager, batch = _objective_and_batch(cfg)
    inputs = (batch["image"], batch["box"], batch["label"])
    twin = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    compiled = engine.compiled(twin, "aot_eager", CPU)
    assert compiled.module is twin and compiled.compiled._orig_mod is twin   # torch.compile's wrapper

    results = []
    for objective in (eager, compiled):
        losses, _ = objective(*inputs)
        losses["total"].backward()
        results.append(({k: v.item() for k, v in losses.items()},
                        {name: p.grad for name, p in (twin if objective is compiled else eager).named_parameters()
                         if p.grad is not None}))
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = results
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]   # one graph, no break
    assert set(eager_losses) == {"cls", "prototype", "scale", "total"} and eager_losses["prototype"] > 0
    for name, value in eager_losses.items():
        assert abs(compiled_losses[name] - value) <= 1e-5, name
    assert eager_grads.keys() == compiled_grads.keys() and len(eager_grads) > 10
    assert "pcm_projection.weight" in {name.removeprefix("model.") for name in eager_grads}
    for name, grad in eager_grads.items():
        assert (compiled_grads[name] - grad).abs().max().item() <= 1e-5, name
    torch._dynamo.reset()


def test_runtime_compile_chooses_the_backend_and_refuses_unknown_ones():
    cuda = torch.device("cuda", 0)
    assert engine.compile_backend("auto", cuda) == "inductor"
    assert engine.compile_backend("auto", CPU) is None
    assert engine.compile_backend("off", cuda) is None
    assert engine.compile_backend("aot_eager", CPU) == "aot_eager"
    module = torch.nn.Linear(2, 2)
    assert engine.compiled(module, "auto", CPU) is module
    assert Config.from_preset("synthetic-smoke").runtime.compile == "auto"
    with pytest.raises(SfcError, match="runtime.compile='fast' is not allowed"):
        Config.from_preset("synthetic-smoke", {"runtime.compile": "fast"})


def test_the_split_pcm_projection_is_the_concatenated_convolution():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet50", backbone_weights="none"), 20)
    assert model.pcm_projection.weight.shape == (2048, 2051, 1, 1)      # the one weight, its key kept
    assert [k for k in model.state_dict() if k.startswith("pcm_projection")] == ["pcm_projection.weight"]
    small, x4 = torch.randn(2, 3, 16, 16), torch.randn(2, 2048, 16, 16).relu()
    with torch.no_grad():
        expected = model.pcm_projection(torch.cat([small, x4], dim=1))
        got = model._pcm_features(small, x4)
        assert (got - expected).abs().max().item() <= 1e-6
        model.pcm_projection.weight[:, :3] = 0                          # the image's slice is used
        assert (model._pcm_features(small, x4) - got).abs().max().item() > 1e-3


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_the_resnets_batchnorm_is_frozen_so_ddp_need_not_broadcast_buffers(name):
    model = build_model(ModelConfig(backbone=name, backbone_weights="none"), 3).train()
    assert model.backbone.frozen_bn
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(norms) > 50 and not any(m.training for m in norms)
    buffers = {key: value.clone() for key, value in model.state_dict().items() if "running_" in key}
    model(torch.randn(1, 3, 32, 32), torch.ones(1, 4, 1, 1))
    assert all(torch.equal(model.state_dict()[key], value) for key, value in buffers.items())


@pytest.mark.parametrize("name", ["tiny", "resnet50"])
def test_folded_batchnorms_give_the_same_cams(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=name, backbone_weights="none"), 3)
    for module in model.modules():                     # BatchNorms that do something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    images, labels = torch.randn(4, 3, 48, 48), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    with torch.no_grad():
        expected = model.infer_batch(images, labels)
        folded = fold_batchnorms(copy.deepcopy(model))
        got = folded.infer_batch(images, labels)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(got, expected):
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())
    with pytest.raises(ValueError):
        fold_batchnorms(model.train())
