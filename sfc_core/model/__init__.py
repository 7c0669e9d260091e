"""The SFC network: backbone registry, CAM math, and the model that ties them together."""
from sfc_core.model.backbone import BACKBONES, Backbone, build_backbone
from sfc_core.model.sfc_net import SfcNet, build_model, load_model

__all__ = ["BACKBONES", "Backbone", "SfcNet", "build_backbone", "build_model", "load_model"]
