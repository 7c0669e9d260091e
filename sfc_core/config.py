"""One configuration object for every stage, with named presets.

`Config` is a tree of dataclasses, one section per stage; every default is the paper's VOC value
(``docs/method.md``). A preset is a short list of dotted overrides on those defaults, each line
saying what it changes and why. Notebooks, the CLI (``--preset``, ``--config``, ``--set``) and the
tests all build it the same way:

    cfg = Config.from_preset("synthetic", {"train.epochs": 3, "data.root": "data/x"})
    cfg.to_dict(); Config.from_dict(d); cfg.save(path); Config.load(path)
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfc_core.errors import SfcError

# -- allowed values ------------------------------------------------------------------------
# Every count, size, rate and choice below carries its limit beside its default, checked
# whenever a value is set (preset, --set, config.json), so a bad value stops before a stage
# writes anything. A tuple's limit applies to each item. Fields without one: booleans (their
# type says it all) and FREE_FORM (paths and list names, checked where they are opened).


@dataclass(frozen=True)
class Limit:
    """Numbers in [low, high] (``low_open``/``high_open``: that end excluded), or one of ``choices``;
    ``ordered``: a (low, high) pair, first <= second."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    ordered: bool = False

    def allows(self, value: Any) -> bool:
        if isinstance(value, tuple):
            return bool(value) and all(self.allows(v) for v in value) \
                and (not self.ordered or list(value) == sorted(value))
        if self.choices:
            return value in self.choices
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, many: bool = False) -> str:
        """``"a value >= 1"``, ``"every value in [0, 1]"`` (many: for a tuple), ``"one of a, b"``."""
        if self.choices:
            return ("every value " if many else "") + "one of " + ", ".join(self.choices)
        if self.high == math.inf:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        return ("every value " if many else "a value ") + text + (", low <= high" if self.ordered else "")


def at_least(default: Any, low: float) -> Any:
    return limited(default, Limit(low))


def above(default: Any, low: float) -> Any:
    return limited(default, Limit(low, low_open=True))


def one_of(*choices: str, default: str | None = None) -> Any:
    """A string field whose default is ``default`` (else the first choice)."""
    return limited(choices[0] if default is None else default, Limit(choices=choices))


def limited(default: Any, limit: Limit) -> Any:
    """A dataclass field: its default and its allowed values (collected into ``LIMITS``)."""
    return field(default=default, metadata={"limit": limit})


UNIT = Limit(0.0, 1.0)                 # a fraction or a threshold on max-normalised maps
MOMENTUM = Limit(0.0, 1.0, high_open=True)
NETWORK_MIN_CROP = 32                  # the half-scale copy still has a 2x2 grid at stride 16
OPTIMIZERS = ("sgd", "adamw")
BACKBONE_NAMES = ("resnet50", "resnet101", "tiny")          # method/backbones.py BACKBONES
DEVICE_FORM = "auto, cpu, cuda or cuda:N"


@dataclass
class RuntimeConfig:
    """Where and how every stage runs (devices, precision, workers), and the trainers' seed."""

    device: str = "auto"                  # "auto" | "cpu" | "cuda" | "cuda:N" (check_device)
    amp: bool = True                      # mixed precision of the trainers on GPU (bf16 on compute
                                          # capability >= 8.0, else fp16 + scaler; engine.amp_dtype)
    channels_last: bool = True            # on GPU
    # SFC training objective under torch.compile: "auto" (inductor on a GPU, eager on a CPU) | "off" |
    # a backend (engine.compile_backend); eager, with one warning, if compiling fails
    compile: str = one_of("auto", "off", "inductor", "aot_eager")
    # DataLoader workers (and refine's CRF processes): a count, or "auto": on a GPU min(8, max(1, this
    # process's cores // processes on the node - 1)), 2 on a CPU (engine.loader_workers); the CRF's:
    # this process's torch threads (refine.crf_processes)
    num_workers: int | str = at_least("auto", 0)
    seed: int = at_least(10, 0)
    # also write last.pt once this many minutes passed since the last one (SFC, IRN, step 3; checked
    # every log_every steps); 0: the step cadence only
    checkpoint_minutes: float = at_least(0.0, 0)


@dataclass
class DataConfig:
    dataset: str = one_of("voc", "coco", "synthetic")
    root: str = ""                        # dataset root (synthetic: where it is generated/cached)
    synthetic_size: str = one_of("smoke", "default", "large", default="default")   # synthetic only (SIZES)
    synthetic_seed: int = at_least(0, 0)  # synthetic only: generator seed
    shared_parts: bool = True             # synthetic only: False = control set, no shared parts
    train_list: str = "train_aug"         # trains classifier, IRN and step 3 (VOC trainaug 10,582)
    eval_list: str = "train"              # CAM / pseudo-mask evaluation (VOC train 1,464)
    heldout_list: str = "val"             # held-out evaluation (VOC val 1,449)
    # random long-side resize range, bicubic
    resize_long: tuple[int, int] = limited((320, 640), Limit(1, ordered=True))
    crop_size: int = at_least(512, NETWORK_MIN_CROP)   # random crop, zero padded, with a valid mask
    labels_file: str = ""                 # image labels: "" = <root>/cls_labels.json (prepare), else from masks
    allow_pickled_labels: bool = False    # read a reference-style .npy label file (pickle can run code)
    # COCO: "split" (SegmentationClass/<split>/) | "flat" (one folder); data/coco.py MASK_LAYOUTS
    coco_mask_layout: str = one_of("split", "flat")


@dataclass
class ModelConfig:
    backbone: str = one_of(*BACKBONE_NAMES)
    backbone_weights: str = "imagenet"    # "imagenet" (torchvision download) | a .pth path | "none"
    side_channels: tuple[int, int, int, int] = at_least((128, 128, 256, 256), 1)  # hierarchical features
    seed_background_scale: float = above(0.3, 0)   # background channel x 0.3 before the seed arg-max
    # seeds: "argmax" of the CAM (SFC) | "sipe": arg-max of the IoU of feature correlation and CAM
    # (SIPE's inference rule)
    seed_rule: str = one_of("argmax", "sipe")
    pcm: bool = True                      # pixel-correlation refinement of the classifier CAM
                                          # (False: the plain CAM; nothing trains f9 without
                                          # the consistency losses, and an untrained f9 smears)


@dataclass
class LossConfig:
    # one <term>_weight field per loss term of method/losses.py (LOSS_TERMS); 0 switches it off
    prototype_weight: float = at_least(1.6, 0)   # prototype consistency
    scale_weight: float = at_least(0.8, 0)       # cross-scale consistency
    # "distribution" (the paper's coefficients) | "uniform"
    class_weights: str = one_of("distribution", "uniform")

    def term_weights(self) -> dict[str, float]:
        """{term: weight} of the ``<term>_weight`` fields."""
        return {f.name.removesuffix("_weight"): getattr(self, f.name)
                for f in dataclasses.fields(self) if f.name.endswith("_weight")}


@dataclass
class TrainConfig:
    batch_size: int = at_least(16, 1)     # images from the loader per step
    bank_draws: int = at_least(4, 0)      # images re-sampled from the image bank; 0 = no bank
    epochs: int = at_least(6, 1)
    max_steps: int = at_least(0, 0)       # 0: epochs * (len(train list) // batch_size)
    optimizer: str = one_of(*OPTIMIZERS)         # "sgd" (paper) | "adamw" (from-scratch presets)
    schedule: str = one_of("poly", "onecycle")  # "poly" (paper) | "onecycle"
    lr: float = at_least(0.1, 0)          # backbone learning rate (0: the weights stay as they start)
    new_layer_lr_mult: float = at_least(10.0, 0)   # classifier, PCM and side layers: lr x 10
    weight_decay: float = at_least(1e-4, 0)
    momentum: float = limited(0.0, MOMENTUM)   # reference is effectively 1e-4 (a positional-arg quirk)
    poly_power: float = at_least(0.9, 0)
    grad_clip: float = at_least(1.0, 0)   # global grad-norm clipping; 0: none
    log_every: int = at_least(10, 1)
    val_every: int = at_least(300, 0)     # training-time validation on the eval list; 0 = never
    checkpoint_every: int = at_least(300, 1)


@dataclass
class CamConfig:
    scales: tuple[float, ...] = above((1.0, 0.5, 1.5, 2.0), 0)   # multi-scale inference, each with a flip
    flip: bool = True
    mask_by_label: bool = False           # reference: classifier CAM not label-masked at inference
    batch_size: int = at_least(8, 1)      # same-size images per forward; speed only (1: one at a time)
    amp: bool = False                     # CAMs (cams stage, training-time validation) under autocast
                                          # (runtime.amp's dtype); False: float32, as the reference
    fusion_lambda: float = at_least(0.3, 0)   # fused = classifier + lambda * prototype
    background: str = one_of("reference", "threshold")   # "reference": bg + 0.4 vs 2 x fg
    bg_threshold: float = limited(0.25, UNIT)   # used when background == "threshold"
    lambda_sweep: tuple[float, ...] = at_least((0.0, 0.1, 0.3, 0.5, 0.7, 1.0), 0)
    threshold_sweep: tuple[float, ...] = limited(
        (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5), UNIT)


@dataclass
class RefineConfig:
    # the pseudo masks step 3 trains on: "irn" (VOC) | "crf" (COCO)
    method: str = one_of("irn", "crf")
    relation_lambda: float = at_least(0.7, 0)     # fusion used for IRN's relation labels (reference)
    # "reference" (CRF twice, bg x 0.5) | "thresholds" (IRN)
    relation_rule: str = one_of("reference", "thresholds")
    relation_bg_scale: float = above(0.5, 0)      # reference rule: background x 0.5 for the second map
    conf_fg_threshold: float = limited(0.30, UNIT)   # IRN's own rule
    conf_bg_threshold: float = limited(0.05, UNIT)
    crf_iterations: int = at_least(10, 1)
    crf_gaussian_sxy: float = above(3.0, 0)
    crf_gaussian_compat: float = above(3.0, 0)
    crf_bilateral_sxy: float = above(50.0, 0)
    crf_bilateral_srgb: float = above(5.0, 0)
    crf_bilateral_compat: float = above(10.0, 0)
    crf_label_confidence: float = limited(0.7, Limit(0.0, 1.0, low_open=True, high_open=True))
    irn_backbone: str = one_of(*BACKBONE_NAMES)
    irn_backbone_weights: str = "imagenet"  # "imagenet" | a .pth path | "sfc": the run's trained backbone
    irn_crop_size: int = at_least(512, NETWORK_MIN_CROP)
    irn_batch_size: int = at_least(32, 1)
    irn_epochs: int = at_least(3, 1)
    irn_lr: float = at_least(0.1, 0)      # boundary branch (the displacement branch, lr x 10, is dropped)
    irn_weight_decay: float = at_least(1e-4, 0)
    irn_momentum: float = limited(0.0, MOMENTUM)   # IRN's PolyOptimizer: plain SGD
    irn_poly_power: float = at_least(0.9, 0)
    irn_log_every: int = at_least(10, 1)
    irn_checkpoint_every: int = at_least(300, 1)
    # the reference's effective range
    irn_scale_range: tuple[float, float] = limited((0.5, 1.0), Limit(0.0, low_open=True, ordered=True))
    irn_image_scale: float = above(1.0, 0)   # images rescaled by this for IRN (small images: a finer grid)
    irn_radius: int = at_least(10, 1)     # path radius on the boundary grid (1/4 resolution)
    walk_lambda: float = at_least(0.3, 0)  # fusion used for the random walk
    walk_beta: float = above(10.0, 0)
    walk_exp_times: int = limited(8, Limit(0, 16))   # 2^8 steps
    walk_radius: int = at_least(5, 1)
    walk_power: float = above(1.3, 0)
    walk_bg_constant: float = limited(0.25, UNIT)


@dataclass
class SegmentConfig:
    # Step 3 (docs/method.md 5): the DeepLabV3 recipe of VainF/DeepLabV3Plus-Pytorch (VOC trainaug)
    # and torchvision's references/segmentation, unless a line says otherwise.
    network: str = one_of("deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "deeplabv3_resnet101",
                          "fcn_resnet50", "fcn_resnet101", "lraspp_mobilenet_v3_large", "deeplabv2_resnet101",
                          default="deeplabv3_resnet101")   # a torchvision.models.segmentation builder,
                                                           # or DeepLab-v2 (model/deeplab_v2.py; the voc preset's)
    backbone_weights: str = "imagenet"    # "imagenet" (torchvision's download) | a .pth path | "none"
    crop_size: int = at_least(512, NETWORK_MIN_CROP)   # VainF: 513; image padded with the mean, mask with 255
    # random rescale (VainF, torchvision refs)
    scale_range: tuple[float, float] = limited((0.5, 2.0), Limit(0.0, low_open=True, ordered=True))
    flip: bool = True                     # random horizontal flip, p = 0.5
    batch_size: int = at_least(16, 1)     # VainF / DeepLabV3 paper
    iterations: int = at_least(30000, 1)  # VainF / DeepLabV3 paper: 30K on VOC trainaug
    optimizer: str = one_of(*OPTIMIZERS)   # "sgd" (DeepLab) | "adamw" (from-scratch synthetic presets)
    lr: float = at_least(0.01, 0)         # VainF (DeepLabV3 paper: 0.007)
    backbone_lr_mult: float = at_least(0.1, 0)    # VainF: pretrained backbone at lr x 0.1
    momentum: float = limited(0.9, MOMENTUM)      # VainF, torchvision refs
    weight_decay: float = at_least(1e-4, 0)       # torchvision refs (VainF's code default: 4e-5)
    poly_power: float = at_least(0.9, 0)  # lr x (1 - t/T)^0.9 (DeepLab)
    # DeepLabV3 paper, + flip
    eval_scales: tuple[float, ...] = above((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), 0)
    eval_crf: bool = False                # dense CRF (refine.crf_* constants) after multi-scale
    log_every: int = at_least(20, 1)
    checkpoint_every: int = at_least(1000, 1)
    # 0: the crop's rescale factor is U(scale_range); > 0: drawn from scale_range's grid at this step
    scale_step: float = at_least(0.0, 0)
    # batch_size images per update go through the network in this many chunks (gradient accumulation)
    accumulation_steps: int = at_least(1, 1)
    # deeplabv2_resnet101 only (deeplab-pytorch main.py: ASPP biases at 20 x LR, no decay; DEEPLAB_V2_VOC)
    head_bias_lr_mult: float = at_least(2.0, 0)
    head_bias_weight_decay: float = at_least(0.0, 0)
# Checked where they are used: paths (or "imagenet" / "none" / "sfc") and list names.
FREE_FORM = {"data.root", "data.labels_file", "data.train_list", "data.eval_list", "data.heldout_list",
             "model.backbone_weights", "refine.irn_backbone_weights", "segment.backbone_weights"}
DEVICE_KEYS = {"runtime.device"}         # auto, cpu, cuda, cuda:N (check_device)
AUTO_KEYS = {"runtime.num_workers"}      # "auto" or a number within the key's limit


def check_value(key: str, value: Any) -> Any:
    """``value`` if ``LIMITS[key]`` allows it (or has none), else SfcError naming key, value, range."""
    if key in DEVICE_KEYS:
        return check_device(value, key)
    if key in AUTO_KEYS:
        if value == "auto":
            return value
        value = _coerce(value, int, key)
    limit = LIMITS.get(key)
    if limit is None:
        return value
    allowed = limit.describe(many=isinstance(value, tuple))
    items = value if isinstance(value, tuple) else (value,)
    if not all(math.isfinite(v) for v in items if isinstance(v, float)):     # inf passes ">= 0"
        raise SfcError(f"{key}={_show(value)} is not a finite number", fix=f"set {key} to {allowed} (finite)")
    if not limit.allows(value):
        raise SfcError(f"{key}={_show(value)} is not allowed: {key} must be {allowed}", fix=f"set {key} to {allowed}")
    return value


def check_device(name: str, source: str = "the device") -> str:
    """``name`` if the kit accepts it (auto, cpu, cuda, cuda:N), else SfcError naming ``source``."""
    kind, colon, index = str(name).partition(":")
    if (kind in ("auto", "cpu") and not colon) or (kind == "cuda" and (not colon or index.isdigit())):
        return name
    raise SfcError(f"{source}={name!r} is not a device", fix=f"give {source} as {DEVICE_FORM}")


def _show(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) \
        if isinstance(value, tuple) else repr(value)


@dataclass
class Config:
    preset: str = "voc"
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cams: CamConfig = field(default_factory=CamConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, Any] | None = None) -> Config:
        if name not in PRESETS:
            raise SfcError(f"unknown preset {name!r}", fix=f"use one of: {', '.join(PRESETS)}")
        cfg = cls(preset=name)
        cfg.override(preset_overrides(name))
        cfg.override(overrides or {})
        return cfg

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        cfg = cls(preset=d.get("preset", "voc"))
        cfg.override(flat_dict({key: value for key, value in d.items() if key != "preset"}))
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def override(self, overrides: dict[str, Any]) -> Config:
        """Set dotted keys (``"train.lr": 0.01``), converting strings to the field's type."""
        for key, value in overrides.items():
            section_name, _, field_name = key.partition(".")
            section = getattr(self, section_name, None)
            if not dataclasses.is_dataclass(section) or not field_name:
                raise SfcError(f"unknown configuration key {key!r}",
                               fix=f"use SECTION.FIELD with SECTION one of: {', '.join(_sections())}")
            hints = typing.get_type_hints(type(section))
            if field_name not in hints:
                names = ", ".join(f.name for f in dataclasses.fields(section))
                raise SfcError(f"unknown configuration key {key!r}",
                               fix=f"fields of {section_name!r}: {names}")
            setattr(section, field_name, check_value(key, _coerce(value, hints[field_name], key)))
        return self

    def save(self, path: str | Path) -> None:
        from sfc_core.io import atomic_write_json
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Config:
        path = Path(path)
        if not path.is_file():
            raise SfcError(f"no configuration at {path}",
                           fix="point --run at a run directory made by `python -m sfc_core train`")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ValueError as e:     # not JSON
            raise SfcError(f"configuration cannot be read ({e})", path=path,
                           fix="delete the run directory and train again") from None
        except SfcError as e:       # a key or value this version of the kit does not accept
            raise SfcError(e.problem, path=path, fix=f"{e.fix}, in {path}") from None


def flat_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A ``to_dict()`` tree as dotted keys (``{"train.lr": 0.1, ...}``), lists as tuples."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(flat_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


def _limits() -> dict[str, Limit]:
    """Every field's limit (``limited``), by dotted key."""
    sections = typing.get_type_hints(Config)
    return {f"{name}.{f.name}": f.metadata["limit"] for name in _sections()
            for f in dataclasses.fields(sections[name]) if "limit" in f.metadata}


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(Config) if f.name != "preset"]


LIMITS: dict[str, Limit] = _limits()


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (often a CLI string) to the annotated type of a config field."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            args = typing.get_args(hint)
            item_type = args[0]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce(v, item_type, key) for v in items)
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} values")
            return tuple(_coerce(v, t, key) for v, t in zip(items, args))
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError("expected true/false")
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError) as e:
        wanted = LIMITS[key].describe(many=origin is tuple) if key in LIMITS \
            else f"a {getattr(hint, '__name__', hint)} value"
        raise SfcError(f"bad value {value!r} for {key}: {e}", fix=f"set {key} to {wanted}") from None
    return value


# Presets: dotted overrides on the VOC defaults above, one short reason per line (the evidence
# for the synthetic values: docs/synthetic.md); a preset in PRESET_BASES starts from its base's.
# Step 3 of `voc`: DeepLab-v2 ResNet-101 as kazuto1011/deeplab-pytorch trains it (configs/voc12.yaml,
# main.py), from torchvision's ImageNet ResNet-101 (its COCO-pretrained Caffe init is not to be had
# offline: expect lower figures than a COCO-initialised run). The kit's lr is the head's:
# backbone = lr x backbone_lr_mult.
DEEPLAB_V2_VOC: dict[str, Any] = {
    "segment.network": "deeplabv2_resnet101",   # MODEL.NAME DeepLabV2_ResNet101_MSC, ATROUS_RATES 6/12/18/24
    "segment.crop_size": 321,             # IMAGE.SIZE.TRAIN (SIZE.TEST 513 is unused by its test: whole images)
    "segment.scale_range": (0.5, 1.5),    # DATASET.SCALES [0.5, 0.75, 1.0, 1.25, 1.5] ...
    "segment.scale_step": 0.25,           # ... one of them per crop (base.py: random.choice)
    "segment.batch_size": 10,             # SOLVER.BATCH_SIZE.TRAIN 5 x ITER_SIZE 2 images per update
    "segment.accumulation_steps": 2,      # SOLVER.ITER_SIZE: the 10 go through the network 5 at a time
    "segment.iterations": 20000,          # SOLVER.ITER_MAX
    "segment.lr": 2.5e-3,                 # 10 x SOLVER.LR 2.5e-4: the ASPP weights (main.py get_params "10x")
    "segment.backbone_lr_mult": 0.1,      # SOLVER.LR 2.5e-4: the trunk's convolutions ("1x")
    "segment.head_bias_lr_mult": 2.0,     # 20 x SOLVER.LR: the ASPP biases ("20x") ...
    "segment.head_bias_weight_decay": 0.0,   # ... without weight decay (main.py: "weight_decay": 0.0)
    "segment.momentum": 0.9,              # SOLVER.MOMENTUM
    "segment.weight_decay": 5e-4,         # SOLVER.WEIGHT_DECAY (trunk and ASPP weights)
    "segment.poly_power": 0.9,            # SOLVER.POLY_POWER (stepped every LR_DECAY = 10 iterations there)
    "segment.eval_scales": (1.0,),        # main.py test: the MSC max at the image's size (single_scale row;
                                          # multi_scale_flip adds only the flip)
}

PRESETS: dict[str, dict[str, Any]] = {
    "voc": DEEPLAB_V2_VOC,                # the defaults, with deeplab-pytorch's step 3
    "coco": {
        "data.dataset": "coco",
        "data.train_list": "train",       # COCO 2014 train (82,081) trains and is evaluated
        "data.eval_list": "train",
        "data.heldout_list": "val",
        "train.epochs": 5,                # SIPE's COCO schedule (reference has no COCO branch)
        "refine.method": "crf",           # the paper's COCO route: IRN costs too much on 82k images
        "train.val_every": 0,             # no training-time validation on COCO (cost)
    },
    "synthetic": {
        "data.dataset": "synthetic",
        "data.root": "data/synthetic",
        "data.synthetic_size": "default",
        "data.resize_long": (64, 128),    # 96 px images: the reference's 320-640 range relative to VOC's 500 px
        "data.crop_size": 96,             # OS 8 -> 12x12 CAMs
        "model.backbone": "tiny",         # width-reduced ResNet-18 layout, trained from scratch
        "model.backbone_weights": "none",
        "model.pcm": False,               # from scratch PCM collapses SFC (PCM is SEAM's; the baseline has none)
        "model.seed_background_scale": 3.0,   # seeds at fg > 0.75, these broad CAMs' best threshold
        "train.optimizer": "adamw",       # from-scratch recipe
        "train.schedule": "onecycle",
        "train.lr": 2e-3,
        "train.new_layer_lr_mult": 1.0,
        "train.weight_decay": 1e-4,
        "train.batch_size": 32,
        "train.epochs": 12,               # more epochs gave no CAM gain
        "train.val_every": 0,
        "train.checkpoint_every": 100,
        # upsampled 12x12 CAMs are wide: their best thresholds lie at 0.7-0.8, above VOC's sweep
        "cams.threshold_sweep": (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9),
        "refine.method": "crf",           # the dense CRF beats IRN on the tiny from-scratch backbone
        "refine.crf_gaussian_sxy": 1.0,   # CRF spatial constants scaled from ~500 px to 96 px
        "refine.crf_bilateral_sxy": 10.0,
        "refine.irn_backbone": "tiny",    # IRN on the run's own trained backbone (a random one is useless)
        "refine.irn_backbone_weights": "sfc",
        "refine.irn_image_scale": 2.0,    # at 1x the 1/4 boundary grid is too coarse for the walk
        "refine.irn_crop_size": 192,
        "refine.irn_scale_range": (0.75, 1.25),  # around the walk's scale (images are only 96 px)
        "refine.irn_radius": 5,           # objects are ~12 cells wide on the 1/4 grid at 2x
        "refine.irn_checkpoint_every": 100,
        "refine.walk_exp_times": 3,       # a short walk: the boundary net leaks (VOC: 2^8)
        "refine.walk_bg_constant": 0.75,  # these CAMs' background threshold (VOC: 0.25)
        "segment.network": "lraspp_mobilenet_v3_large",   # best of the small networks at equal compute
        "segment.backbone_weights": "none",
        "segment.crop_size": 64,          # 96 px images rescaled by 0.5-2.0, cut to 64 px
        "segment.backbone_lr_mult": 1.0,  # from scratch: one learning rate for all layers
        "segment.lr": 0.1,
        "segment.iterations": 500,        # 4 epochs of 2,000 images
        "segment.eval_scales": (0.75, 1.0, 1.25),
        "segment.checkpoint_every": 100,
    },
    # The paper's recipe (the `voc` values) on a backbone pretrained on the synthetic pretraining
    # set (model/pretrained.py); what scales with the 96 px images, and the optimiser, come from
    # `synthetic` (docs/synthetic.md, "The paper's recipe on a pretrained backbone").
    "synthetic-paper": {
        "model.backbone_weights": "pretrain",   # made once; frozen BN, stem, layer1, layer2 (voc)
        "model.pcm": False,               # PCM (SEAM's, not SFC's) flattens these CAMs
        "model.seed_background_scale": 4.0,   # seeds at fg > 0.8, these broad CAMs' best threshold
        "train.batch_size": 16,           # voc: 16 + 4 bank draws
        "train.epochs": 4,                # voc: 6; 4 for the default run's time budget
        # widened past voc's 1.0: the fused CAM's best is the prototype CAM itself (lambda -> infinity)
        "cams.lambda_sweep": (0.0, 0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
        # to 0.99: the baseline's prototype CAM chose the top of shorter sweeps
        "cams.threshold_sweep": (0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
                                 0.975, 0.99),
        "refine.method": "crf",           # IRN's masks scored below the CAMs they start from, the CRF's above
        "refine.irn_backbone_weights": "pretrain",  # IRN's own frozen pretrained backbone (voc: ImageNet)
        "refine.walk_exp_times": 5,       # voc's 2^8 steps on a 128-cell grid; 48 cells here
        "refine.walk_bg_constant": 0.25,  # voc
        "segment.batch_size": 8,          # `synthetic`: 16; half the CPU
    },
    "synthetic-smoke": {                  # the synthetic preset, small enough for tests
        "data.synthetic_size": "smoke",
        "data.resize_long": (48, 80),     # 64 px images
        "data.crop_size": 64,
        "train.batch_size": 8,
        "train.bank_draws": 2,
        "train.epochs": 2,
        "train.checkpoint_every": 5,
        "train.log_every": 2,
        "cams.scales": (1.0, 0.5),
        "refine.irn_crop_size": 128,
        "refine.irn_batch_size": 8,
        "refine.irn_epochs": 1,
        "refine.irn_log_every": 2,
        "refine.irn_checkpoint_every": 5,
        "segment.iterations": 4,
        "segment.batch_size": 4,
        "segment.lr": 0.02,
        "segment.checkpoint_every": 2,
        "segment.log_every": 1,
    },
}
PRESET_BASES: dict[str, str] = {"synthetic-smoke": "synthetic", "synthetic-paper": "synthetic"}


def preset_overrides(name: str) -> dict[str, Any]:
    """A preset's overrides, its base's first (``PRESET_BASES``)."""
    base = preset_overrides(PRESET_BASES[name]) if name in PRESET_BASES else {}
    return {**base, **PRESETS[name]}


# Switches that turn the full method into the baseline or an ablation (same code, a flag off).
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {"loss.prototype_weight": 0.0, "loss.scale_weight": 0.0, "train.bank_draws": 0,
                 "model.pcm": False},     # a plain CAM: no loss would train the PCM projection
    "no-bank": {"train.bank_draws": 0},
    "no-prototype-loss": {"loss.prototype_weight": 0.0},
    "no-scale-loss": {"loss.scale_weight": 0.0},
    "uniform-class-weights": {"loss.class_weights": "uniform"},
}


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["train.lr=0.01", ...]`` -> ``{"train.lr": "0.01"}`` (types applied by override)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SfcError(f"bad override {item!r}", fix="write --set SECTION.FIELD=VALUE")
        out[key.strip()] = value.strip()
    return out


def read_changes(config_file: str | Path | None, overrides: list[str] | None) -> tuple[str | None, dict[str, Any]]:
    """(the ``--config`` file's preset or None, its dotted overrides updated by the ``--set`` items)."""
    preset, changes = read_config_file(config_file) if config_file else (None, {})
    return preset, {**changes, **parse_overrides(overrides)}


def read_config_file(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """(preset or None, dotted overrides) of a ``--config`` file: a saved config.json, a JSON
    object of dotted keys, or lines ``SECTION.FIELD=VALUE`` (``#`` comments)."""
    path = Path(path)
    fix = "give a run's config.json, a JSON object of SECTION.FIELD keys, or lines SECTION.FIELD=VALUE"
    try:
        text = path.read_text()
    except OSError as e:
        raise SfcError(f"cannot read the configuration file ({e.strerror or e})", path=path, fix=fix) from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise SfcError(f"configuration file is not valid JSON ({e})", path=path, fix=fix) from None
        preset = data.pop("preset", None)
        return preset, flat_dict(data)
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    try:
        return None, parse_overrides([line for line in lines if line])
    except SfcError as e:
        raise SfcError(e.problem, path=path, fix=fix) from None

