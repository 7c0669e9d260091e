"""The SFC authors' checkpoint layout, written from a kit network (for import-checkpoint tests)."""
from __future__ import annotations

from pathlib import Path

import torch

from sfc_core.import_checkpoint import FORMATS

# The key names, shapes and dtypes of the authors' released VOC checkpoint (966 tensors).
REFERENCE_KEYS = Path(__file__).parent / "data" / "reference_sfc_state_dict_keys.json"
NEW = {"classifier": "classifier", "pcm_projection": "f9", "sides.0": "side1", "sides.1": "side2",
       "sides.2": "side3", "sides.3": "side4"}


def reference_aliases(kit: str, fmt: str = "sfc-reference") -> list[str]:
    """Every name the reference trainer gives the kit's tensor ``kit``."""
    if kit.startswith("backbone.stages."):
        stage, rest = kit.split(".", 3)[2:]
        if stage == "0":
            index, tail = rest.split(".", 1)
            return [f"resnet50.{['conv1', 'bn1'][int(index)]}.{tail}", f"stage0.{rest}", f"backbone.0.{rest}"]
        return [f"resnet50.layer{stage}.{rest}", f"stage{stage}.0.{rest}", f"backbone.{stage}.0.{rest}"]
    module, tail = kit.rsplit(".", 1)
    name = NEW[module]
    return [f"{name}.{tail}", f"newly_added.{FORMATS[fmt].index(name)}.{tail}"]


def reference_state(model: torch.nn.Module, fmt: str = "sfc-reference") -> dict[str, torch.Tensor]:
    """The model's tensors under the reference's names (aliases share one tensor, as saved)."""
    return {alias: tensor for kit, tensor in model.state_dict().items()
            if fmt != "sipe" or not kit.startswith("pcm_projection")
            for alias in reference_aliases(kit, fmt)}
