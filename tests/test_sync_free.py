"""One SFC training step traced on the `meta` device: no host read of a device tensor and no
blocking copy from the host, so on a GPU the host never waits for the device inside a step.

A TorchDispatchMode sees every aten call: `_local_scalar_dense` (`.item()`, `float()`,
`bool()` of a tensor) on a non-CPU tensor is a host read, `_to_copy`/`copy_` from a CPU tensor
to the device without `non_blocking` a blocking copy. Factory calls given host data and a
device (`torch.tensor(x, device=...)`) copy without dispatching, so a TorchFunctionMode counts
those. CPU scalars (the optimiser's step counters) are host values: reading them costs nothing.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from sfc_core import engine
from sfc_core.config import Config
from sfc_core.method.bank import ImageBank
from sfc_core.model.build import build_model, build_objective
from sfc_core.train import SfcTrainer, build_optimizer, sfc_step

META = torch.device("meta")
HOST_DATA_FACTORIES = {torch.tensor, torch.as_tensor}


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


class SyncRecorder(TorchDispatchMode):
    """Host reads of device tensors and blocking host-to-device copies, by op name."""

    def __init__(self):
        super().__init__()
        self.host_reads: list[str] = []
        self.blocking_copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors((args, kwargs))
        if func is torch.ops.aten._local_scalar_dense.default and inputs[0].device.type != "cpu":
            self.host_reads.append(f"{func} of {tuple(inputs[0].shape)}")   # before meta refuses it
        out = func(*args, **kwargs)
        outputs = _tensors(out)
        from_host = inputs and inputs[-1 if func is torch.ops.aten.copy_.default else 0].device.type == "cpu"
        if func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default) and from_host \
                and any(t.device.type != "cpu" for t in outputs) and not kwargs.get("non_blocking", False) \
                and not (len(args) > 2 and args[2]):
            self.blocking_copies.append(f"{func} of {tuple(inputs[0].shape)}")
        return out


class FactoryRecorder(TorchFunctionMode):
    """torch.tensor / torch.as_tensor of host data onto a device (a copy the dispatcher hides)."""

    def __init__(self):
        super().__init__()
        self.copies: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_DATA_FACTORIES and torch.device(kwargs.get("device") or "cpu").type != "cpu":
            self.copies.append(f"{func.__name__}({args[0]!r}, device={kwargs['device']})")
        return func(*args, **kwargs)


def meta_trainer(cfg: Config, num_classes: int = 10, draws: int = 2) -> SfcTrainer:
    """SFC's trainer as train.build_trainer builds it (bank on), every tensor on the meta device."""
    model = build_model(cfg.model, num_classes).to(META)
    objective = build_objective(model, torch.ones(num_classes), cfg).to(META)
    optimizer, schedule = build_optimizer(model, cfg.train, 10)
    bank = ImageBank(num_classes, (3, cfg.data.crop_size, cfg.data.crop_size), META)
    state = engine.TrainState(model, optimizer, schedule, engine.make_grad_scaler(torch.device("cpu"), False),
                              {}, cfg.to_dict(), builds=("model.",),
                              extras={"bank": bank, "generator": torch.Generator().manual_seed(0)}, meta={})
    return SfcTrainer(state, objective, cfg, draws, META, engine.DistInfo())


def loader_batch(size: int, crop: int, num_classes: int) -> dict[str, torch.Tensor]:
    labels = torch.zeros(size, num_classes)
    labels[torch.arange(size), torch.arange(size) % num_classes] = 1
    return {"image": torch.randint(0, 256, (size, 3, crop, crop), dtype=torch.uint8),
            "box": torch.tensor([[0, crop, 0, crop], [2, crop, 0, crop - 3]] * (size // 2)), "label": labels}


def test_an_sfc_step_reads_nothing_back_and_never_blocks_on_a_copy():
    cfg = Config.from_preset("synthetic-smoke", {"model.pcm": True})      # the paper's network: PCM too
    sfc = meta_trainer(cfg)
    batch = loader_batch(4, cfg.data.crop_size, 10)
    sfc_step(sfc, batch)                            # first step: per-device constants are made once
    syncs, factories = SyncRecorder(), FactoryRecorder()
    with factories, syncs:
        output = sfc_step(sfc, batch)
    assert output["loss"].device == META            # the step ran on the device, all of it
    assert syncs.host_reads == []
    assert syncs.blocking_copies == []
    assert factories.copies == []


def test_the_recorders_see_what_they_are_for():
    """The same recorders flag a host read, a blocking copy and a factory copy (the test above
    could not pass by seeing nothing)."""
    syncs, factories = SyncRecorder(), FactoryRecorder()
    with factories, syncs:
        host = torch.ones(3)
        device = host.to(META)
        torch.tensor(2.0, device=META)
        host.to(META, non_blocking=True)
        torch.ones((), device=META).add_(1)
    assert syncs.blocking_copies == ["aten._to_copy.default of (3,)"] and device.device == META
    assert factories.copies == ["tensor(2.0, device=meta)"]
    try:
        with syncs:
            float(torch.ones((), device=META))
    except (RuntimeError, NotImplementedError):
        pass                                          # meta has no value; the read was recorded first
    assert syncs.host_reads == ["aten._local_scalar_dense.default of ()"]
