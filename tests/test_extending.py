"""Extension point: a loss term, added as a researcher adds one (docs/extending.md): a function
registered with ``loss_term`` in sfc_core/method/losses.py and a ``<name>_weight`` field in
config.py's LossConfig. Training logs it as ``loss/<name>``; its weight 0 (the ablation) leaves
the run exactly as without the term."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sfc_core.config import Config, LossConfig, at_least
from sfc_core.method import losses
from sfc_core.train import train


@dataclasses.dataclass
class ToyLossConfig(LossConfig):       # the line a researcher adds to LossConfig in config.py
    toy_weight: float = at_least(0.0, 0)


def trained(cfg: Config, out) -> tuple[list[dict], dict]:
    """The run's metrics (but the speed) and its final weights."""
    train(cfg, out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("images_per_second")
    return records, torch.load(out / "checkpoints" / "last.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_a_new_loss_term_is_trained_logged_and_switched_off_by_its_weight(smoke_config, tmp_path, monkeypatch):
    cfg = Config.from_dict(smoke_config.to_dict()).override({"train.max_steps": 4})
    plain = trained(cfg, tmp_path / "plain")
    monkeypatch.setattr(losses, "LOSS_TERMS", dict(losses.LOSS_TERMS))   # the registry, restored after

    @losses.loss_term("toy", uses_prototype_cam=True)       # as it would stand in method/losses.py
    def toy(full, half, labels, class_weights):             # the toy term: mean of the prototype CAM
        return full["prototype_cam"].float().mean()

    cfg.loss = ToyLossConfig(**dataclasses.asdict(cfg.loss), toy_weight=0.5)
    records, _ = trained(cfg, tmp_path / "toy")
    first = records[0]
    assert first["loss/toy"] > 0 and first["loss/total"] == pytest.approx(
        first["loss/cls"] + 1.6 * first["loss/prototype"] + 0.8 * first["loss/scale"] + 0.5 * first["loss/toy"])
    cfg.loss.toy_weight = 0.0                               # the ablation
    records, weights = trained(cfg, tmp_path / "ablated")
    assert not any("loss/toy" in record for record in records) and records == plain[0]
    assert weights.keys() == plain[1].keys() and all(torch.equal(weights[k], plain[1][k]) for k in weights)


def test_a_term_without_its_weight_field_is_one_error_naming_the_field(smoke_config, monkeypatch):
    from sfc_core.errors import SfcError
    from sfc_core.model.build import build_model, build_objective

    monkeypatch.setattr(losses, "LOSS_TERMS", dict(losses.LOSS_TERMS))
    losses.loss_term("toy")(lambda full, half, labels, class_weights: full["cam"].mean())
    with pytest.raises(SfcError, match="toy") as caught:
        build_objective(build_model(smoke_config.model, 3), torch.ones(3), smoke_config)
    assert "LossConfig" in caught.value.fix


def test_ddp_keeps_a_static_graph_for_a_new_term_that_reads_the_prototype_cam(smoke_config, monkeypatch):
    """The side layers feed only the prototype CAM: DDP may plan a static graph whenever some
    term reads it, whichever term that is (here a new one, with the prototype loss off)."""
    from sfc_core import engine
    from sfc_core.model.build import build_model, build_objective
    from sfc_core.train import step_objective

    monkeypatch.setattr(losses, "LOSS_TERMS", dict(losses.LOSS_TERMS))
    losses.loss_term("toy", uses_prototype_cam=True)(lambda full, half, labels, w: full["prototype_cam"].mean())
    seen = {}
    monkeypatch.setattr(engine, "wrap_ddp", lambda objective, dist, device, **kwargs: seen.update(kwargs) or objective)
    cfg = Config.from_dict(smoke_config.to_dict()).override({"model.pcm": True, "loss.prototype_weight": 0.0})
    for toy_weight, static in ((0.5, True), (0.0, False)):
        cfg.loss = ToyLossConfig(**{**dataclasses.asdict(cfg.loss), "toy_weight": toy_weight})
        objective = build_objective(build_model(cfg.model, 3), torch.ones(3), cfg)
        step_objective(objective, cfg, engine.DistInfo(), torch.device("cpu"))
        assert seen["static_graph"] is static and seen["find_unused_parameters"] is not static
