"""IRN's class-boundary network (Ahn et al., CVPR 2019) and its training on relation labels.

``BoundaryNet``: IRN's ``resnet50_irn.py`` boundary branch on a frozen backbone (docs/reference.md
5.2); ``edge_map``: its ``EdgeDisplacement`` inference; the displacement branch (instance masks
only) is not built (quirk 26). ``train_irn`` trains the branch in ``loop.fit`` as the reference.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from sfc_core import engine, loop
from sfc_core.config import Config, RefineConfig
from sfc_core.data.dataset import SegmentationDataset
from sfc_core.data.transforms import augment, normalize, normalize_crops, rescale
from sfc_core.errors import SfcError
from sfc_core.masks import IGNORE
from sfc_core.method.backbones import Backbone
from sfc_core.model.build import build_backbone, load_model
from sfc_core.refine.random_walk import PathIndex, edge_to_affinity, hybrid_walk, shifted_crops
from sfc_core.run_dir import RunDir

ARCHITECTURE = "irn-boundary"
BRANCH_CHANNELS = 32
BRANCH_GROUPS = 4
EPS = 1e-5


class BoundaryNet(nn.Module):
    """Frozen backbone + IRN's five edge branches (stem, layer1..4: 1x1 conv, GroupNorm, upsampled
    to the stem's grid, ReLU) and a 1x1 conv of their concatenation: (N, 3, H, W) -> logits (N, h, w)
    on the stem's grid, ``self.stride`` times smaller."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone.requires_grad_(False).eval()
        with torch.no_grad():
            probe = torch.zeros(1, 3, 64, 64, device=next(backbone.parameters()).device)
            grids = [x.shape for x in backbone.stage_outputs(probe)]
        self.stride = 64 // grids[0][-1]
        self.upsampling = tuple(grids[0][-1] // shape[-1] for shape in grids)   # (1, 1, 2, 4, 4): IRN's
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(shape[1], BRANCH_CHANNELS, 1, bias=False),
                          nn.GroupNorm(BRANCH_GROUPS, BRANCH_CHANNELS))
            for shape in grids)
        self.boundary = nn.Conv2d(BRANCH_CHANNELS * len(grids), 1, 1)

    def train(self, mode: bool = True) -> BoundaryNet:
        super().train(mode)
        self.backbone.eval()             # frozen: BatchNorm statistics never move
        return self

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.branches.parameters(), *self.boundary.parameters()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone.stage_outputs(images)
        h, w = features[0].shape[-2:]
        maps = []
        for branch, factor, x in zip(self.branches, self.upsampling, features):
            x = branch(x)
            if factor > 1:               # IRN: Upsample(scale_factor) then a crop to edge2's grid
                x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)[..., :h, :w]
            maps.append(F.relu(x))
        return self.boundary(torch.cat(maps, 1))[:, 0]


def edge_layer_table(net: BoundaryNet) -> list[tuple[str, int, int, int]]:
    """(branch, input channels, input stride, upsampling) per edge branch, IRN's ``fc_edge1..5``."""
    return [(f"fc_edge{i + 1}", branch[0].in_channels, net.stride * factor, factor)
            for i, (branch, factor) in enumerate(zip(net.branches, net.upsampling))]


def edge_map(net: BoundaryNet, image: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Boundary probabilities (h, w) of a normalised image (3, H, W) as IRN's ``EdgeDisplacement``:
    image and flip padded to the training ``crop_size``, ``sigmoid`` of their mean logit."""
    height, width = image.shape[-2:]
    grid = ((height - 1) // net.stride + 1, (width - 1) // net.stride + 1)
    pad = (0, max(crop_size - width, 0), 0, max(crop_size - height, 0))
    logits = net(F.pad(torch.stack([image, image.flip(-1)]), pad)).float()[:, :grid[0], :grid[1]]
    return torch.sigmoid(logits[0] / 2 + logits[1].flip(-1) / 2)


def walk_scores(net: BoundaryNet, image: np.ndarray, scores: torch.Tensor, refine: RefineConfig,
                amp: bool) -> torch.Tensor:
    """The hybrid random walk of ``scores`` (K', H, W) on the boundary map of ``image`` uint8
    (H, W, 3), both at ``refine.irn_image_scale``, the result back at (K', H, W)."""
    size = image.shape[:2]
    scaled = normalize(rescale(image, refine.irn_image_scale))
    with engine.autocast(scores.device, amp):
        edge = edge_map(net, torch.from_numpy(scaled.transpose(2, 0, 1).copy()).to(scores.device),
                        refine.irn_crop_size)
    if scaled.shape[:2] != size:
        scores = F.interpolate(scores[None], size=scaled.shape[:2], mode="bilinear", align_corners=False)[0]
    walked = hybrid_walk(scores, edge, net.stride, radius=refine.walk_radius, beta=refine.walk_beta,
                         exp_times=refine.walk_exp_times, power=refine.walk_power,
                         bg_constant=refine.walk_bg_constant)
    if scaled.shape[:2] != size:
        walked = F.interpolate(walked[None], size=size, mode="bilinear", align_corners=False)[0]
    return walked


def affinity_targets(labels: torch.Tensor, index: PathIndex) -> tuple[torch.Tensor, ...]:
    """IRN's pair labels bg_pos, fg_pos, neg, bool (N, D, h', w'), of label maps (N, h, w)."""
    hs, ws = index.source_shape(*labels.shape[-2:])
    m = index.margin
    source = labels[:, None, :hs, m:m + ws]                     # (N, 1, h', w')
    destination = shifted_crops(labels, index, index.offsets)    # (N, D, h', w')
    valid = (source != IGNORE) & (destination != IGNORE)
    same = valid & (source == destination)
    return same & (source == 0), same & (source > 0), valid & (source != destination)


def affinity_loss(affinity: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor,
                  neg: torch.Tensor) -> torch.Tensor:
    """IRN's boundary loss from path affinities and pair labels, all (N, D, h', w')."""
    def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum() / (mask.sum() + EPS)

    positive = -torch.log(affinity + EPS)
    negative = -torch.log(1 + EPS - affinity)
    return (masked_mean(positive, bg_pos) / 2 + masked_mean(positive, fg_pos) / 2
            + masked_mean(negative, neg)) / 2


class AffinityDataset(Dataset):
    """Crops with relation labels as the reference's VOC12AffinityDataset, by (seed, epoch, index):
    ``image`` uint8 (3, S, S), ``box`` int64 (4,), ``label`` uint8 (S, S) (255 in the padding)."""

    def __init__(self, dataset: SegmentationDataset, ids: list[str], run: RunDir, refine: RefineConfig,
                 seed: int):
        self.dataset, self.ids, self.run = dataset, ids, run
        self.crop_size, self.seed = refine.irn_crop_size, seed
        self.scale_range = tuple(refine.irn_image_scale * s for s in refine.irn_scale_range)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        rng = np.random.default_rng([self.seed, epoch, index])
        image_id = self.ids[index]
        scale = rng.uniform(*self.scale_range)
        path = self.run.relation_labels / f"{image_id}.png"
        if not path.is_file():
            raise SfcError("relation label missing", path=path,
                           fix="run the refine stage again: it makes the missing relation labels first")
        label = np.asarray(Image.open(path))
        image, label, box = augment(self.dataset.read_image(image_id), label, rng, self.crop_size, scale,
                                    mask_fill=IGNORE, normalise=False)
        return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()), "box": torch.from_numpy(box),
                "label": torch.from_numpy(label)}


def initial_backbone(run: RunDir, cfg: Config) -> Backbone:
    """IRN's frozen backbone: ``refine.irn_backbone_weights`` "imagenet", a path, or "sfc" (the
    run's own, for backbones trained from scratch)."""
    refine = cfg.refine
    if refine.irn_backbone_weights != "sfc":
        return build_backbone(refine.irn_backbone, refine.irn_backbone_weights, "refine.irn_backbone_weights")
    if refine.irn_backbone != cfg.model.backbone:
        raise SfcError(f"refine.irn_backbone_weights=sfc needs refine.irn_backbone to be the run's "
                       f"backbone {cfg.model.backbone!r}, not {refine.irn_backbone!r}", path=run.config_json,
                       fix=f"pass --set refine.irn_backbone={cfg.model.backbone}, or "
                           "--set refine.irn_backbone_weights=imagenet (or a .pth path)")
    path = run.inference_checkpoint
    return load_model(path, engine.load_checkpoint(path), cfg.model, run.class_names()).backbone


def load_boundary_net(run: RunDir, cfg: Config, device: torch.device) -> BoundaryNet:
    checkpoint = engine.load_checkpoint(run.irn_checkpoint, device)
    engine.check_compatible(checkpoint, {"backbone": cfg.refine.irn_backbone, "architecture": ARCHITECTURE},
                            run.irn_checkpoint)
    net = BoundaryNet(build_backbone(cfg.refine.irn_backbone, "none"))
    engine.check_shapes(checkpoint, net, run.irn_checkpoint, cfg.to_dict(), ("refine.irn_backbone",))
    net.load_state_dict(checkpoint["model"])
    return net.to(device).eval()


def train_irn(run: RunDir, cfg: Config, dataset: SegmentationDataset, ids: list[str],
              device: torch.device, stop_after: int | None = None) -> None:
    """Train the boundary network on the relation labels of ``ids`` into ``run.irn_checkpoint``,
    resuming from it; ``stop_after`` steps, as if interrupted."""
    refine, seed = cfg.refine, cfg.runtime.seed
    data = AffinityDataset(dataset, ids, run, refine, seed)
    batch_size = refine.irn_batch_size
    steps_per_epoch = len(data) // batch_size
    if steps_per_epoch == 0:
        raise SfcError(f"{len(data)} training images make no batch of {batch_size}", path=run.config_json,
                       fix=f"set refine.irn_batch_size <= {len(data)}")
    max_steps = steps_per_epoch * refine.irn_epochs

    net = BoundaryNet(initial_backbone(run, cfg)).to(device)
    optimizer = engine.make_optimizer("sgd", [{"params": net.head_parameters(), "lr": refine.irn_lr}],
                                      refine.irn_momentum, refine.irn_weight_decay)
    schedule = engine.make_schedule(optimizer, "poly", max_steps, refine.irn_poly_power)
    state = engine.TrainState(net, optimizer, schedule, engine.make_grad_scaler(device, cfg.runtime.amp),
                              {"backbone": refine.irn_backbone, "architecture": ARCHITECTURE,
                               "max_steps": max_steps}, cfg.to_dict(), builds=("refine.irn_backbone",))
    state.resume(run.irn_checkpoint, engine.DistInfo(),
                 fix="delete it to train IRN again, or use the configuration it was made with")
    if state.step >= max_steps:
        return
    net.train()
    plan = loop.Plan(max_steps, refine.irn_log_every, refine.irn_checkpoint_every, cfg.runtime.checkpoint_minutes)
    batches = loop.batches(data, partial(loop.epoch_keys, len(data), seed, dist=engine.DistInfo()),
                           batch_size, steps_per_epoch,
                           plan.steps(state.step, stop_after), engine.loader_workers(cfg.runtime.num_workers, device),
                           device)
    step = partial(irn_step, state, PathIndex.build(refine.irn_radius), device, cfg.runtime.amp)
    with engine.MetricsLogger(run.irn_metrics_jsonl, resume_step=state.step) as logger:
        for output in loop.fit(state, batches, step, plan, run.irn_checkpoint, engine.DistInfo(),
                               desc="irn: train boundary net"):
            if plan.logs(state.step):
                logger.log(state.step, {"irn/loss": output["loss"].item(), "irn/lr": schedule.get_last_lr()[0]})


def irn_step(state: engine.TrainState, index: PathIndex, device: torch.device, amp: bool,
             batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    net = state.model
    images = normalize_crops(batch["image"], batch["box"], device)
    labels = batch["label"].to(device, non_blocking=True)
    with engine.autocast(device, amp):
        logits = net(images)
    edge = torch.sigmoid(logits.float())
    labels = F.interpolate(labels[:, None].float(), size=edge.shape[-2:], mode="nearest")[:, 0].long()
    loss = affinity_loss(edge_to_affinity(edge, index), *affinity_targets(labels, index))
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)          # no gradient clipping, as the reference
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.detach()}
